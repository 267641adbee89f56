"""Study parameters: the dataclasses (``schema``), their validation against the annotations (``validate``),
the layered resolution of a study's configuration with every check (``resolve``) and one grid cell, typed
(``cell``: :class:`RunConfig`). Only the standard library and PyYAML are imported, so validation is fast
and happens before papermill starts a kernel."""

from seglib.config.cell import RunConfig  # noqa: F401
from seglib.config.checks import *  # noqa: F401,F403
from seglib.config.resolve import *  # noqa: F401,F403
from seglib.config.schema import *  # noqa: F401,F403
from seglib.config.validate import (  # noqa: F401
    ConfigError,
    as_dict,
    build_section,
    deep_merge,
    parse_assignment,
)
