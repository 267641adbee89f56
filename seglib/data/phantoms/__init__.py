"""Synthetic phantoms written in each dataset's own on-disk layout (``writers``) from shapes drawn in
``shapes``, so the real readers read them."""

from seglib.data.phantoms.writers import *  # noqa: F401,F403
