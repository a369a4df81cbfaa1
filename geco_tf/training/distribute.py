"""Scale-out through ``tf.distribute``: ``--strategy auto | mirrored | multiworker``.

* ``auto``: :class:`tf.distribute.MirroredStrategy` over all GPUs when there are two or more,
  else the default (single-device) strategy.
* ``mirrored``: synchronous data parallelism on one machine over all GPUs, or over all logical
  CPU devices when there is no GPU (that is how the tests exercise it on a CPU).
* ``multiworker``: :class:`tf.distribute.MultiWorkerMirroredStrategy`; the cluster comes from
  the ``TF_CONFIG`` environment variable (without it this is a one-worker cluster).

The train step averages every loss over the *global* batch (``tf.nn.compute_average_loss``)
and the Keras optimizer sums gradients over replicas, so N replicas of B/N images take the same
step as one device with B images.
"""

from __future__ import annotations

import tensorflow as tf

from geco_tf.errors import UserError

STRATEGIES = ("auto", "mirrored", "multiworker")


def get_strategy(name: str = "auto") -> tf.distribute.Strategy:
    """The :class:`tf.distribute.Strategy` for a ``--strategy`` value."""
    if name not in STRATEGIES:
        raise UserError(f"--strategy {name!r}: choose one of {', '.join(STRATEGIES)}")
    gpus = tf.config.list_logical_devices("GPU")
    if name == "auto":
        return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    if name == "mirrored":
        if gpus:
            return tf.distribute.MirroredStrategy()
        cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices=cpus, cross_device_ops=tf.distribute.ReductionToOneDevice())
    return tf.distribute.MultiWorkerMirroredStrategy()


def describe(strategy: tf.distribute.Strategy) -> dict:
    """What the run's config records about the strategy."""
    return {"class": type(strategy).__name__, "replicas": int(strategy.num_replicas_in_sync)}
