"""Discriminator for the three-player variant (paper section 3.1.1): real X (1) vs G(X) (0).

A small PatchGAN-style network (Isola et al. 2017): strided 4x4 convolutions judge local
texture, and the patch scores are averaged into one probability, so any image size works.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers

PACKAGE = "geco_tf"


@keras.saving.register_keras_serializable(package=PACKAGE)
class Discriminator(keras.Model):
    """Probability [B, 1] that each image is an unmodified original.

    Args:
        base_filters: filters of the first convolution, doubled at each of ``depth`` levels.
        depth: number of stride-2 convolutions.
    """

    def __init__(self, base_filters: int = 32, depth: int = 3, **kwargs) -> None:
        super().__init__(**kwargs)
        self.base_filters = base_filters
        self.depth = depth
        self.convs = [
            layers.Conv2D(base_filters * 2**i, 4, strides=2, padding="same", name=f"conv{i + 1}") for i in range(depth)
        ]
        self.norms = [
            layers.Identity(name="norm1") if i == 0 else layers.GroupNormalization(groups=-1, name=f"norm{i + 1}")
            for i in range(depth)
        ]
        self.act = layers.LeakyReLU(0.2)
        self.patch = layers.Conv2D(1, 3, padding="same", name="patch_logits")
        self.pool = layers.GlobalAveragePooling2D(name="average_patches")
        self.sigmoid = layers.Activation("sigmoid", dtype="float32", name="sigmoid")

    def call(self, x, training=None, return_logits=False):
        """Probability of being an original, or with ``return_logits`` its float32 logit."""
        for conv, norm in zip(self.convs, self.norms):
            x = self.act(norm(conv(x)))
        logit = self.pool(self.patch(x))
        return tf.cast(logit, "float32") if return_logits else self.sigmoid(logit)

    def get_config(self) -> dict:
        return {**super().get_config(), "base_filters": self.base_filters, "depth": self.depth}
