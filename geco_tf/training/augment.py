"""Label-preserving augmentation of the co-trained CNN classifier's learning batches
(``--classifier-shift``, ``--classifier-flip``).

Every training subject was scanned on one scanner, and the DDS-style classifier ends in two dense
layers of 1024 that see each position of the image separately: it can learn "this anatomy at this
place -> this scanner" for the 184 training subjects (a default run's classifier was right on 62%
of G(train) and 37% of G(val); ``benchmarks/memorisation.py``). Its gradient then asks the
generator to edit anatomy, which does not generalise and which the fidelity term charges for.

Moving each image by a few whole pixels, and mirroring it left-right, changes where the anatomy
falls but keeps what tells the scanners apart: the k-space windows and the noise they shape are
translation invariant, the phase axis stays anterior-posterior and the readout left-right under a
left-right mirror, and a shift of a few pixels moves coil shading by a few percent of its width.
A mirror does reverse two left-right asymmetries, keeping their size: the built-in Philips
protocol's lateral coil shading (a 2% ramp across the image; the classifier then learns a ramp of
either sign, which still tells Philips from the other three) and the direction of the chemical
shift of fat along the readout (a field-strength cue: ``--classifier-flip`` is for manufacturer). Only the CNN classifier's learning
step sees augmented images; the spectral adversary (whose Fourier magnitudes do not say where
anatomy lies), the generator's adversarial terms, validation and the probes see G(X) as it is.
"""

from __future__ import annotations

import tensorflow as tf


def shift_and_flip(images: tf.Tensor, seed: tf.Tensor, max_shift: int = 0, flip: bool = False) -> tf.Tensor:
    """Each image of ``images`` [B, H, W, C] moved by a whole number of pixels drawn uniformly
    from [-max_shift, max_shift] along each axis (edges filled by reflection, so no hard border
    appears that a scanner would not make), and, if ``flip``, mirrored left-right (along W) with
    probability 1/2. ``seed`` is a stateless seed (shape [2], int32/int64): the same seed gives
    the same batch, which keeps training resumable and replicas reproducible."""
    if not max_shift and not flip:
        return images
    batch = tf.shape(images)[0]
    seed = tf.cast(seed, tf.int64)
    out = images
    if flip:
        mirror = tf.random.stateless_uniform([batch], seed=seed + tf.constant([0, 11], tf.int64)) < 0.5
        out = tf.where(mirror[:, None, None, None], tf.reverse(out, axis=[2]), out)
    if max_shift:
        shifts = tf.random.stateless_uniform(
            [batch, 2], seed=seed + tf.constant([0, 23], tf.int64), minval=-max_shift, maxval=max_shift + 1, dtype=tf.int32
        )
        shifts = tf.cast(shifts, tf.float32)
        # Projective transform [a0 a1 a2 b0 b1 b2 c0 c1] maps output (x, y) to input
        # (x + a2, y + b2): a pure translation, sampled at whole pixels (NEAREST is exact).
        zeros = tf.zeros([batch], tf.float32)
        ones = tf.ones([batch], tf.float32)
        transforms = tf.stack([ones, zeros, shifts[:, 1], zeros, ones, shifts[:, 0], zeros, zeros], axis=1)
        out = tf.raw_ops.ImageProjectiveTransformV3(
            images=out,
            transforms=transforms,
            output_shape=tf.shape(out)[1:3],
            fill_value=0.0,
            interpolation="NEAREST",
            fill_mode="REFLECT",
        )
    return out
