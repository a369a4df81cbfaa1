"""SSIM and PSNR follow docs/evaluation.md's definitions (checked against independent NumPy code)."""

from __future__ import annotations

import numpy as np
from scipy.signal import convolve2d

from geco_tf.metrics import fidelity, psnr, ssim


def _numpy_ssim(x: np.ndarray, y: np.ndarray, max_val: float = 2.0) -> float:
    """Wang et al. 2004 with an 11x11 Gaussian (sigma 1.5), 'valid' windows, k1 .01, k2 .03."""
    g = np.exp(-((np.arange(11) - 5) ** 2) / (2 * 1.5**2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = (0.01 * max_val) ** 2, (0.03 * max_val) ** 2

    def f(a):
        return convolve2d(a, w[::-1, ::-1], mode="valid")

    mx, my = f(x), f(y)
    sxx, syy, sxy = f(x * x) - mx**2, f(y * y) - my**2, f(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    return float(s.mean())


def _images(seed: int = 0):
    rng = np.random.default_rng(seed)
    x = np.tanh(rng.standard_normal((3, 32, 32, 1))).astype(np.float32)
    y = np.clip(x + 0.1 * rng.standard_normal(x.shape), -1, 1).astype(np.float32)
    return x, y


def test_ssim_matches_numpy_with_max_val_2():
    x, y = _images()
    got = ssim(x, y).numpy()
    want = [_numpy_ssim(x[i, ..., 0].astype(np.float64), y[i, ..., 0].astype(np.float64)) for i in range(3)]
    np.testing.assert_allclose(got, want, atol=2e-4)
    np.testing.assert_allclose(ssim(x, x).numpy(), 1.0, atol=1e-5)


def test_psnr_is_per_image_on_unit_range_with_peak_of_original():
    x, y = _images(1)
    x01, y01 = (x + 1) / 2, (y + 1) / 2
    mse = ((x01 - y01) ** 2).mean(axis=(1, 2, 3))
    want = 10 * np.log10(x01.max(axis=(1, 2, 3)) ** 2 / mse)
    np.testing.assert_allclose(psnr(x, y).numpy(), want, rtol=1e-4)
    # identical images: finite (MSE floored), not inf
    assert np.all(np.isfinite(psnr(x, x).numpy()))


def test_fidelity_batches_any_length():
    x, y = _images(2)
    out = fidelity(x, y, batch_size=2)
    np.testing.assert_allclose(out["ssim"], ssim(x, y).numpy(), rtol=1e-6)
    np.testing.assert_allclose(out["psnr"], psnr(x, y).numpy(), rtol=1e-6)
