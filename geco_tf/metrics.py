"""Fidelity metrics between an original slice X and its generated version G(X).

Both are defined once here so that training, evaluation, the report and the exports all report the
same numbers (docs/evaluation.md):

* **SSIM**: ``tf.image.ssim`` on images in [-1, 1] with ``max_val=2.0`` (the dynamic range of
  that convention) and its defaults: 11x11 Gaussian window, sigma 1.5, k1 0.01, k2 0.03.
* **PSNR**: per image, ``10 log10(max(x)^2 / MSE(x, G(x)))`` with both images mapped from
  [-1, 1] to [0, 1] first, so the peak is the brightest pixel of the *original* slice (the
  paper's definition, section 3.5). The MSE is floored at 1e-10 so identical images give a
  finite 100 dB-scale value instead of infinity, which would poison means.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

#: Floor for the MSE in PSNR (identical images -> 10 log10(max^2 / 1e-10), not inf).
MSE_FLOOR = 1e-10


def ssim(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
    """Per-image SSIM [B] of images [B, H, W, 1] in [-1, 1] (max_val 2.0, Gaussian 11x11)."""
    x = tf.cast(x, tf.float32)
    y = tf.cast(y, tf.float32)
    return tf.image.ssim(x, y, max_val=2.0)


def psnr(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
    """Per-image PSNR [B] in dB with ``x`` the original; both mapped to [0, 1] first."""
    x01 = (tf.cast(x, tf.float32) + 1.0) / 2.0
    y01 = (tf.cast(y, tf.float32) + 1.0) / 2.0
    axes = list(range(1, len(x01.shape)))
    mse = tf.maximum(tf.reduce_mean(tf.square(x01 - y01), axis=axes), MSE_FLOOR)
    peak = tf.reduce_max(x01, axis=axes)
    return 10.0 * tf.math.log(tf.square(peak) / mse) / tf.math.log(10.0)


def fidelity(x, y, batch_size: int = 256) -> dict[str, np.ndarray]:
    """Per-image ``ssim`` and ``psnr`` arrays for NumPy or tensor inputs of any length."""
    x = np.asarray(x, np.float32)
    y = np.asarray(y, np.float32)
    out_s, out_p = [], []
    for i in range(0, len(x), batch_size):
        out_s.append(ssim(x[i : i + batch_size], y[i : i + batch_size]).numpy())
        out_p.append(psnr(x[i : i + batch_size], y[i : i + batch_size]).numpy())
    if not out_s:
        return {"ssim": np.zeros(0, np.float32), "psnr": np.zeros(0, np.float32)}
    return {"ssim": np.concatenate(out_s), "psnr": np.concatenate(out_p)}
