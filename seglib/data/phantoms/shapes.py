"""Synthetic anatomy for the phantoms: tissue classes, irregular lesions, bias, noise.

Everything here is ours (no library draws MR-like phantoms with lesion masks);
``scipy.ndimage.gaussian_filter`` does the smoothing. Each generator takes an
``np.random.Generator`` and returns float intensity maps (one per modality)
plus a boolean lesion / organ mask, on a voxel grid ``shape``. The design goal
is a segmentation task that a small U-Net learns well but not perfectly:

* tissue classes with their own means and a smooth texture,
* a multiplicative smooth bias field and additive noise,
* targets whose contrast varies per lesion and fades at the border (partial
  volume), so target and surrounding tissue intensities overlap,
* irregular shapes: an ellipsoid with a noise-perturbed border, holed by
  thresholded smooth noise; sizes from a few voxels to a large fraction.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter


def smooth_noise(rng: np.random.Generator, shape, sigma) -> np.ndarray:
    """Gaussian-smoothed white noise scaled to unit standard deviation."""
    g = gaussian_filter(rng.standard_normal(shape), sigma, mode="reflect")
    return g / (g.std() + 1e-12)


def norm_coords(shape) -> list[np.ndarray]:
    """Open-grid coordinates in [-1, 1] along each axis (voxel centres)."""
    out = []
    for ax, n in enumerate(shape):
        c = np.linspace(-1.0, 1.0, n) if n > 1 else np.zeros(1)
        sh = [1] * len(shape)
        sh[ax] = n
        out.append(c.reshape(sh))
    return out


def bias_field(rng: np.random.Generator, shape, strength: float) -> np.ndarray:
    """exp(quadratic polynomial) with random coefficients, std of its log ≈ ``strength``."""
    if strength <= 0:
        return np.ones(shape, dtype=np.float32)
    x = norm_coords(shape)
    terms = list(x) + [a * b for i, a in enumerate(x) for b in x[i:]]
    log_b = sum(rng.normal() * t for t in terms)
    log_b = np.broadcast_to(log_b, shape)
    log_b = (log_b - log_b.mean()) / (log_b.std() + 1e-12) * strength
    return np.exp(log_b).astype(np.float32)


def irregular_blob(
    rng: np.random.Generator,
    shape,
    centre,
    radii,
    roughness: float = 0.35,
    holes: float = 0.15,
) -> np.ndarray:
    """Boolean mask of an irregular blob: a perturbed ellipsoid with holes.

    The ellipsoid's normalised radius ``d`` is perturbed by ``roughness`` times
    smooth noise; inside it, voxels where a second smooth noise falls in its
    lowest ``holes`` quantile are removed. Computed in a box around the blob.
    Never empty: falls back to the plain ellipsoid, then to the centre voxel.
    """
    shape = tuple(int(s) for s in shape)
    centre = np.asarray(centre, float)
    radii = np.maximum(np.asarray(radii, float), 0.5)
    lo = np.maximum(np.floor(centre - 1.5 * radii - 1), 0).astype(int)
    hi = np.minimum(np.ceil(centre + 1.5 * radii + 2), shape).astype(int)
    box = tuple(int(h - l) for l, h in zip(lo, hi))
    grids = np.ogrid[tuple(slice(int(l), int(h)) for l, h in zip(lo, hi))]
    d = np.sqrt(sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radii)))
    sig = np.clip(0.5 * radii, 0.7, None)
    inside = d + roughness * smooth_noise(rng, box, sig) < 1.0
    if holes > 0 and inside.sum() > 8:
        n2 = smooth_noise(rng, box, np.clip(0.3 * radii, 0.7, None))
        inside &= n2 > np.quantile(n2[inside], holes)
    if not inside.any():
        inside = d < 1.0
    out = np.zeros(shape, dtype=bool)
    out[tuple(slice(int(l), int(h)) for l, h in zip(lo, hi))] = inside
    if not out.any():
        out[tuple(np.clip(np.round(centre).astype(int), 0, np.array(shape) - 1))] = True
    return out


def soft_weight(mask: np.ndarray, sigma: float = 0.8, floor: float = 0.7) -> np.ndarray:
    """Partial-volume weight of a mask: smoothed, at least ``floor`` inside it."""
    w = gaussian_filter(mask.astype(np.float32), sigma)
    return np.maximum(w, floor * mask).astype(np.float32)


def add_noise(rng: np.random.Generator, img: np.ndarray, sigma: float, magnitude: bool) -> np.ndarray:
    """Gaussian noise; ``magnitude=True`` gives Rician noise (|signal + complex noise|)."""
    if sigma <= 0:
        return img
    if magnitude:
        re = img + rng.normal(0.0, sigma, img.shape)
        im = rng.normal(0.0, sigma, img.shape)
        return np.sqrt(re**2 + im**2).astype(np.float32)
    return (img + rng.normal(0.0, sigma, img.shape)).astype(np.float32)


# ---------------------------------------------------------------- stroke brain
# tissue means per modality: background, CSF, grey matter, white matter;
# "lesion" is the relative change at full lesion weight (acute stroke: bright
# on DWI, dark on ADC, slightly bright on FLAIR; chronic (ATLAS): dark on T1w).
BRAIN_TISSUE = {
    "dwi": {"means": (0.0, 0.25, 1.0, 0.85), "lesion": 0.9, "scale": 500.0, "magnitude": True},
    "adc": {"means": (0.0, 3.0, 0.9, 0.75), "lesion": -0.5, "scale": 1.0, "magnitude": False},
    "flair": {"means": (0.0, 0.15, 1.0, 0.8), "lesion": 0.35, "scale": 400.0, "magnitude": True},
    "t1w": {"means": (0.0, 0.2, 0.6, 1.0), "lesion": -0.55, "scale": 100.0, "magnitude": True},
}


def brain_labels(rng: np.random.Generator, shape) -> tuple[np.ndarray, np.ndarray]:
    """Labels 0 background, 1 CSF, 2 grey matter, 3 white matter; and the normalised brain radius."""
    x, y, z = norm_coords(shape)
    radii = np.array([0.8, 0.88, 0.76]) * rng.uniform(0.93, 1.05, 3)
    d = np.sqrt((x / radii[0]) ** 2 + (y / radii[1]) ** 2 + (z / radii[2]) ** 2)
    d = d + 0.04 * smooth_noise(rng, shape, max(1.0, min(shape) / 12))
    labels = np.zeros(shape, dtype=np.uint8)
    labels[d < 1.0] = 1  # outer CSF rim
    cortex = 0.9 + 0.04 * smooth_noise(rng, shape, max(1.0, min(shape) / 16))
    labels[d < 0.93] = 2
    labels[d < cortex - 0.13] = 3
    for side in (-1, 1):  # lateral ventricles
        v = np.sqrt(((x - side * 0.14) / 0.08) ** 2 + ((y - 0.05) / 0.3) ** 2 + ((z - 0.12) / 0.14) ** 2)
        labels[v < 1.0] = 1
    return labels, d


def stroke_volumes(rng: np.random.Generator, shape, modalities, *, contrast=1.0, noise=0.08,
                   bias=0.15, lesions=(2, 5), lesion_radius=(1.8, 8.0)):
    """Stroke-like brain: intensity maps per modality (float32) and the lesion mask (bool).

    ``lesions``: (min, max) lesions per case; ``lesion_radius``: (min, max)
    radius in voxels at 48³, scaled with the grid, drawn log-uniformly.
    """
    labels, d = brain_labels(rng, shape)
    tissue = (labels >= 2) & (d < 0.82)
    scale = min(shape) / 48.0
    n_les = int(rng.integers(lesions[0], lesions[1] + 1))
    candidates = np.argwhere(tissue)
    lesion = np.zeros(shape, dtype=bool)
    weight = np.zeros(shape, dtype=np.float32)
    log_r = np.log(np.asarray(lesion_radius, float) * scale)
    for _ in range(n_les):
        c = candidates[rng.integers(len(candidates))] if len(candidates) else np.array(shape) // 2
        r = np.exp(rng.uniform(*log_r)) * rng.uniform(0.7, 1.3, 3)
        blob = irregular_blob(rng, shape, c, r) & (labels >= 2)
        lesion |= blob
        weight = np.maximum(weight, soft_weight(blob) * rng.uniform(0.5, 1.1))
    weight *= labels >= 1
    texture = smooth_noise(rng, shape, 1.5)
    field = bias_field(rng, shape, bias)
    out = {}
    for m in modalities:
        t = BRAIN_TISSUE[m]
        img = np.asarray(t["means"], np.float32)[labels] * (1 + 0.05 * texture)
        img = img * (1 + t["lesion"] * contrast * weight)
        if t["magnitude"]:
            img = img * field
        ref = t["means"][3] if m != "adc" else t["means"][2]
        img = add_noise(rng, img, noise * ref, t["magnitude"])
        out[m] = (img * t["scale"]).astype(np.float32)
    return out, lesion


# ---------------------------------------------------------------- prostate
def prostate_volume(rng: np.random.Generator, shape, *, contrast=1.0, noise=0.08, bias=0.25):
    """Axial pelvis T2 stack (X, Y, Z) with an irregular central gland. Returns (image, gland)."""
    u, v, z = norm_coords(shape)
    base = np.zeros(shape, np.float32)
    body = (u / 0.93) ** 2 + (v / 0.72) ** 2 < 1.0
    body = np.broadcast_to(body, shape)
    tex = smooth_noise(rng, shape, (2.0, 2.0, 0.7))
    base[body] = 0.7  # pelvic fat / soft tissue
    fat_rim = body & ((u / 0.82) ** 2 + (v / 0.6) ** 2 > 1.0)
    base[fat_rim] = 0.9
    for side in (-1, 1):
        muscle = ((u - side * 0.36) / 0.1) ** 2 + ((v - 0.02) / 0.26) ** 2 < 1.0
        base[np.broadcast_to(muscle, shape)] = 0.3
        bone = ((u - side * 0.62) / 0.12) ** 2 + (v / 0.2) ** 2 < 1.0
        base[np.broadcast_to(bone, shape)] = 0.5
    bladder = ((u / 0.26) ** 2 + ((v + 0.38) / 0.2) ** 2 < 1.0) & (z > 0.2)
    base[bladder] = 1.0
    rectum_wall = (u / 0.15) ** 2 + ((v - 0.42) / 0.12) ** 2 < 1.0
    base[np.broadcast_to(rectum_wall, shape)] = 0.35
    rectum_lumen = (u / 0.08) ** 2 + ((v - 0.42) / 0.06) ** 2 < 1.0
    base[np.broadcast_to(rectum_lumen, shape)] = 0.12
    img = base * (1 + 0.08 * tex)

    X, Y, Z = shape
    cz = (Z - 1) / 2 + rng.uniform(-0.1, 0.1) * Z
    centre = ((X - 1) / 2 + rng.uniform(-0.03, 0.03) * X, (Y - 1) / 2 + rng.uniform(0.0, 0.06) * Y, cz)
    radii = (rng.uniform(0.2, 0.29) * X / 2, rng.uniform(0.17, 0.24) * Y / 2, rng.uniform(0.28, 0.38) * Z)
    gland = irregular_blob(rng, shape, centre, radii, roughness=0.22, holes=0.0)
    from scipy.ndimage import binary_dilation

    capsule = binary_dilation(gland, np.ones((3, 3, 1), bool)) & ~gland
    pz = gland & np.broadcast_to(v > (centre[1] / ((Y - 1) / 2) - 1) + 0.3 * radii[1] / (Y / 2), shape)
    surround = 0.66
    nodules = smooth_noise(rng, shape, (1.5, 1.5, 0.8))
    gl = np.where(pz, surround + 0.14 * contrast, surround - 0.18 * contrast) + 0.07 * nodules
    img = np.where(gland, gl * (1 + 0.05 * tex), img)
    img = np.where(capsule, img * (1 - 0.35 * contrast) + 0.35 * contrast * 0.42, img)
    img = img * bias_field(rng, shape, bias)
    img = add_noise(rng, img.astype(np.float32), noise * 0.66, magnitude=True)
    return (img * 1000.0).astype(np.float32), gland


# ---------------------------------------------------------------- LGG
# (pre-contrast, FLAIR, post-contrast) means for background, CSF, GM, WM, scalp
LGG_TISSUE = np.array(
    [[0, 40, 95, 120, 170], [0, 30, 110, 95, 100], [0, 45, 100, 125, 185]], dtype=np.float32
)
LGG_TUMOUR = np.array([-0.15, 0.5, 0.1], dtype=np.float32)  # relative change at full weight


def lgg_volume(rng: np.random.Generator, shape, *, contrast=1.0, noise=0.06, bias=0.15,
               tumour_radius=(0.12, 0.32)):
    """Head slices (H, W, S) → image (3, H, W, S) in 0..255 and a tumour mask present in some slices."""
    H, W, S = shape
    u, v, zn = norm_coords(shape)
    prof = np.sqrt(np.clip(1 - (zn * 0.92) ** 2, 0.12, 1))  # smaller head at the ends
    d = np.sqrt((u / (0.78 * prof)) ** 2 + (v / (0.9 * prof)) ** 2)
    d = d + 0.03 * smooth_noise(rng, shape, (3, 3, 1))
    labels = np.zeros(shape, np.uint8)
    labels[d < 1.0] = 4  # scalp
    labels[d < 0.9] = 1  # CSF rim
    labels[d < 0.86] = 2  # cortex
    labels[d < 0.68 + 0.05 * smooth_noise(rng, shape, (2, 2, 1))] = 3
    for side in (-1, 1):
        vent = ((u - side * 0.13) / 0.07) ** 2 + ((v + 0.05) / 0.25) ** 2 < prof ** 2 * (np.abs(zn) < 0.4)
        labels[vent & (labels > 0)] = 1
    brain = (labels >= 1) & (labels <= 3) & (d < 0.8)
    cz = rng.uniform(0.3, 0.7) * (S - 1)
    rz = rng.uniform(0.12, 0.28) * S
    cand = np.argwhere(brain[..., int(round(cz))])
    cy, cx = cand[rng.integers(len(cand))] if len(cand) else (H // 2, W // 2)
    rr = rng.uniform(*tumour_radius) * min(H, W) / 2
    tumour = irregular_blob(rng, shape, (cy, cx, cz), (rr * rng.uniform(0.7, 1.3), rr * rng.uniform(0.7, 1.3), rz))
    tumour &= (labels >= 1) & (labels <= 3)
    w = soft_weight(tumour, sigma=(1.0, 1.0, 0.5)) * ((labels >= 1) & (labels <= 3))
    w *= (1 + 0.25 * smooth_noise(rng, shape, (2, 2, 1))).clip(0.3, None)
    tex = smooth_noise(rng, shape, (1.5, 1.5, 0.7))
    field = bias_field(rng, shape, bias)
    chans = []
    for k in range(3):
        img = LGG_TISSUE[k][labels] * (1 + 0.06 * tex) * (1 + LGG_TUMOUR[k] * contrast * w)
        img = add_noise(rng, img * field, noise * 100, magnitude=True) * (labels > 0)
        chans.append(np.clip(np.round(img), 0, 255).astype(np.uint8))
    return np.stack(chans), tumour
