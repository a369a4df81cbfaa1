"""The paper's residual generator, ``X' = X + alpha * G(X)`` (eq. 4, section 3.1.2)."""

from __future__ import annotations

import keras
import tensorflow as tf

from geco_tf.models.unet import UNetGenerator

PACKAGE = "geco_tf"


@keras.saving.register_keras_serializable(package=PACKAGE)
class ResidualGenerator(keras.Model):
    """``X' = X + alpha * G(X)`` (paper eq. 4): the generator learns the edit, not the image.

    ``G`` is the paper's :class:`UNetGenerator` (tanh output, no identity start of its own);
    ``alpha`` is a learnable scalar, so the network sets the size of its own edits.

    Args:
        depth: U-Net levels of ``G``.
        base_filters: filters of ``G`` at full resolution.
        norm: normalisation of ``G``: 'instance' (default), 'batch' or None.
        alpha_init: initial ``alpha``.
    """

    def __init__(
        self, depth: int = 3, base_filters: int = 16, norm: str | None = "instance", alpha_init: float = 0.1, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        self.depth = depth
        self.base_filters = base_filters
        self.norm = norm
        self.alpha_init = alpha_init
        self.body = UNetGenerator(depth, base_filters, norm, input_skip=False, name="body")
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
