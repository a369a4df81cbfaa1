"""The paper's co-trained classifier: DeepDicomSort's structure (paper section 3.1).

The backbone (:class:`~geco_tf.models.backbone.ConvBackbone`), flatten, two dense layers of
1024, dropout, softmax. With ``padding='valid'`` and per-position PReLU alphas it is exactly the
DeepDicomSort network (:mod:`geco_tf.models.deepdicomsort`); GECO and the audit use per-channel
alphas (``build_classifier``), which keep it small and free of one image size.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers

from geco_tf.models.backbone import ConvBackbone

PACKAGE = "geco_tf"


@keras.saving.register_keras_serializable(package=PACKAGE)
class DDSClassifier(keras.Model):
    """DeepDicomSort-style classifier: backbone, flatten, Dense 1024, Dense 1024 ReLU, softmax.

    Args:
        num_classes: classes of the target.
        padding: 'valid' (DeepDicomSort) or 'same' (small images); see :func:`choose_padding`.
        prelu_shared_axes: None for per-position alphas (DeepDicomSort), [1, 2] for per-channel.
        dropout: dropout rate before each dense block.
        backbone_trainable: False freezes the convolutional backbone (fine-tuning the head on
            pretrained features); ``get_config`` records the backbone's current state, so a
            classifier saved with a frozen backbone reloads frozen.
    """

    def __init__(
        self,
        num_classes: int,
        padding: str = "valid",
        prelu_shared_axes: list[int] | None = None,
        dense_units: int = 1024,
        dropout: float = 0.5,
        backbone_trainable: bool = True,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.padding = padding
        self.prelu_shared_axes = prelu_shared_axes
        self.dense_units = dense_units
        self.dropout_rate = dropout
        self.backbone = ConvBackbone(padding, prelu_shared_axes, trainable=backbone_trainable, name="backbone")
        self.flatten = layers.Flatten(name="flatten")
        self.dropout1 = layers.Dropout(dropout, name="dropout1")
        self.dense1 = layers.Dense(dense_units, name="dense1")
        self.dense2 = layers.Dense(dense_units, activation="relu", name="dense2")
        self.dropout2 = layers.Dropout(dropout, name="dropout2")
        self.logits = layers.Dense(num_classes, name="logits")
        self.softmax = layers.Activation("softmax", dtype="float32", name="softmax")

    def call(self, x, training=None, return_logits=False):
        """Class probabilities, or with ``return_logits`` the float32 logits before the softmax
        (what a loss should use: a saturated softmax has no gradient)."""
        x = self.flatten(self.backbone(x, training=training))
        x = self.dense2(self.dense1(self.dropout1(x, training=training)))
        logits = self.logits(self.dropout2(x, training=training))
        return tf.cast(logits, "float32") if return_logits else self.softmax(logits)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "padding": self.padding,
            "prelu_shared_axes": self.prelu_shared_axes,
            "dense_units": self.dense_units,
            "dropout": self.dropout_rate,
            "backbone_trainable": self.backbone.trainable,
        }
