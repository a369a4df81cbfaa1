"""The paper's multi-residual generator: three residual blocks of two convolutions each (3.1.2)."""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers

from geco_tf.models.unet import ConvBlock

PACKAGE = "geco_tf"


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
    the input with a learnable scale as in the residual generator (paper section 3.1.2).

    Args:
        filters: channels of the stem and of every block.
        blocks: residual blocks (3 in the paper).
        norm: 'instance' (default), 'batch' or None.
        alpha_init: initial scale of the edit.
    """

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
