"""Figures in one house style (``style``): curves (``curves``), bars and distributions (``bars``), image
overlays and contours (``images``), and the A2/A5 measurement figures (``bench``). Every figure used twice."""

from seglib.plots.bars import *  # noqa: F401,F403
from seglib.plots.bench import *  # noqa: F401,F403
from seglib.plots.curves import *  # noqa: F401,F403
from seglib.plots.images import *  # noqa: F401,F403
from seglib.plots.style import *  # noqa: F401,F403
