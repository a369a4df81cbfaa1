"""The intensity convention every slice follows: [-1, 1], padded with -1 to a centred square.

The generator ends in tanh, so images live in [-1, 1]. Each slice is clipped at its 99.5th
percentile (a few hot pixels must not set the scale) and min-max scaled; padding uses -1, the
value raw zero (black) maps to, so the padding is indistinguishable from background.
"""

from __future__ import annotations

import numpy as np

CLIP_PERCENTILE = 99.5
PAD_VALUE = -1.0


def scale_to_unit_range(image: np.ndarray, clip_percentile: float = CLIP_PERCENTILE) -> np.ndarray:
    """Map a raw slice to [-1, 1]: clip at ``clip_percentile``, then min-max scale.

    A constant slice maps to all -1. Returns float32.
    """
    image = np.asarray(image, dtype=np.float32)
    low = float(image.min())
    high = float(np.percentile(image, clip_percentile))
    if high <= low:
        high = float(image.max())
    if high <= low:
        return np.full(image.shape, PAD_VALUE, dtype=np.float32)
    scaled = (np.clip(image, low, high) - low) / (high - low)
    return (scaled * 2.0 - 1.0).astype(np.float32)


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
    """Paper section 3.3: keep a slice when under 90% of its values are pure black or pure white."""
    image = np.asarray(image)
    low, high = image.min(), image.max()
    if high <= low:
        return False
    extreme = np.count_nonzero((image == low) | (image == high))
    return extreme < max_extreme_fraction * image.size
