"""Data: the dataset readers (``readers``, one entry point ``load_cases`` returning ``Case`` records), the
phantoms in each dataset's layout (``phantoms``), sampling (``sampling``), preprocessing, augmentation,
splits, integrity checks, the channels table and the array cache.

>>> cases = load_cases("isles22", "../shared/data/isles22")      # doctest: +SKIP
>>> trainable = with_masks(cases)                                 # doctest: +SKIP

Readers (a plain registry, ``READERS``): ``isles22`` and ``atlas2`` (BIDS, see
``seglib.data.readers.isles``), ``prostatex`` (``seglib.data.readers.prostatex``) ``lgg``
(``seglib.data.readers.lgg``) and ``nnunet`` (any dataset in the nnU-Net raw layout, by its ``dataset.json``:
``seglib.data.readers.nnunet``). Importing this package reads nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from seglib.data.case import Case
from seglib.data.channels import CHANNELS, DEFAULT_CHANNELS, channels_of
from seglib.registry import look_up

log = logging.getLogger(__name__)


def _isles22(root, channels=None, ids=None):
    from seglib.data.readers.isles import read_isles22

    return read_isles22(root, channels, ids)


def _atlas2(root, channels=None, ids=None):
    from seglib.data.readers.isles import read_atlas2

    return read_atlas2(root, channels, ids)


def _prostatex(root, channels=None, ids=None):
    from seglib.data.readers.prostatex import read_prostatex

    return read_prostatex(root, channels, ids)


def _lgg(root, channels=None, ids=None):
    from seglib.data.readers.lgg import read_lgg

    return read_lgg(root, channels, ids)


def _nnunet(root, channels=None, ids=None, foreground=None):
    from seglib.data.readers.nnunet import read_nnunet

    return read_nnunet(root, channels, ids, foreground)


#: dataset name → reader(root, channels, ids) -> list[Case]
READERS: dict[str, Callable[..., list[Case]]] = {
    "isles22": _isles22,
    "atlas2": _atlas2,
    "prostatex": _prostatex,
    "lgg": _lgg,
    "nnunet": _nnunet,
}



def load_cases(
    dataset: str,
    root: str | Path,
    channels: Sequence[str] | None = None,
    *,
    ids: Iterable[str] | None = None,
    verify: bool = True,
    foreground: int | str | None = None,
) -> list[Case]:
    """Read every case of ``dataset`` under ``root``, sorted by id.

    Args:
        dataset: one of ``READERS`` (``"isles22"``, ``"atlas2"``, ``"prostatex"``, ``"lgg"``).
        root: the dataset folder in its own on-disk layout (see each reader).
        channels: input channels, in order (``None``: the dataset's default,
            :data:`seglib.data.channels.DEFAULT_CHANNELS`).
        ids: read only these case ids (others are not opened).
        verify: run ``verify_integrity`` on the result (cheap; on by default).
        foreground: ``nnunet`` only: the label (name or value) that is foreground; ``None``: every non-zero label.

    Cases without ground truth come back with ``mask=None`` and a logged
    warning; use ``with_masks`` to keep the trainable ones.
    """
    reader = look_up(dataset, READERS, "dataset")
    wanted = None if ids is None else set(ids)
    chans = list(channels) if channels is not None else None
    if foreground is not None and dataset != "nnunet":
        raise ValueError(f"foreground = {foreground!r}: only dataset 'nnunet' has several labels to choose from, "
                         f"not {dataset!r}; leave it out (null).")
    cases = reader(Path(root), chans, wanted, foreground) if dataset == "nnunet" else reader(Path(root), chans, wanted)
    if wanted is not None:
        missing = sorted(wanted - {c.id for c in cases})
        if missing:
            raise ValueError(f"{dataset}: ids not found under {root}: {', '.join(missing)}.")
    if verify:
        from seglib.data.integrity import verify_integrity

        verify_integrity(cases)
    log.info("%s: read %d case(s) from %s", dataset, len(cases), root)
    return sorted(cases, key=lambda c: c.id)


def with_masks(cases: Iterable[Case]) -> list[Case]:
    """The cases that have a mask; logs a warning naming the ones skipped."""
    cases = list(cases)
    keep = [c for c in cases if c.mask is not None]
    skipped = [c.id for c in cases if c.mask is None]
    if skipped:
        log.warning("Skipping %d case(s) without a mask: %s", len(skipped), ", ".join(skipped))
    return keep


def verify_integrity(cases: Iterable[Case]) -> None:
    """See ``seglib.data.integrity.verify_integrity``."""
    from seglib.data.integrity import verify_integrity as _verify

    _verify(cases)


__all__ = ["CHANNELS", "DEFAULT_CHANNELS", "Case", "channels_of", "READERS", "load_cases", "verify_integrity", "with_masks"]
