"""A classifier that looks at k-space statistics, not at the image: the second adversary.

Why: scanner signatures are reconstruction effects (acquired matrix, k-space filters, partial
Fourier, noise colour), i.e. the *envelope of the Fourier spectrum*. A convolutional classifier
trained alongside the generator reads them only through local texture, and the generator learns
to hide the texture from it while the spectrum still tells the vendor: on the built-in data a
GECO generator that brought a fresh DeepDicomSort-style audit down to 0.29 (chance 0.25) left
the manufacturer readable at 0.75-0.80 by a linear probe on Fourier magnitudes
(``geco_tf.evaluation.probes``). Playing the game against this network as well makes the
generator equalise the spectra themselves.

Features (computed in the graph, differentiable, any image size):

* the coarse 2-D spectrum: ``log(1 + |rfft2(x)|)``, centred along the rows, block-averaged to
  at most ``grid x grid`` cells (anisotropic effects such as a zero-filled acquired matrix);
* the radial log-power profile: ``log(|fft2(x)|^2 + 1e-6)`` averaged over ``rings`` rings of
  spatial frequency (isotropic effects such as apodisation and noise colour) -- the same rings
  as :func:`geco_tf.evaluation.probes.radial_spectrum`.

They are standardised by batch normalisation and classified by a small MLP. Magnitudes discard
the phase, i.e. where the anatomy sits, so the network cannot fall back on anatomy.

Beyond the paper; why it is on by default (``spectral_adversary = true``; ``docs/method.md``;
``docs/results.md``, runs E3 and E6): playing against it took the report's Fourier probe on the
kept generator from 0.48-0.80 to 0.43-0.53 at the same SSIM. The ``paper`` preset turns it off.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import layers

PACKAGE = "geco_tf"


def _ring_onehot(h: int, w: int, rings: int) -> np.ndarray:
    """[H*W, rings] one-hot ring membership of every frequency in ``fft2``'s own (uncentred)
    order, rings as :func:`geco_tf.evaluation.probes.radial_spectrum` draws them (float64, so
    frequencies exactly on a ring boundary fall on the same side)."""
    centred = numpy_ring_index(h, w, rings)
    uncentred = np.fft.ifftshift(centred)  # frequency k at index k, as fft2 returns it
    return np.eye(rings, dtype=np.float32)[uncentred.ravel()]


def radial_log_power(images: tf.Tensor, rings: int = 32) -> tf.Tensor:
    """Mean ``log(|FFT2|^2 + 1e-6)`` per ring of spatial frequency: [B, H, W, 1] -> [B, rings]
    (empty rings, possible only for tiny images, give 0). H and W must be static."""
    x = tf.cast(images[..., 0], tf.float32)
    h, w = int(images.shape[1]), int(images.shape[2])
    spectrum = tf.signal.fft2d(tf.complex(x, tf.zeros_like(x)))
    power = tf.math.log(tf.math.real(spectrum * tf.math.conj(spectrum)) + 1e-6)  # [B, H, W]
    onehot = _ring_onehot(h, w, rings)
    counts = np.maximum(onehot.sum(axis=0), 1.0)
    return tf.matmul(tf.reshape(power, [-1, h * w]), tf.constant(onehot)) / tf.constant(counts)


def coarse_log_spectrum(images: tf.Tensor, grid: int = 8) -> tf.Tensor:
    """``log(1 + |rfft2(x)|)``, centred along the rows, averaged over blocks to at most
    ``grid`` cells per axis (as :func:`geco_tf.evaluation.probes.block_spectrum`):
    [B, H, W, 1] -> [B, cells]. H and W must be static."""
    x = tf.cast(images[..., 0], tf.float32)
    h, w = int(images.shape[1]), int(images.shape[2]) // 2 + 1
    magnitude = tf.math.log1p(tf.abs(tf.signal.rfft2d(x)))  # [B, H, W // 2 + 1]
    magnitude = tf.roll(magnitude, shift=h // 2, axis=1)  # fftshift along rows
    fh, fw = -(-h // grid), -(-w // grid)
    ph, pw = (-h) % fh, (-w) % fw
    if ph:  # repeat the edge, as numpy's mode="edge"
        magnitude = tf.concat([magnitude, tf.repeat(magnitude[:, -1:, :], ph, axis=1)], axis=1)
    if pw:
        magnitude = tf.concat([magnitude, tf.repeat(magnitude[:, :, -1:], pw, axis=2)], axis=2)
    h2, w2 = (h + ph) // fh, (w + pw) // fw
    blocks = tf.reshape(magnitude, [-1, h2, fh, w2, fw])
    return tf.reshape(tf.reduce_mean(blocks, axis=[2, 4]), [-1, h2 * w2])


@keras.saving.register_keras_serializable(package=PACKAGE)
class SpectralClassifier(keras.Model):
    """Class probabilities from Fourier-magnitude features (see the module docstring).

    Args:
        num_classes: classes of the target.
        grid: cells per axis of the coarse 2-D spectrum.
        rings: rings of the radial log-power profile.
        hidden: units of the hidden layer (0: a linear classifier on the features).
    """

    def __init__(self, num_classes: int, grid: int = 8, rings: int = 32, hidden: int = 64, **kwargs) -> None:
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.grid = grid
        self.rings = rings
        self.hidden = hidden
        self.standardise = layers.BatchNormalization(name="standardise")
        self.dense = layers.Dense(hidden, activation="relu", name="hidden") if hidden else None
        self.logits = layers.Dense(num_classes, name="logits")
        self.softmax = layers.Activation("softmax", dtype="float32", name="softmax")

    def features(self, x) -> tf.Tensor:
        """The unstandardised features [B, grid^2 + rings] (float32 whatever the policy)."""
        return tf.concat([coarse_log_spectrum(x, self.grid), radial_log_power(x, self.rings)], axis=1)

    def call(self, x, training=None, return_logits=False):
        """Class probabilities, or with ``return_logits`` the float32 logits."""
        f = self.standardise(tf.cast(self.features(x), self.compute_dtype), training=training)
        if self.dense is not None:
            f = self.dense(f)
        logits = self.logits(f)
        return tf.cast(logits, "float32") if return_logits else self.softmax(logits)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "grid": self.grid,
            "rings": self.rings,
            "hidden": self.hidden,
        }


def numpy_ring_index(h: int, w: int, rings: int) -> np.ndarray:
    """The ring of every centred frequency (as :func:`geco_tf.evaluation.probes.radial_spectrum`
    computes it), for tests and documentation."""
    yy, xx = np.mgrid[:h, :w]
    radius = np.hypot(yy - h // 2, xx - w // 2)
    return np.minimum((radius / (radius.max() + 1e-9) * rings).astype(np.int64), rings - 1)
