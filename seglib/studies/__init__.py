"""The studies: one package per study (``stroke``, ``prostate``, ``brain``: ``data`` for what a run trains on,
``report`` for its tables and claims), what they share (``pipeline``: data and one run; ``collect``: the grid;
``slices2d``: the 2D studies' slices) and the notebook's handle on its study (``session``)."""
