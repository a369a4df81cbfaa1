"""A learnt per-slice gain on the air around the head: the one edit that can equalise its noise.

An MR magnitude image's background is noise only (Rayleigh, or half-normal after a homodyne
reconstruction), and its level says how much signal the scanner had: field strength, coil,
bandwidth. On the built-in data it is the field-strength cue that survives GECO best (linear probe
on the air's noise 0.86 on originals, ~0.70 on the generator's output; ``docs/results.md``,
"The surviving cue is the noise in the air"). A deterministic U-Net can remove noise but not add
an independent draw, and in the air its edit is damped ~50x by tanh's slope at -1.

Both noise families are scale families, so multiplying the air's distance from black by ``g``
turns noise of level sigma into noise of level ``g sigma``, for both raising and lowering the
level, with no texture of the generator's own. :class:`BackgroundGain` does that, with ``g``
computed per slice from the air's measured level (a learnt affine map in log units, bounded to
``exp(+-max_log_gain)``), starting at ``g = 1`` (the identity). Pixels of the head, and a
margin of ``dilation`` pixels around it, are never touched. On the built-in data it closed most of
the 1.5T/3T air-noise gap, but the field strength survived in the tissue (``docs/results.md``,
"A gain on the air's noise level"), so ``geco-tf train`` has it off unless ``--background-gain``.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

PACKAGE = "geco_tf"

#: The head mask every layer here uses: a pixel above this fraction of the [0, 1] range is head ...
AIR_THRESHOLD = 0.08
#: ... and air begins this many pixels (square neighbourhood) away from the nearest head pixel.
AIR_DILATION = 3


def air_mask(x: tf.Tensor, threshold: float = AIR_THRESHOLD, dilation: int = AIR_DILATION) -> tf.Tensor:
    """1.0 where ``x`` ([N, H, W, 1] in [-1, 1]) is air: farther than ``dilation`` pixels (in a
    square neighbourhood) from any pixel above ``threshold`` on the [0, 1] scale, else 0.0."""
    head = tf.cast((tf.cast(x, "float32") + 1.0) / 2.0 > threshold, "float32")
    size = 2 * dilation + 1
    near_head = tf.nn.max_pool2d(head, size, strides=1, padding="SAME") if dilation else head
    return 1.0 - near_head


def air_level(x: tf.Tensor, air: tf.Tensor) -> tf.Tensor:
    """[N] log of the root-mean-square of ``x + 1`` over each slice's ``air`` (:func:`air_mask`):
    the noise level (for Rayleigh noise of scale sigma, ``sqrt(2) sigma``); ``log(1e-4)`` for a
    slice without air or with a zeroed background."""
    x = tf.cast(x, "float32")
    energy = tf.reduce_sum(air * tf.square(x + 1.0), axis=[1, 2, 3])
    count = tf.maximum(tf.reduce_sum(air, axis=[1, 2, 3]), 1.0)
    return tf.math.log(tf.sqrt(energy / count) + 1e-4)


@keras.saving.register_keras_serializable(package=PACKAGE)
class BackgroundGain(keras.layers.Layer):
    """``y' = -1 + (y + 1) (1 + (g - 1) air(x))``: scale the air of ``y`` by a per-slice gain.

    Called as ``layer(y, x)``: ``y`` is the generator's output, ``x`` its input, from which the
    air mask (:func:`air_mask`) and the air's level are measured, so the gain depends on the scan
    and not on what the generator did to it.

    Args:
        level: (centre, spread) of :meth:`measure` on the training data (its median and a robust
            spread); the level enters the gain standardised by them, so a learning rate of 1e-3
            moves the gain as fast on any data. ``train_geco`` sets them from the training split.
        max_log_gain: the gain is ``exp(max_log_gain * tanh(rate (w z + b)))``, z the
            standardised level, within ``[exp(-m), exp(m)]``; with ``w = b = 0`` at the start it
            is 1. The default 1.5 spans the built-in data's levels (its vendors' medians lie
            within +-1.8 in log units; ``docs/method.md``).
        rate: the two weights enter multiplied by it. An Adam step moves a weight by about the
            learning rate whatever its gradient, so at 1e-3 an unscaled slope would need ~500
            steps (10 epochs of the built-in data) to equalise the level; at 20, tens.
        threshold, dilation: the head mask (:func:`air_mask`).
    """

    def __init__(
        self,
        level: tuple[float, float] = (0.0, 1.0),
        max_log_gain: float = 1.5,
        rate: float = 20.0,
        threshold: float = AIR_THRESHOLD,
        dilation: int = AIR_DILATION,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        centre, spread = (float(v) for v in level)
        if not spread > 0.0:
            raise ValueError(f"level spread {spread}: must be > 0")
        self.level = (centre, spread)
        self.max_log_gain = float(max_log_gain)
        self.rate = float(rate)
        self.threshold = float(threshold)
        self.dilation = int(dilation)
        self.slope = self.add_weight(name="slope", shape=(), initializer="zeros", dtype="float32")
        self.offset = self.add_weight(name="offset", shape=(), initializer="zeros", dtype="float32")

    def measure(self, x) -> tf.Tensor:
        """[N] the air's noise level of each slice of ``x`` (:func:`air_level`)."""
        return air_level(x, air_mask(x, self.threshold, self.dilation))

    def gain(self, x) -> tf.Tensor:
        """[N] the gain for each slice of the input ``x``."""
        return self._gain(self.measure(x))

    def _gain(self, level: tf.Tensor) -> tf.Tensor:
        z = (level - self.level[0]) / self.level[1]
        return tf.exp(self.max_log_gain * tf.tanh(self.rate * (self.slope * z + self.offset)))

    def call(self, y, x):
        y = tf.cast(y, "float32")
        air = air_mask(x, self.threshold, self.dilation)  # once: the level is measured on it too
        gain = self._gain(air_level(x, air))
        # y + (g - 1)(y + 1) = -1 + g (y + 1) in the air, written so that g = 1 and the head
        # give y bit for bit
        edit = (gain[:, None, None, None] - 1.0) * air * (y + 1.0)
        return tf.clip_by_value(y + edit, -1.0, 1.0)

    def compute_output_shape(self, input_shape, *args):
        return input_shape

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "level": list(self.level),
            "max_log_gain": self.max_log_gain,
            "rate": self.rate,
            "threshold": self.threshold,
            "dilation": self.dilation,
        }


