"""A fixed k-space low-pass: keep the band of spatial frequencies every scanner records.

Scanners differ in how much of k-space they acquire (a 0.8-phase-resolution protocol records
80% of the rows' frequencies, a rectangular field of view fewer columns), and the missing band is
a signature no pixel edit can hide without inventing detail. Harmonisation pipelines usually
resample every site to the coarsest resolution; :class:`BandLimit` is that step as a layer, so a
generator's output can be restricted to the common band and its adversary never sees beyond it.

Beyond the paper; why it is on by default (``output_band = "auto"``: the band the dataset records,
off when it records none; ``docs/method.md``, "output band"; ``docs/results.md``, runs E19-E24):
with it runs E19 and E20 gave the lowest fresh audits of any GECO run at SSIM >= 0.97 (DDS 0.344 /
0.312, Fourier probe 0.427 / 0.406; co-trained 0.318 / 0.339 against 0.443-0.516 without it). Its
one failure (E23 kept an early epoch that only the co-trained classifier missed) is what the fresh
selection probe, made default with it, guards against. The ``paper`` preset turns it off.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

PACKAGE = "geco_tf"


def band_mask(n, cutoff: float, edge: float = 0.03) -> tf.Tensor:
    """``(n,)`` float32 weights of the DFT frequencies 0..n-1 (FFT order): ~1 for ``|k| <
    cutoff`` (a fraction of Nyquist), falling to 0 with a logistic edge of width ``edge``, as a
    hard edge would ring."""
    k = tf.abs(tf.signal.fftshift(tf.linspace(-1.0, 1.0, n + 1)[:-1]))  # |k| / Nyquist, FFT order
    return tf.sigmoid((cutoff - k) / edge)


def band_matrix(n, cutoff: float, edge: float = 0.03) -> tf.Tensor:
    """The ``(n, n)`` real matrix that low-passes a length-``n`` signal: ``F^-1 diag(m) F`` for the
    mask ``m`` of :func:`band_mask`. The mask is even in k, so the matrix is real and equals
    ``(C diag(m) C^T + S diag(m) S^T) / n`` with ``C, S`` the DFT's cosines and sines."""
    index = tf.range(n)
    turns = tf.math.floormod(index[:, None] * index[None, :], n)  # i k mod n, exact in integers
    phase = 2.0 * np.pi * tf.cast(turns, tf.float32) / tf.cast(n, tf.float32)
    mask = band_mask(n, cutoff, edge)[None, :]
    cos, sin = tf.cos(phase), tf.sin(phase)
    return (tf.matmul(cos * mask, cos, transpose_b=True) + tf.matmul(sin * mask, sin, transpose_b=True)) / tf.cast(
        n, tf.float32
    )


@keras.saving.register_keras_serializable(package=PACKAGE)
class BandLimit(keras.layers.Layer):
    """Low-pass ``(N, H, W, C)`` images to ``band`` = (rows, columns), fractions of Nyquist, then
    clip to [-1, 1]. No weights; any H, W; computed in float32.

    The filter is separable and circular, so it is two matrix products, ``A_rows X A_cols^T``
    (:func:`band_matrix`), rather than an FFT: the same numbers, and only ops that LiteRT has
    builtin kernels for (the matrices fold to constants at a fixed size).
    """

    def __init__(self, band: tuple[float, float] = (0.8, 0.85), edge: float = 0.03, **kwargs) -> None:
        super().__init__(**kwargs)
        if len(band) != 2 or not all(0.0 < b <= 1.0 for b in band):
            raise ValueError(f"band {band!r}: two fractions of Nyquist in (0, 1]")
        self.band = tuple(float(b) for b in band)
        self.edge = float(edge)

    def call(self, x):
        x = tf.cast(x, "float32")
        n, h, w, c = (tf.shape(x)[i] for i in range(4))
        rows = band_matrix(h, self.band[0], self.edge)
        cols = band_matrix(w, self.band[1], self.edge)
        # Rank-2 products only: TF 2.21's oneDNN batched matmul of a (N, C, H, W) tensor by a
        # rank-2 matrix returned wrong numbers on this CPU (docs/dependencies.md).
        x = tf.reshape(tf.transpose(x, [0, 3, 1, 2]), [-1, w])  # (N*C*H, W)
        x = tf.matmul(x, cols, transpose_b=True)
        x = tf.reshape(tf.transpose(tf.reshape(x, [n, c, h, w]), [0, 1, 3, 2]), [-1, h])  # (N*C*W, H)
        x = tf.matmul(x, rows, transpose_b=True)
        x = tf.transpose(tf.reshape(x, [n, c, w, h]), [0, 3, 2, 1])  # (N, H, W, C)
        return tf.clip_by_value(x, -1.0, 1.0)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "band": list(self.band), "edge": self.edge}
