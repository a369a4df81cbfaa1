"""The paper's core GECO generator: a U-Net with a tanh output (paper section 3.1).

Fully convolutional: it maps [B, H, W, 1] images in [-1, 1] to the same shape for any H and W
(padded inside to a multiple of ``2**depth`` and cropped back), so a generator trained on 64x64
slices runs on 512x512 ones. Its final activation runs in float32, so mixed-precision training
keeps an exact output range. :class:`ConvBlock` is its building block (also the residual blocks').
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers

from geco_tf.models import normalization
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
    """Two 3x3 convolutions, each followed by normalisation and LeakyReLU(0.2).

    Args:
        filters: output channels of both convolutions.
        norm: 'instance' (default), 'batch' or None (no normalisation).
    """

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


#: Constructor arguments of :class:`UNetGenerator` that were deleted (measured on the built-in
#: data, not better than the defaults; ``docs/what-we-tried.md``) and the value that meant "off":
#: a generator saved before loads if each is at that value.
REMOVED_UNET_ARGUMENTS = {
    "edit_space": "logit",
    "linear_filter": 0,
    "noise_channels": 0,
    "background_gain": None,
    "zero_background": False,
}


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
            learns only the edit, still bounded by tanh (default, as ``geco-tf train``). Without
            it (the paper's network, ``--preset paper``) a U-Net with instance norm needs
            hundreds of steps to learn the identity (SSIM ~0.89 after 300 steps on the built-in
            data), time the adversarial game cannot spare.
        output_band: (rows, columns) as fractions of Nyquist, or None. The output is low-passed
            to this band (:class:`~geco_tf.models.band.BandLimit`), so k-space a scanner did not
            acquire is cut from every output instead of left for the classifier to find.
    """

    def __init__(
        self,
        depth: int = 3,
        base_filters: int = 16,
        norm: str | None = "instance",
        input_skip: bool = True,
        output_band: tuple[float, float] | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.depth = depth
        self.base_filters = base_filters
        self.norm = norm
        self.input_skip = bool(input_skip)
        self.output_band = tuple(float(b) for b in output_band) if output_band else None
        self.band_limit = BandLimit(self.output_band, name="band_limit") if self.output_band else None
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

    def call(self, x, training=None):
        inputs = x
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
        if self.input_skip:
            x = x + tf.math.atanh(0.999 * tf.clip_by_value(tf.cast(inputs, "float32"), -1.0, 1.0))
        x = self.out_act(x)
        return self.band_limit(x) if self.band_limit is not None else x

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "depth": self.depth,
            "base_filters": self.base_filters,
            "norm": self.norm,
            "input_skip": self.input_skip,
            "output_band": list(self.output_band) if self.output_band else None,
        }

    @classmethod
    def from_config(cls, config: dict) -> UNetGenerator:
        """Also loads a generator saved before the arguments in :data:`REMOVED_UNET_ARGUMENTS`
        were deleted, when each was off."""
        config = dict(config)
        for key, off in REMOVED_UNET_ARGUMENTS.items():
            value = config.pop(key, off)
            if value != off and not (key == "background_gain" and not value):
                raise ValueError(f"this generator was saved with {key}={value!r}, which geco-tf no longer has")
        return cls(**config)