@keras.saving.register_keras_serializable(package=PACKAGE)
class BackgroundZero(keras.layers.Layer):
    """``y' = -1`` (black) in the air around the head of the input ``x``, ``y`` elsewhere.

    Called as ``layer(y, x)``, like :class:`BackgroundGain`; the mask (:func:`air_mask`) is
    measured on the input, so it follows the anatomy, not the generator's edit. Why: the air is
    where tanh damps a U-Net's edit most (~50x at -1), so the generator can barely change the
    vendors' background noise (Rayleigh, half-normal after partial Fourier, or already zeroed by
    a vendor's mask), and the co-trained classifier leans on it: on the built-in data 67% of its
    input gradient lay in the air, 35% of the pixels (``docs/results.md``). Zeroing the air is a
    common reconstruction and preprocessing step; it costs no SSIM there (SSIM's constants
    dominate at the noise's contrast) and leaves the head, and a 3-pixel margin, untouched.
    No weights.
    """

    def __init__(self, threshold: float = AIR_THRESHOLD, dilation: int = AIR_DILATION, **kwargs) -> None:
        super().__init__(**kwargs)
        self.threshold = float(threshold)
        self.dilation = int(dilation)

    def call(self, y, x):
        y = tf.cast(y, "float32")
        air = air_mask(x, self.threshold, self.dilation)
        return y - air * (y + 1.0)  # y where air = 0, exactly -1 where air = 1

    def compute_output_shape(self, input_shape, *args):
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "threshold": self.threshold, "dilation": self.dilation}


def background_level(batches, threshold: float = AIR_THRESHOLD, dilation: int = AIR_DILATION) -> tuple[float, float]:
    """(median, spread) of :func:`air_level` over ``batches`` of images (an iterable
    of [N, H, W, 1] arrays in [-1, 1]), for :class:`BackgroundGain`'s ``level``. The spread is the
    median absolute deviation scaled to a normal's standard deviation (x 1.4826), robust to the
    slices of a vendor that zeroes its background; 1.0 when it is 0."""
    levels = np.concatenate([np.asarray(air_level(b, air_mask(b, threshold, dilation))) for b in batches])
    if levels.size == 0:
        raise ValueError("no images to measure the background level on")
    centre = float(np.median(levels))
    spread = float(1.4826 * np.median(np.abs(levels - centre)))
    return centre, spread if spread > 0.0 else 1.0
