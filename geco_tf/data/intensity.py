"""The intensity convention every slice follows: [-1, 1], padded with -1 to a centred square.

The generator ends in tanh, so images live in [-1, 1]. Each slice is clipped at its 99.5th
percentile (a few hot pixels must not set the scale) and min-max scaled; padding uses -1, the
value raw zero (black) maps to, so the padding is indistinguishable from background.

Non-finite voxels (NaN, +-inf) never spread. Float NIfTI from SPM or FSL store the outside of a
brain mask as NaN, so a NaN is most often *background*: :func:`fill_non_finite` sets them to the
volume's lowest finite value (its background, which scales to -1, the padding value), and
:func:`scale_to_unit_range` computes its statistics over finite voxels only and maps any
non-finite voxel to -1. A single NaN therefore changes one pixel, not a slice, and an all-NaN
background comes out as black, like any other background.
"""

from __future__ import annotations

import numpy as np

CLIP_PERCENTILE = 99.5
PAD_VALUE = -1.0


def fill_non_finite(volume: np.ndarray, fill: float | None = None) -> tuple[np.ndarray, int]:
    """``volume`` as float32 with NaN and infinite voxels set to ``fill`` (default: the volume's
    lowest finite value, i.e. its background; 0 when no voxel is finite), and how many there were.

    Returns the input array itself (no copy) when every voxel is finite.
    """
    array = np.asarray(volume, dtype=np.float32)
    bad = ~np.isfinite(array)
    n_bad = int(np.count_nonzero(bad))
    if not n_bad:
        return array, 0
    if fill is None:
        finite = array[~bad]
        fill = float(finite.min()) if finite.size else 0.0
    array = np.array(array, dtype=np.float32, copy=True)
    array[bad] = fill
    return array, n_bad


def scale_to_unit_range(image: np.ndarray, clip_percentile: float = CLIP_PERCENTILE) -> np.ndarray:
    """Map a raw slice (or volume) to [-1, 1]: clip at ``clip_percentile``, then min-max scale.

    NaN-safe: the minimum and the percentile are taken over the finite values only, and
    non-finite values come out as -1 (the background). A constant (or all non-finite) image
    maps to all -1. Returns float32.
    """
    image = np.asarray(image, dtype=np.float32)
    finite = np.isfinite(image)
    all_finite = bool(finite.all())
    values = image if all_finite else image[finite]
    if values.size == 0:
        return np.full(image.shape, PAD_VALUE, dtype=np.float32)
    low = float(values.min())
    high = float(np.percentile(values, clip_percentile))
    if high <= low:
        high = float(values.max())
    if high <= low:
        return np.full(image.shape, PAD_VALUE, dtype=np.float32)
    scaled = (np.clip(image, low, high) - low) / (high - low)
    out = (scaled * 2.0 - 1.0).astype(np.float32)
    if not all_finite:
        out[~finite] = PAD_VALUE
    return out


def pad_or_crop(image: np.ndarray, size: int, fill: float = PAD_VALUE) -> tuple[np.ndarray, bool]:
    """Centre ``image`` in a ``size`` x ``size`` square, padding with ``fill``.

    A side longer than ``size`` is centre-cropped. Returns the square and whether it cropped.
    """
    image = np.asarray(image, dtype=np.float32)
    out = np.full((size, size), fill, dtype=np.float32)
    h, w = image.shape
    cropped = h > size or w > size
    src_y, src_x = max(0, (h - size) // 2), max(0, (w - size) // 2)
    dst_y, dst_x = max(0, (size - h) // 2), max(0, (size - w) // 2)
    ch, cw = min(h, size), min(w, size)
    out[dst_y : dst_y + ch, dst_x : dst_x + cw] = image[src_y : src_y + ch, src_x : src_x + cw]
    return out, cropped


def is_informative(image: np.ndarray, max_extreme_fraction: float = 0.9) -> bool:
    """Paper section 3.3: keep a slice when under 90% of its values are pure black or pure white.

    Non-finite values count as neither and are ignored (they are filled before this in preprocess).
    """
    image = np.asarray(image)
    finite = np.isfinite(image)
    values = image if finite.all() else image[finite]
    if values.size == 0:
        return False
    low, high = values.min(), values.max()
    if high <= low:
        return False
    extreme = np.count_nonzero((values == low) | (values == high))
    return extreme < max_extreme_fraction * image.size
