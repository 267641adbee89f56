"""Sampling of training data: study A's patch samplers (``patches``) and patch dataset (``dataset``),
and the 2D studies' slice weights (``slices``)."""

from seglib.data.sampling.dataset import *  # noqa: F401,F403
from seglib.data.sampling.patches import *  # noqa: F401,F403
from seglib.data.sampling.slices import *  # noqa: F401,F403
