"""Numeric precision for training: ``auto | float32 | mixed_float16 | mixed_bfloat16``.

Mixed precision computes in 16 bits and keeps variables in float32 (Keras dtype policies). With
float16 the small gradients of the adversarial losses underflow, so both (all three) optimizers
are wrapped in :class:`keras.optimizers.LossScaleOptimizer`: the custom train step multiplies
each loss by the current scale (``optimizer.scale_loss``) before differentiating, and the
wrapper divides the gradients by the same scale before the update, skipping the step and
halving the scale when they are not finite. bfloat16 has float32's exponent range and needs no
scaling. The models' last activations (tanh, softmax, sigmoid) are declared float32, so
outputs, losses and metrics are always float32.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import keras
import tensorflow as tf

from geco_tf.errors import UserError

PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")


def resolve_precision(precision: str = "auto") -> str:
    """The concrete policy name: 'auto' is mixed_float16 when a GPU is visible, else float32
    (16-bit arithmetic is slower than float32 on most CPUs)."""
    if precision not in PRECISIONS:
        raise UserError(f"--precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "mixed_float16" if tf.config.list_physical_devices("GPU") else "float32"
    return precision


@contextlib.contextmanager
def precision_policy(policy: str) -> Iterator[str]:
    """Set the global Keras dtype policy for building models, restoring the old one after."""
    old = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy(policy)
    try:
        yield policy
    finally:
        keras.mixed_precision.set_dtype_policy(old)


def wrap_optimizer(optimizer: keras.optimizers.Optimizer, policy: str) -> keras.optimizers.Optimizer:
    """Wrap ``optimizer`` in a dynamic :class:`LossScaleOptimizer` when ``policy`` is float16."""
    if policy == "mixed_float16" and not isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer
