"""ISLES 2022 and ATLAS R2.0 readers: BIDS files found by their entities.

Both datasets are BIDS-like. Files are found by globbing NIfTI files
(``.nii``/``.nii.gz``, any case) under the root and parsing the file name into entities (``sub``, ``ses``, ``space``,
``label``, ``desc``) and a suffix (``dwi``, ``adc``, ``FLAIR``, ``msk``,
``T1w``, ``mask``), compared case-insensitively, so one reader handles

* the flat example of the ISLES'22 repository (``rawdata/sub-X/ses-0001/
  sub-X_ses-0001_dwi.nii.gz``, ``derivatives/sub-X/ses-0001/…_msk.nii.gz``,
  lower-case ``_flair``),
* the official ISLES'22 release (``ISLES-2022/sub-X/ses-0001/dwi/…_dwi.nii.gz``,
  ``…/anat/…_FLAIR.nii.gz``, ``ISLES-2022/derivatives/sub-X/ses-0001/…_msk.nii.gz``),
* ATLAS R2.0 (``ATLAS_2/Training/RNNN/sub-rNNNsMMM/ses-1/anat/
  sub-rNNNsMMM_ses-1_space-MNI152NLin2009aSym_T1w.nii.gz`` with
  ``…_label-L_desc-T1lesion_mask.nii.gz`` beside it).

pybids would do the indexing but is heavy and not a dependency; the few lines
of entity parsing below are ours. FLAIR in ISLES'22 is acquired in its own
space; when asked for, it is resampled onto the DWI grid with
``nibabel.processing.resample_from_to`` (linear), using both affines.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seglib.data.case import Case
from seglib.data.channels import DEFAULT_CHANNELS
from seglib.data.integrity import binary_mask, check_same_grid, load_nifti, read_header
from seglib.registry import look_up

log = logging.getLogger(__name__)

_NII = re.compile(r"^(?P<stem>.+?)\.nii(\.gz)?$", re.IGNORECASE)


@dataclass(frozen=True)
class _Spec:
    """Which file plays which role: a suffix plus required entities."""

    suffix: str
    entities: tuple[tuple[str, str], ...] = ()
    forbid: tuple[str, ...] = ()

    def matches(self, suffix: str, ents: dict[str, str]) -> bool:
        if suffix != self.suffix:
            return False
        if any(ents.get(k) != v for k, v in self.entities):
            return False
        return not any(k in ents for k in self.forbid)


@dataclass(frozen=True)
class _Layout:
    name: str
    channels: dict[str, _Spec]
    mask: _Spec
    default_channels: tuple[str, ...]
    reference: str  # the channel whose grid every case uses
    own_space: frozenset[str]  # channels resampled onto the reference grid


ISLES22 = _Layout(
    name="isles22",
    channels={"dwi": _Spec("dwi"), "adc": _Spec("adc"), "flair": _Spec("flair")},
    mask=_Spec("msk"),
    default_channels=DEFAULT_CHANNELS["isles22"],
    reference="dwi",
    own_space=frozenset({"flair"}),
)

ATLAS2 = _Layout(
    name="atlas2",
    channels={"t1w": _Spec("t1w", forbid=("label", "desc"))},
    mask=_Spec("mask", entities=(("label", "l"), ("desc", "t1lesion"))),
    default_channels=DEFAULT_CHANNELS["atlas2"],
    reference="t1w",
    own_space=frozenset(),
)


def parse_bids_name(name: str) -> tuple[dict[str, str], str] | None:
    """``"sub-a_ses-1_space-X_T1w.nii.gz"`` → ``({"sub": "a", "ses": "1", "space": "x"}, "t1w")``.

    Keys, values and suffix are lower-cased except ``sub`` and ``ses`` values,
    which keep their spelling (they become case ids). ``None`` when the name is
    not a NIfTI file or has no ``sub-`` entity.
    """
    m = _NII.match(name)
    if not m:
        return None
    parts = m.group("stem").split("_")
    ents: dict[str, str] = {}
    for part in parts[:-1]:
        key, sep, value = part.partition("-")
        if not sep:
            return None
        key = key.lower()
        ents[key] = value if key in ("sub", "ses") else value.lower()
    if "sub" not in ents or "-" in parts[-1]:
        return None
    return ents, parts[-1].lower()


def _resolve_root(root: Path, layout: _Layout) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{layout.name} root {root} is not a folder.")
    if layout is ISLES22 and (root / "ISLES-2022").is_dir():
        return root / "ISLES-2022"
    if layout is ATLAS2:
        if (root / "ATLAS_2").is_dir():
            root = root / "ATLAS_2"
        if (root / "Training").is_dir():
            return root / "Training"
    return root


def _index(root: Path, layout: _Layout) -> dict[tuple[str, str | None], dict[str, list[Path]]]:
    """Group files by (subject, session) and role."""
    groups: dict[tuple[str, str | None], dict[str, list[Path]]] = {}
    for path in sorted(root.rglob("*")):
        if not _NII.match(path.name) or not path.is_file():
            continue
        parsed = parse_bids_name(path.name)
        if parsed is None:
            continue
        ents, suffix = parsed
        role = None
        if layout.mask.matches(suffix, ents):
            role = "mask"
        else:
            for name, spec in layout.channels.items():
                if spec.matches(suffix, ents):
                    role = name
                    break
        if role is None:
            continue
        key = (ents["sub"], ents.get("ses"))
        groups.setdefault(key, {}).setdefault(role, []).append(path)
    return groups


def _one(files: dict[str, list[Path]], role: str, case_id: str) -> Path | None:
    found = files.get(role, [])
    if len(found) > 1:
        raise ValueError(
            f"Case {case_id}: {len(found)} files for {role!r}: "
            f"{', '.join(str(p) for p in found)}; expected one."
        )
    return found[0] if found else None


def _resample_onto(path: Path, ref_shape, ref_affine) -> tuple[np.ndarray, np.ndarray]:
    """Linear resampling of ``path`` onto the reference grid (nibabel.processing)."""
    import nibabel as nib
    from nibabel.processing import resample_from_to

    data, affine, _ = load_nifti(path)
    src = nib.Nifti1Image(data, affine)
    out = resample_from_to(src, (tuple(ref_shape), ref_affine), order=1, mode="constant", cval=0.0)
    return np.asarray(out.dataobj, dtype=np.float32), affine


def read_bids(root: Path, layout: _Layout, channels=None, ids=None) -> list[Case]:
    """Read every subject under ``root`` for ``layout`` (``ISLES22`` or ``ATLAS2``)."""
    chans = [c.lower() for c in (channels or layout.default_channels)]
    if not chans:
        raise ValueError(f"{layout.name}: channels must name at least one of {sorted(layout.channels)}.")
    for c in chans:
        look_up(c, layout.channels, f"{layout.name} channel")
    base = _resolve_root(root, layout)
    groups = _index(base, layout)
    sessions: dict[str, int] = {}
    for sub, _ in groups:
        sessions[sub] = sessions.get(sub, 0) + 1

    cases: list[Case] = []
    unmasked: list[str] = []
    skipped: list[str] = []
    for (sub, ses), files in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
        case_id = f"sub-{sub}" if sessions[sub] == 1 or ses is None else f"sub-{sub}_ses-{ses}"
        if ids is not None and case_id not in ids:
            continue
        ref_path = _one(files, layout.reference, case_id)
        paths = {c: _one(files, c, case_id) for c in chans}
        missing = [c for c, p in paths.items() if p is None]
        if ref_path is None and layout.reference not in missing:
            missing.append(layout.reference)
        if missing:
            skipped.append(f"{case_id} (no {', '.join(missing)})")
            continue
        ref_shape, ref_affine = read_header(ref_path)
        volumes, affines, resampled = [], {}, []
        spacing = None
        for c in chans:
            p = paths[c]
            if c in layout.own_space and c != layout.reference:
                vol, aff = _resample_onto(p, ref_shape, ref_affine)
                resampled.append(c)
            else:
                vol, aff, zooms = load_nifti(p)
                check_same_grid(p, vol.shape, aff, ref_path, ref_shape, ref_affine)
                spacing = spacing or zooms
            volumes.append(vol)
            affines[c] = aff
        if spacing is None:  # only own-space channels asked for: the reference grid's spacing
            spacing = tuple(float(s) for s in np.sqrt((ref_affine[:3, :3] ** 2).sum(axis=0)))
        mask_path = _one(files, "mask", case_id)
        mask = None
        if mask_path is not None:
            raw, mask_aff, _ = load_nifti(mask_path, kind="mask")
            mask = binary_mask(raw, mask_path)
            affines["mask"] = mask_aff
        else:
            unmasked.append(case_id)
        cases.append(
            Case(
                id=case_id,
                image=np.stack(volumes).astype(np.float32, copy=False),
                mask=mask,
                spacing=tuple(float(s) for s in spacing),
                paths={**{c: paths[c] for c in chans}, **({"mask": mask_path} if mask_path else {})},
                affine=ref_affine,
                meta={
                    "dataset": layout.name,
                    "channels": chans,
                    "session": ses,
                    "affines": affines,
                    "resampled": resampled,
                    "reference": str(ref_path),
                },
            )
        )
    if skipped:
        log.warning(
            "%s: skipped %d case(s) lacking a requested channel: %s",
            layout.name, len(skipped), "; ".join(skipped),
        )
    if unmasked:
        log.warning(
            "%s: %d case(s) have no lesion mask (returned with mask=None, usable for "
            "prediction only): %s", layout.name, len(unmasked), ", ".join(unmasked),
        )
    if not cases and not skipped:
        raise ValueError(
            f"No {layout.name} cases found under {base}: expected BIDS files such as "
            f"sub-X_ses-Y_{layout.channels[layout.reference].suffix}.nii.gz."
        )
    return cases


def read_isles22(root: Path, channels=None, ids=None) -> list[Case]:
    """ISLES'22 (flat example or nested release). Channels from {dwi, adc, flair}; default dwi+adc."""
    return read_bids(root, ISLES22, channels, ids)


def read_atlas2(root: Path, channels=None, ids=None) -> list[Case]:
    """ATLAS R2.0 (root = ``ATLAS_2``, its ``Training`` folder or their parent). Channel: t1w."""
    return read_bids(root, ATLAS2, channels, ids)
