"""The replay pool: the classifiers' memory of earlier generators (beyond the paper).

Half of each classifier batch (``pool_fraction``) is drawn from images the generator produced
at earlier steps (Shrivastava et al., CVPR 2017, "Learning from simulated and unsupervised images
through adversarial training"). Without it the generator can win a round by moving the scanner
signature to a place the *current* classifier happens to ignore, and the classifier, which only
ever sees the current G(X), forgets where the signature used to be; the game then cycles. With a
pool the classifier keeps the memory of every place the signature has been.

Why it is on by default (``docs/method.md``, "replay pool"): it is the classic remedy for a
co-trained discriminator that chases the generator, and every GECO run in ``docs/results.md``
since run E1 (the first with validation after precise batch norm) had it on (512 images, fraction
0.5); no run measured the game without it on the built-in data, so it stays until one shows it
is not needed. The ``paper`` preset turns it off (``pool_size = 0``).

Sampling and replacement use stateless randomness seeded by (seed, replica, step), so a resumed
run draws exactly what an uninterrupted one would; the pool's variables are in the checkpoint.
"""

from __future__ import annotations

import keras
import tensorflow as tf


class ReplayPool(keras.layers.Layer):
    """``size`` generated images of ``image_size`` x ``image_size`` with their labels.

    Args:
        size: images kept (> 0).
        image_size: H = W of the training images.
        fraction: share of each classifier batch drawn from the pool (once it holds images).
        seed: seed of the pool's stateless sampling.
    """

    def __init__(self, size: int, image_size: int, fraction: float = 0.5, seed: int = 0, **kwargs) -> None:
        super().__init__(**kwargs)
        if size < 1 or not image_size:
            raise ValueError("a replay pool needs size >= 1 and image_size")
        self.size = int(size)
        self.image_size = int(image_size)
        self.fraction = float(fraction)
        self.seed = int(seed)
        self.images = self.add_weight(
            name="pool_images", shape=(self.size, image_size, image_size, 1), dtype="float32",
            initializer="zeros", trainable=False, aggregation="only_first_replica",
        )
        self.labels = self.add_weight(
            name="pool_labels", shape=(self.size,), dtype="int32", initializer="zeros",
            trainable=False, aggregation="only_first_replica",
        )
        self.count = self.add_weight(
            name="pool_count", shape=(), dtype="int64", initializer="zeros", trainable=False,
            aggregation="only_first_replica",
        )

    def mix(self, gx: tf.Tensor, y: tf.Tensor, step: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """The classifier's batch: the current G(X) plus pool images; then store G(X) in the pool.

        Returns images, labels and per-image weights (pool images weigh 0 until the pool holds
        something). ``step`` is the game's step counter (int64), which seeds the draws.
        """
        batch = tf.shape(gx)[0]
        n_pool = tf.cast(tf.math.ceil(tf.cast(batch, tf.float32) * self.fraction), tf.int32)
        count = tf.cast(tf.minimum(self.count.value, self.size), tf.int32)
        replica = tf.distribute.get_replica_context()
        rid = tf.cast(replica.replica_id_in_sync_group if replica is not None else 0, tf.int64)
        seed = tf.stack([tf.cast(self.seed, tf.int64) * 1000003 + rid, step])
        idx = tf.random.stateless_uniform([n_pool], seed=seed, minval=0, maxval=tf.maximum(count, 1), dtype=tf.int32)
        old_x = tf.gather(self.images.value, idx)
        old_y = tf.gather(self.labels.value, idx)
        has = tf.cast(count > 0, tf.float32)
        images = tf.concat([gx, old_x], axis=0)
        labels = tf.concat([y, old_y], axis=0)
        weights = tf.concat([tf.ones([batch]), tf.fill([n_pool], has)], axis=0)
        # Store: fill in order until full, then overwrite random slots (older images survive
        # longer than in a ring buffer, so the memory reaches further back).
        fill = tf.cast(self.count.value, tf.int32) + tf.range(batch)
        rand = tf.random.stateless_uniform(
            [batch], seed=seed + tf.constant([7, 0], tf.int64), minval=0, maxval=self.size, dtype=tf.int32
        )
        slots = tf.where(fill < self.size, fill, rand)
        self.images.assign(tf.tensor_scatter_nd_update(self.images.value, slots[:, None], gx))
        self.labels.assign(tf.tensor_scatter_nd_update(self.labels.value, slots[:, None], y))
        self.count.assign_add(tf.cast(batch, tf.int64))
        return images, labels, weights

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "size": self.size,
            "image_size": self.image_size,
            "fraction": self.fraction,
            "seed": self.seed,
        }
