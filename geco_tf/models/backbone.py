"""DeepDicomSort's convolutional backbone, shared by both co-trained classifiers.

Six 5x5 convolutions 32-32-64-64-64-64, each with batch norm and PReLU, 3x3 max-pooling after
each pair (Klein et al. 2021). DeepDicomSort's valid convolutions and 3x3 pools shrink anything
under ~200 px to nothing (64 -> 60 -> 56 -> 18 -> 14 -> 10 -> 3 -> fails), so the backbone takes
a ``padding`` option; :func:`choose_padding` picks 'valid' when the image is large enough and
'same' otherwise.
"""

from __future__ import annotations

import keras
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
