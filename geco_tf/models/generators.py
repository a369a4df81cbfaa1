"""Generators by name: they edit a slice as little as possible so that its scanner cannot be told.

One network per file (paper section 3.1):

* :class:`~geco_tf.models.unet.UNetGenerator` -- the paper's best ("core") generator, ending in tanh;
* :class:`~geco_tf.models.residual.ResidualGenerator` -- ``X + alpha * G(X)`` (eq. 4);
* :class:`~geco_tf.models.multi_residual.MultiResidualGenerator` -- three residual blocks.

All are fully convolutional and map [B, H, W, 1] images in [-1, 1] to the same shape, for any H
and W. This module names them for :func:`build_generator` (``--generator``).
"""

from __future__ import annotations

import keras

from geco_tf.models.multi_residual import MultiResidualGenerator, ResidualBlock
from geco_tf.models.residual import ResidualGenerator
from geco_tf.models.unet import REMOVED_UNET_ARGUMENTS, ConvBlock, UNetGenerator

__all__ = [
    "GENERATORS",
    "REMOVED_UNET_ARGUMENTS",
    "ConvBlock",
    "MultiResidualGenerator",
    "ResidualBlock",
    "ResidualGenerator",
    "UNetGenerator",
    "build_generator",
]

GENERATORS = {"unet": UNetGenerator, "residual": ResidualGenerator, "multi-residual": MultiResidualGenerator}


def build_generator(kind: str = "unet", **kwargs) -> keras.Model:
    """A generator by its CLI name: 'unet' (default), 'residual' or 'multi-residual'."""
    try:
        cls = GENERATORS[kind]
    except KeyError:
        raise ValueError(f"unknown generator {kind!r}: choose one of {', '.join(GENERATORS)}") from None
    return cls(**kwargs)
