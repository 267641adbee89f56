"""Study C: brain lower-grade glioma (Kaggle LGG), 2D U-Net and U-Net++; losses and optimisers.

``data``: preprocessing, datasets and evaluation (what a run trains on); ``report``: tables and claims.
"""

from seglib.studies.brain.data import *  # noqa: F401,F403
from seglib.studies.brain.report import *  # noqa: F401,F403
