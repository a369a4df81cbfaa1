"""Classifiers by name: they try to tell the scanner from a slice (one network per file).

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
(64 -> 60 -> 56 -> 18 -> 14 -> 10 -> 3 -> fails), so both take a ``padding`` option (:mod:`geco_tf.models.backbone`);
:func:`choose_padding` picks 'valid' when the image is large enough and 'same' otherwise.
"""

from __future__ import annotations

import keras

from geco_tf.models.backbone import choose_padding, feature_size
from geco_tf.models.dds_classifier import DDSClassifier
from geco_tf.models.maxpool_classifier import MaxPoolClassifier

__all__ = ["CLASSIFIERS", "PRELU_SHARED_AXES", "DDSClassifier", "MaxPoolClassifier", "build_classifier", "choose_padding"]

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
