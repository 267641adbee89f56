"""Study B: prostate gland (PROSTATEx T2), 2D U-Net; BCE against Tversky losses over α.

``data``: slices, datasets and evaluation (what a run trains on); ``report``: tables, claims, figures' inputs.
"""

from seglib.studies.prostate.data import *  # noqa: F401,F403
from seglib.studies.prostate.report import *  # noqa: F401,F403
