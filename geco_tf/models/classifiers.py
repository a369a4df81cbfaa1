"""Classifiers that try to tell the scanner from a slice.

* :class:`DDSClassifier` -- DeepDicomSort's structure (Klein et al. 2021): six 5x5 convolutions
  32-32-64-64-64-64, each with batch norm and PReLU, 3x3 max-pooling after each pair, flatten,
  two dense layers of 1024, dropout, softmax. With ``padding='valid'`` and per-position PReLU
  alphas it is exactly the DeepDicomSort backbone (see :mod:`geco_tf.models.deepdicomsort`).
  :func:`build_classifier` (GECO, the audit) gives it per-channel alphas unless asked for
  ``prelu='position'``: one alpha per pixel and channel ties the network to one image size, adds
  4.8M weights at 256 px (20M at 512 px) with their Adam state, and costs memory passes in every
  step. Only the DeepDicomSort baseline, which loads or reproduces the published model, uses them.
* :class:`MaxPoolClassifier` -- the same convolutions, then global max pooling, so the dense
  head always sees 64 features and any image size works (paper section 3.1.1).

DeepDicomSort's valid convolutions and 3x3 pools shrink anything under ~200 px to nothing
(64 -> 60 -> 56 -> 18 -> 14 -> 10 -> 3 -> fails), so both take a ``padding`` option;
:func:`choose_padding` picks 'valid' when the image is large enough and 'same' otherwise.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers

from geco_tf.models import normalization

PACKAGE = "geco_tf"
CONV_FILTERS = (32, 32, 64, 64, 64, 64)
KERNEL = 5
POOL = 3


def feature_size(image_size: int, padding: str) -> int:
    """Spatial size after the six convolutions and three pools (0 when it vanishes)."""
    size = image_size
    for i in range(len(CONV_FILTERS)):
        if padding == "valid":
            size -= KERNEL - 1
        if size <= 0:
            return 0
        if i % 2 == 1:
            size //= POOL
    return max(size, 0)


def choose_padding(image_size: int) -> str:
    """'valid' (DeepDicomSort's own layout) when it leaves at least a 3x3 map, else 'same'."""
    return "valid" if feature_size(image_size, "valid") >= 3 else "same"


@keras.saving.register_keras_serializable(package=PACKAGE)
class ConvBackbone(layers.Layer):
    """DeepDicomSort's convolutional backbone: (Conv 5x5 -> BN -> PReLU) x 6, pool after pairs.

    The batch norms are :class:`geco_tf.models.normalization.BatchNormalization` (a
    ``keras.layers.BatchNormalization`` with the same variables, computed by one fused kernel).

    ``prelu_shared_axes=None`` gives one alpha per position and channel, as in the original
    (tying the layer to one input size); ``[1, 2]`` shares alpha over space (any size).
    """

    def __init__(self, padding: str = "valid", prelu_shared_axes: list[int] | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.padding = padding
        self.prelu_shared_axes = list(prelu_shared_axes) if prelu_shared_axes is not None else None
        self.convs, self.norms, self.prelus, self.pools = [], [], [], []
        for i, filters in enumerate(CONV_FILTERS):
            self.convs.append(layers.Conv2D(filters, KERNEL, padding=padding, name=f"conv{i + 1}"))
            self.norms.append(normalization.BatchNormalization(name=f"bn{i + 1}"))
            self.prelus.append(layers.PReLU(shared_axes=self.prelu_shared_axes, name=f"prelu{i + 1}"))
            if i % 2 == 1:
                self.pools.append(layers.MaxPooling2D(POOL, name=f"pool{i // 2 + 1}"))
        if not self.trainable:
            # from_config passes trainable=False before the sublayers exist, and Keras does not
            # pass it on to them: freeze them here so a backbone saved frozen reloads frozen.
            for layer in self.convs + self.norms + self.prelus:
                layer.trainable = False

    def call(self, x, training=None):
        for i in range(len(CONV_FILTERS)):
            x = self.prelus[i](self.norms[i](self.convs[i](x), training=training))
            if i % 2 == 1:
                x = self.pools[i // 2](x)
        return x

    def get_config(self) -> dict:
        return {**super().get_config(), "padding": self.padding, "prelu_shared_axes": self.prelu_shared_axes}


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


@keras.saving.register_keras_serializable(package=PACKAGE)
class MaxPoolClassifier(keras.Model):
    """The DeepDicomSort convolutions followed by global max pooling: any image size works,
    as long as features are not vastly larger or smaller than in training (paper 3.1.1).
    ``backbone_trainable`` as in :class:`DDSClassifier`."""

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


CLASSIFIERS = {"dds": DDSClassifier, "maxpool": MaxPoolClassifier}
#: PReLU alpha layouts of :func:`build_classifier`: the ``shared_axes`` of each.
PRELU_SHARED_AXES = {"channel": [1, 2], "position": None}


def build_classifier(
    kind: str, num_classes: int, image_size: int, padding: str = "auto", prelu: str = "channel", **kwargs
) -> keras.Model:
    """A classifier by its CLI name ('dds' or 'maxpool') for ``image_size`` images.

    ``padding='auto'`` resolves with :func:`choose_padding`. ``prelu`` is the PReLU alpha layout:
    'channel' (one alpha per channel, shared over space; the default at every size) or, for
    'dds' only, 'position' (one alpha per position and channel, DeepDicomSort's own layout, which
    ties the classifier to ``image_size``). Raises ValueError when a DDS classifier with the
    requested padding cannot fit the image size.
    """
    if kind not in CLASSIFIERS:
        raise ValueError(f"unknown classifier {kind!r}: choose one of {', '.join(CLASSIFIERS)}")
    if prelu not in PRELU_SHARED_AXES:
        raise ValueError(f"unknown PReLU layout {prelu!r}: choose one of {', '.join(PRELU_SHARED_AXES)}")
    if kind == "maxpool" and prelu != "channel":
        raise ValueError("the maxpool classifier works at any size and has per-channel PReLU alphas only")
    if padding == "auto":
        padding = choose_padding(image_size)
    if kind == "dds" and feature_size(image_size, padding) < 1:
        raise ValueError(
            f"DDS classifier with padding={padding!r} does not fit {image_size}x{image_size} images "
            "(the feature map vanishes); use --classifier maxpool or padding 'same'"
        )
    if "prelu_shared_axes" in kwargs:
        raise TypeError("build_classifier takes prelu='channel' or 'position', not prelu_shared_axes")
    if kind == "dds":
        axes = PRELU_SHARED_AXES[prelu]
        kwargs["prelu_shared_axes"] = list(axes) if axes is not None else None
    return CLASSIFIERS[kind](num_classes=num_classes, padding=padding, **kwargs)
