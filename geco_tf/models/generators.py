"""Generators: they edit a slice as little as possible so that its scanner cannot be told.

All generators are fully convolutional and map [B, H, W, 1] images in [-1, 1] to the same shape,
for any H and W, so a generator trained on 64x64 slices runs on 512x512 ones (paper section 3.1).

* :class:`UNetGenerator` -- the paper's best ("core") generator, ending in tanh.
* :class:`ResidualGenerator` -- ``X + alpha * G(X)`` with a learnable scalar ``alpha`` (eq. 4).
* :class:`MultiResidualGenerator` -- three residual blocks of two convolutions each.

Final activations run in float32 so mixed-precision training keeps an exact output range.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers

from geco_tf.models import normalization
from geco_tf.models.background import BackgroundGain, BackgroundZero
from geco_tf.models.band import BandLimit

PACKAGE = "geco_tf"


def _norm(kind: str | None, name: str) -> layers.Layer:
    """Normalisation by name: 'instance' (per sample and channel over H, W, as
    ``GroupNormalization(groups=-1, epsilon=1e-5)``), 'batch', or None (identity). Both are the
    fused layers of :mod:`geco_tf.models.normalization`."""
    if kind == "instance":
        return normalization.InstanceNormalization(epsilon=1e-5, name=name)
    if kind == "batch":
        return normalization.BatchNormalization(name=name)
    if kind in (None, "none"):
        return layers.Identity(name=name)
    raise ValueError(f"unknown norm {kind!r}: use 'instance', 'batch' or None")


class ConvBlock(layers.Layer):
    """Two 3x3 convolutions, each followed by normalisation and LeakyReLU(0.2)."""

    def __init__(self, filters: int, norm: str | None = "instance", **kwargs) -> None:
        super().__init__(**kwargs)
        self.filters = filters
        self.norm = norm
        self.conv1 = layers.Conv2D(filters, 3, padding="same", name="conv1")
        self.norm1 = _norm(norm, "norm1")
        self.conv2 = layers.Conv2D(filters, 3, padding="same", name="conv2")
        self.norm2 = _norm(norm, "norm2")
        self.act = layers.LeakyReLU(0.2)

    def call(self, x, training=None):
        x = self.act(self.norm1(self.conv1(x), training=training))
        return self.act(self.norm2(self.conv2(x), training=training))

    def get_config(self) -> dict:
        return {**super().get_config(), "filters": self.filters, "norm": self.norm}


def _pad_to_multiple(x: tf.Tensor, multiple: int, value: float = -1.0):
    """Pad H and W at the bottom/right up to a multiple of ``multiple`` with the background
    value; return the padded tensor and the original H, W for cropping back."""
    shape = tf.shape(x)
    h, w = shape[1], shape[2]
    pad_h = (multiple - h % multiple) % multiple
    pad_w = (multiple - w % multiple) % multiple
    paddings = [[0, 0], [0, pad_h], [0, pad_w], [0, 0]]
    return tf.pad(x, paddings, constant_values=tf.cast(value, x.dtype)), h, w


@keras.saving.register_keras_serializable(package=PACKAGE)
class UNetGenerator(keras.Model):
    """U-Net (Ronneberger et al. 2015) with a tanh output: the paper's core GECO generator.

    Args:
        depth: number of 2x down-sampling steps; inputs are padded inside to a multiple of
            ``2**depth`` and cropped back, so any H, W works.
        base_filters: filters at full resolution, doubled at each level.
        norm: 'instance' (default), 'batch' or None.
        input_skip: add ``atanh(0.999 x)`` to the head's pre-activation and start the head at
            zero, so the network *is* the identity at initialisation (up to 0.1% contrast) and
            learns only the edit, still bounded by tanh. Without it a U-Net with instance norm
            needs hundreds of steps to learn the identity (SSIM ~0.89 after 300 steps on the
            built-in data), time the adversarial game cannot spare.
        edit_space: with ``input_skip``, the units of the head's output (the edit). ``'logit'``
            (default): the edit is added to ``atanh(0.999 x)``, so tanh's slope damps edits
            and their gradients 35x in the background (x ~ -1) and 6x on bright tissue.
            ``'pixel'``: the edit is divided by that slope, ``1 - (0.999 x)^2``, so
            ``G(x) ~= x + edit`` to first order at every intensity. Pixel units looked right (a
            third of a harmonising low-pass edit lies at such intensities), but in the game they
            made things worse: the co-trained classifier went from ~0.5 to ~0.9 on G(val) by
            epoch 5 (docs/results.md); the damping keeps the generator from writing its own,
            vendor-dependent texture into the background.
        linear_filter: with ``input_skip``, the size k of a learnable k x k convolution of the
            input added to the edit (0 = none), zero at initialisation. Scanner signatures are
            largely k-space filters (acquired matrix, apodisation), whose inverse or common
            denominator is a linear filter; the U-Net, whose every layer is normalised per image,
            can only approximate one. Here it is one layer the game can tune directly.
        noise_channels: number of standard-normal channels drawn afresh on every call and given
            to the U-Net beside the image (0 = none, a deterministic generator). Most scanner
            signatures are noise texture (parallel-imaging g-factor, homodyne real-valued noise,
            vendor denoising, a masked background, noise-free zero-filled k-space bands); a
            deterministic network can only reshape or remove the noise an image already has,
            never add an independent realisation where a vendor has none. With noise channels
            it can. ``call(x, noise=z)`` takes a given draw instead (tests, reproducible runs);
            otherwise the draw follows TensorFlow's global seed.
        output_band: (rows, columns) as fractions of Nyquist, or None. The output is low-passed
            to this band (:class:`~geco_tf.models.band.BandLimit`), so k-space a scanner did not
            acquire is cut from every output instead of left for the classifier to find.
        background_gain: (centre, spread) of the training data's air noise level, or None: a
            learnt per-slice gain on the air (:class:`~geco_tf.models.background.BackgroundGain`).
        zero_background: set the air around the head (from the input's anatomy) to black after
            everything else (:class:`~geco_tf.models.background.BackgroundZero`), so no vendor's
            background noise survives where tanh keeps the generator from editing it.
    """

    def __init__(
        self,
        depth: int = 3,
        base_filters: int = 16,
        norm: str | None = "instance",
        input_skip: bool = False,
        edit_space: str = "logit",
        linear_filter: int = 0,
        noise_channels: int = 0,
        output_band: tuple[float, float] | None = None,
        background_gain: tuple[float, float] | None = None,
        zero_background: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if edit_space not in ("pixel", "logit"):
            raise ValueError(f"edit_space {edit_space!r}: use 'pixel' or 'logit'")
        self.depth = depth
        self.base_filters = base_filters
        self.norm = norm
        self.input_skip = input_skip
        self.edit_space = edit_space
        self.linear_filter = int(linear_filter)
        self.noise_channels = int(noise_channels)
        self.output_band = tuple(float(b) for b in output_band) if output_band else None
        self.band_limit = BandLimit(self.output_band, name="band_limit") if self.output_band else None
        self.background_gain = tuple(float(v) for v in background_gain) if background_gain else None
        self.background = (
            BackgroundGain(self.background_gain, name="background_gain") if self.background_gain else None
        )
        self.zero_background = bool(zero_background)
        self.background_zero = BackgroundZero(name="background_zero") if self.zero_background else None
        self.filter = (
            layers.Conv2D(1, self.linear_filter, padding="same", use_bias=False, kernel_initializer="zeros", name="filter")
            if self.linear_filter and input_skip
            else None
        )
        self.down_blocks = [ConvBlock(base_filters * 2**i, norm, name=f"down{i}") for i in range(depth)]
        self.pools = [layers.MaxPooling2D(2, name=f"pool{i}") for i in range(depth)]
        self.bottleneck = ConvBlock(base_filters * 2**depth, norm, name="bottleneck")
        self.ups = [
            layers.Conv2DTranspose(base_filters * 2**i, 2, strides=2, name=f"up{i}") for i in reversed(range(depth))
        ]
        self.concats = [layers.Concatenate(name=f"skip{i}") for i in reversed(range(depth))]
        self.up_blocks = [ConvBlock(base_filters * 2**i, norm, name=f"upblock{i}") for i in reversed(range(depth))]
        init = "zeros" if input_skip else "glorot_uniform"
        self.head = layers.Conv2D(1, 1, kernel_initializer=init, name="head")
        self.out_act = layers.Activation("tanh", dtype="float32", name="tanh")

    def call(self, x, training=None, noise=None):
        inputs = x
        if self.noise_channels:
            if noise is None:
                shape = tf.concat([tf.shape(x)[:3], [self.noise_channels]], axis=0)
                noise = tf.random.normal(shape, dtype=x.dtype)
            x = tf.concat([x, tf.cast(noise, x.dtype)], axis=-1)
        x, h, w = _pad_to_multiple(x, 2**self.depth)
        skips = []
        for block, pool in zip(self.down_blocks, self.pools):
            x = block(x, training=training)
            skips.append(x)
            x = pool(x)
        x = self.bottleneck(x, training=training)
        for up, concat, block, skip in zip(self.ups, self.concats, self.up_blocks, reversed(skips)):
            x = block(concat([up(x), skip]), training=training)
        x = tf.cast(self.head(x)[:, :h, :w, :], "float32")
        if self.filter is not None:
            x = x + tf.cast(self.filter(inputs), "float32")
        if self.input_skip:
            shrunk = 0.999 * tf.clip_by_value(tf.cast(inputs, "float32"), -1.0, 1.0)
            if self.edit_space == "pixel":
                x = x / (1.0 - tf.square(shrunk))  # tanh's slope at the input: edit in pixel units
            x = x + tf.math.atanh(shrunk)
        x = self.out_act(x)
        if self.background is not None:
            x = self.background(x, inputs)
        if self.band_limit is not None:
            x = self.band_limit(x)
        return self.background_zero(x, inputs) if self.background_zero is not None else x

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "depth": self.depth,
            "base_filters": self.base_filters,
            "norm": self.norm,
            "input_skip": self.input_skip,
            "edit_space": self.edit_space,
            "linear_filter": self.linear_filter,
            "noise_channels": self.noise_channels,
            "output_band": list(self.output_band) if self.output_band else None,
            "background_gain": list(self.background_gain) if self.background_gain else None,
            "zero_background": self.zero_background,
        }


@keras.saving.register_keras_serializable(package=PACKAGE)
class ResidualGenerator(keras.Model):
    """``X' = X + alpha * G(X)`` (paper eq. 4): the generator learns the edit, not the image.

    ``G`` is a :class:`UNetGenerator`; ``alpha`` is a learnable scalar (initially
    ``alpha_init``), so the network sets the size of its own edits.
    """

    def __init__(
        self, depth: int = 3, base_filters: int = 16, norm: str | None = "instance", alpha_init: float = 0.1, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        self.depth = depth
        self.base_filters = base_filters
        self.norm = norm
        self.alpha_init = alpha_init
        self.body = UNetGenerator(depth, base_filters, norm, name="body")
        self.alpha = self.add_weight(
            name="alpha", shape=(), initializer=keras.initializers.Constant(alpha_init), dtype="float32"
        )

    def call(self, x, training=None):
        edit = self.body(x, training=training)
        return tf.cast(x, "float32") + self.alpha * tf.cast(edit, "float32")

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "depth": self.depth,
            "base_filters": self.base_filters,
            "norm": self.norm,
            "alpha_init": self.alpha_init,
        }


@keras.saving.register_keras_serializable(package=PACKAGE)
class ResidualBlock(ConvBlock):
    """``x + norm(conv(act(norm(conv(x)))))``: the layers of :class:`ConvBlock` with an
    identity shortcut and no activation after the sum."""

    def call(self, x, training=None):
        y = self.act(self.norm1(self.conv1(x), training=training))
        return x + self.norm2(self.conv2(y), training=training)


@keras.saving.register_keras_serializable(package=PACKAGE)
class MultiResidualGenerator(keras.Model):
    """Three residual blocks of two convolutions each between a stem and a tanh head, added to
    the input with a learnable scale as in :class:`ResidualGenerator` (paper section 3.1.2)."""

    def __init__(
        self, filters: int = 32, blocks: int = 3, norm: str | None = "instance", alpha_init: float = 0.1, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        self.filters = filters
        self.blocks = blocks
        self.norm = norm
        self.alpha_init = alpha_init
        self.stem = layers.Conv2D(filters, 3, padding="same", name="stem")
        self.res_blocks = [ResidualBlock(filters, norm, name=f"res{i}") for i in range(blocks)]
        self.head = layers.Conv2D(1, 3, padding="same", name="head")
        self.out_act = layers.Activation("tanh", dtype="float32", name="tanh")
        self.alpha = self.add_weight(
            name="alpha", shape=(), initializer=keras.initializers.Constant(alpha_init), dtype="float32"
        )

    def call(self, x, training=None):
        y = self.stem(x)
        for block in self.res_blocks:
            y = block(y, training=training)
        edit = self.out_act(self.head(y))
        return tf.cast(x, "float32") + self.alpha * edit

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "filters": self.filters,
            "blocks": self.blocks,
            "norm": self.norm,
            "alpha_init": self.alpha_init,
        }


GENERATORS = {"unet": UNetGenerator, "residual": ResidualGenerator, "multi-residual": MultiResidualGenerator}


def build_generator(kind: str = "unet", **kwargs) -> keras.Model:
    """A generator by its CLI name: 'unet' (default), 'residual' or 'multi-residual'."""
    try:
        cls = GENERATORS[kind]
    except KeyError:
        raise ValueError(f"unknown generator {kind!r}: choose one of {', '.join(GENERATORS)}") from None
    return cls(**kwargs)
