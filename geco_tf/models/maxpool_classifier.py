"""The paper's max-pool classifier variant (section 3.1.1): global max pooling after the backbone."""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers

from geco_tf.models.backbone import ConvBackbone

PACKAGE = "geco_tf"


@keras.saving.register_keras_serializable(package=PACKAGE)
class MaxPoolClassifier(keras.Model):
    """The DeepDicomSort convolutions followed by global max pooling: any image size works,
    as long as features are not vastly larger or smaller than in training (paper 3.1.1).

    Args:
        num_classes: classes of the target.
        padding: 'same' (default) or 'valid' convolutions.
        dense_units: units of the dense layer before the logits.
        dropout: dropout rate before the logits.
        backbone_trainable: False freezes the convolutional backbone; ``get_config`` records
            its current state, so a classifier saved frozen reloads frozen.
    """

    def __init__(
        self,
        num_classes: int,
        padding: str = "same",
        dense_units: int = 1024,
        dropout: float = 0.5,
        backbone_trainable: bool = True,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.padding = padding
        self.dense_units = dense_units
        self.dropout_rate = dropout
        self.backbone = ConvBackbone(padding, [1, 2], trainable=backbone_trainable, name="backbone")
        self.pool = layers.GlobalMaxPooling2D(name="global_max")
        self.dense1 = layers.Dense(dense_units, activation="relu", name="dense1")
        self.dropout = layers.Dropout(dropout, name="dropout")
        self.logits = layers.Dense(num_classes, name="logits")
        self.softmax = layers.Activation("softmax", dtype="float32", name="softmax")

    def call(self, x, training=None, return_logits=False):
        """Class probabilities, or with ``return_logits`` the float32 logits."""
        x = self.pool(self.backbone(x, training=training))
        logits = self.logits(self.dropout(self.dense1(x), training=training))
        return tf.cast(logits, "float32") if return_logits else self.softmax(logits)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "padding": self.padding,
            "dense_units": self.dense_units,
            "dropout": self.dropout_rate,
            "backbone_trainable": self.backbone.trainable,
        }
