"""The one record every dataset reader returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class Case:
    """One patient / subject / volume.

    Attributes:
        id: the dataset's own identifier (``sub-strokecase0009``, ``ProstateX-0000``,
            ``TCGA_CS_4942_19970222``).
        image: float32 array, channels first: ``(C, X, Y, Z)`` for volumes (NIfTI
            voxel order), ``(C, H, W, S)`` for LGG (slices stacked last).
        mask: uint8 array in {0, 1}, ``image.shape[1:]``, or ``None`` when the case
            has no ground truth (usable for prediction only).
        spacing: voxel size in millimetres, one per spatial axis.
        paths: the source files, by role (``{"dwi": Path, "adc": Path, "mask": Path}``).
        affine: 4x4 voxel-to-world matrix of the image grid (NIfTI), or None.
        meta: anything else a reader knows (slice numbers, original shape, ...).
    """

    id: str
    image: np.ndarray
    mask: np.ndarray | None
    spacing: tuple[float, ...]
    paths: dict[str, Path] = field(default_factory=dict)
    affine: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)
