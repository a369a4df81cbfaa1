"""The warm-up: the generator's first steps use the pixel term only (beyond the paper).

For ``warmup_steps`` steps (100 by default, about two epochs of the built-in data) the
adversarial terms of the generator's loss are multiplied by 0, so the generator stays (nearly)
the identity while the classifiers learn the *real* scanner signature from nearly original
images; when the game starts, the generator's first adversarial gradients point at that
signature rather than at whatever an untrained classifier happens to respond to.

Why it is on by default (``docs/method.md``, "warm-up"; ``docs/results.md``, runs E1-E3): with
it the co-trained classifier has learnt the target before it is fooled, and epochs that end
inside the warm-up are never kept as the final ones (run E2's lowest co-trained accuracy was its
first epoch, an untouched image that a fresh audit classified at 0.90). The ``paper`` preset
turns it off (``warmup_steps = 0``).
"""

from __future__ import annotations

import tensorflow as tf


def adversarial_weight(step: tf.Tensor, warmup_steps: int) -> tf.Tensor:
    """1.0 once ``step`` (the game's step counter) has reached ``warmup_steps``, else 0.0."""
    return tf.cast(step >= warmup_steps, tf.float32)
