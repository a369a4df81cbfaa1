"""GECO: a generator that edits slices and a classifier that tries to name their scanner.

:class:`GECO` is a ``keras.Model`` holding the two (three) networks, compiled with one optimizer
per network, whose custom :meth:`GECO.train_step` plays one round of the game (paper 3.1):

1. **Classifier** (``critic_steps`` times): ``CE(Y, C(G(X)))`` -- it only ever sees generated
   images. Optionally half of its batch comes from a *replay pool* of images generated at
   earlier steps (Shrivastava et al. 2017), so the generator cannot win by moving the scanner
   signature to a place the current classifier happens to ignore: the classifier keeps the
   memory of every place the signature has been.
2. **Discriminator** (three-player variant only): ``BCE(1, D(X)) + BCE(0, D(G(X)))``.
3. **Generator**: ``-(1/c) sum_i log C(G(X))_i + beta * sum_pixels (X - G(X))^2`` per image
   (cross-entropy to the uniform distribution: the classifier must be *unsure*, not wrong),
   plus ``BCE(1, D(G(X)))`` in the three-player variant; ``use_mse=False`` drops the pixel term.
   During the first ``warmup_steps`` steps only the pixel term drives the generator, so it starts
   the game as (nearly) the identity and the classifier learns the real signature first.

Every loss is a per-image value averaged over the *global* batch (``tf.nn.compute_average_loss``)
so a ``tf.distribute`` strategy with N replicas takes the same step as one device. With a
:class:`keras.optimizers.LossScaleOptimizer` (mixed_float16) each loss is multiplied by
``optimizer.scale_loss`` before differentiation; the optimizer divides the gradients by the same
scale before applying them (and skips non-finite steps).

Reported values (dict of scalars) are per-replica estimates of the global batch mean.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from geco_tf.metrics import psnr, ssim
from geco_tf.training.augment import shift_and_flip

#: The SSIM controller keeps the fidelity weights within e^-3 .. e^3 (x0.05 .. x20) of their configured values.
BETA_LOG_RANGE = 3.0

PACKAGE = "geco_tf"


def _replicas() -> int:
    return tf.distribute.get_strategy().num_replicas_in_sync


@keras.saving.register_keras_serializable(package=PACKAGE)
class GECO(keras.Model):
    """The GECO game between ``generator``, ``classifier`` and an optional ``discriminator``.

    Args:
        generator: image -> image model in [-1, 1] (e.g. :class:`UNetGenerator`).
        classifier: image -> class probabilities (softmax, float32); called with
            ``return_logits=True`` it must return the logits, which every loss here uses.
        num_classes: classes of the scanner target (``c`` in the loss).
        beta: weight of the per-image *sum* of squared pixel differences, already scaled for
            the image size (see :func:`geco_tf.training.train.effective_beta`).
        discriminator: image -> probability of being an original (its logit with
            ``return_logits=True``); enables the three-player game.
        spectral_classifier: a second adversary with the same task as ``classifier`` that sees
            only Fourier-magnitude features (:class:`geco_tf.models.spectral.SpectralClassifier`);
            it is trained like the classifier and the generator must make it unsure too.
        spectral_weight: weight of the spectral adversary's term in the generator loss.
        critic_steps: classifier updates per generator update (1 to 3 in the paper).
        use_mse: keep the pixel term (False = Table 1's "no MSE" row).
        label_smoothing: for the classifier's cross-entropy; keeps it from becoming so confident
            that the generator's gradient vanishes or explodes.
        disc_weight: weight of the generator's ``BCE(1, D(G(X)))`` term.
        pool_size: images in the replay pool (0 disables it); needs ``image_size``.
        pool_fraction: share of each classifier batch drawn from the pool (once it has images).
        warmup_steps: generator steps with the pixel term only.
        image_size: H = W of the training images (for the pool's storage).
        seed: seed of the pool's stateless random sampling (reproducible across resumes).
        ssim_weight: weight of a per-image ``1 - SSIM(X, G(X))`` term beside the pixel term
            (0 = the paper's loss). MSE spreads the edit wherever it is cheapest in squared
            pixels; the fidelity the acceptance measures is SSIM, which forgives some edits
            (a smooth change of local brightness) far more than others (new local structure).
        ssim_setpoint: if > 0, the fidelity terms' weights (``beta``, ``ssim_weight``) follow a
            controller instead of staying fixed: every step after the warm-up
            ``log s += beta_rate * (setpoint - SSIM_batch) / (1 - setpoint)`` (clipped to
            +-``BETA_LOG_RANGE``) and both weights are multiplied by ``s``, so fidelity tightens
            when the batch's SSIM falls below the set-point and relaxes above it. A fixed beta lets SSIM drift down
            as the classifier hardens; the controller holds the fidelity the user asked for and
            lets the game spend exactly that budget.
        beta_rate: the controller's gain per step.
        classifier_snapshots: K frozen copies of the co-trained classifier, refreshed in turn by
            :meth:`take_snapshot` (``train_geco`` takes one after every epoch's precise BN); the
            generator's adversarial term is the mean over the live classifier and the filled
            snapshots, so it must also fool the classifiers of the last K epochs. The replay
            pool gives the *classifier* a memory of earlier generators; this gives the
            *generator* a memory of earlier classifiers, so it cannot win by moving the
            signature back to where an earlier classifier looked (a cycle).
        generator_ema: if > 0, the decay of an exponential moving average of the generator's
            weights (:attr:`ema_generator`, updated by :meth:`update_ema` after every step),
            which is then the generator the run validates, selects and saves
            (:attr:`output_generator`). In a game the live generator circles round its
            equilibrium as each player answers the other's last move; the average of its
            recent weights sits nearer the centre (Yazici et al., ICLR 2019, "The unusual
            effectiveness of averaging in GAN training").
    """

    def __init__(
        self,
        generator: keras.Model,
        classifier: keras.Model,
        num_classes: int,
        beta: float,
        discriminator: keras.Model | None = None,
        spectral_classifier: keras.Model | None = None,
        spectral_weight: float = 1.0,
        critic_steps: int = 1,
        use_mse: bool = True,
        label_smoothing: float = 0.0,
        disc_weight: float = 1.0,
        pool_size: int = 0,
        pool_fraction: float = 0.5,
        warmup_steps: int = 0,
        image_size: int | None = None,
        seed: int = 0,
        ssim_weight: float = 0.0,
        ssim_setpoint: float = 0.0,
        beta_rate: float = 0.05,
        classifier_snapshots: int = 0,
        generator_ema: float = 0.0,
        classifier_shift: int = 0,
        classifier_flip: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if critic_steps < 1:
            raise ValueError("critic_steps must be >= 1")
        if pool_size and not image_size:
            raise ValueError("a replay pool needs image_size")
        if not 0.0 <= generator_ema < 1.0:
            raise ValueError("generator_ema must be in [0, 1)")
        self.generator = generator
        self.classifier = classifier
        self.discriminator = discriminator
        self.spectral_classifier = spectral_classifier
        self.spectral_weight = float(spectral_weight)
        self.num_classes = int(num_classes)
        self.beta = float(beta)
        self.critic_steps = int(critic_steps)
        self.use_mse = bool(use_mse)
        self.label_smoothing = float(label_smoothing)
        self.disc_weight = float(disc_weight)
        self.pool_size = int(pool_size)
        self.pool_fraction = float(pool_fraction)
        self.warmup_steps = int(warmup_steps)
        self.image_size = image_size
        self.seed = int(seed)
        self.ssim_weight = float(ssim_weight)
        self.ssim_setpoint = float(ssim_setpoint)
        self.beta_rate = float(beta_rate)
        self.classifier_shift = int(classifier_shift)
        self.classifier_flip = bool(classifier_flip)
        self.classifier_snapshots = int(classifier_snapshots)
        self.snapshots = []
        for k in range(self.classifier_snapshots):
            snapshot = type(classifier).from_config({**classifier.get_config(), "name": f"classifier_snapshot{k}"})
            snapshot.trainable = False
            self.snapshots.append(snapshot)
        self.generator_ema = float(generator_ema)
        self.ema_generator = None
        if self.generator_ema:
            self.ema_generator = type(generator).from_config({**generator.get_config(), "name": "generator_ema"})
            self.ema_generator.trainable = False
        # Game state that must survive a resume: the step counter drives warm-up and the
        # pool's random stream; the pool itself is the classifier's memory.
        self.step_counter = self.add_weight(
            name="step", shape=(), dtype="int64", initializer="zeros", trainable=False,
            aggregation="only_first_replica",
        )
        if self.pool_size:
            self.pool_images = self.add_weight(
                name="pool_images", shape=(self.pool_size, image_size, image_size, 1), dtype="float32",
                initializer="zeros", trainable=False, aggregation="only_first_replica",
            )
            self.pool_labels = self.add_weight(
                name="pool_labels", shape=(self.pool_size,), dtype="int32", initializer="zeros",
                trainable=False, aggregation="only_first_replica",
            )
            self.pool_count = self.add_weight(
                name="pool_count", shape=(), dtype="int64", initializer="zeros", trainable=False,
                aggregation="only_first_replica",
            )
        # log(beta / beta_0), moved by the SSIM controller (0 without one)
        self.log_beta_scale = self.add_weight(
            name="log_beta_scale", shape=(), dtype="float32", initializer="zeros", trainable=False,
            aggregation="only_first_replica",
        )
        if self.snapshots:  # snapshots taken so far: picks the next slot and which are filled
            self.snapshot_count = self.add_weight(
                name="snapshot_count", shape=(), dtype="int64", initializer="zeros", trainable=False,
                aggregation="only_first_replica",
            )
        self.accuracy_tracker = keras.metrics.Mean(name="accuracy")
        self.ssim_tracker = keras.metrics.Mean(name="ssim")
        self.psnr_tracker = keras.metrics.Mean(name="psnr")

    # -- Keras plumbing -------------------------------------------------------------------
    def compile(
        self,
        g_optimizer: keras.optimizers.Optimizer,
        c_optimizer: keras.optimizers.Optimizer,
        d_optimizer: keras.optimizers.Optimizer | None = None,
        s_optimizer: keras.optimizers.Optimizer | None = None,
        **kwargs,
    ) -> None:
        """One optimizer per network (``d_optimizer`` only for the three-player game,
        ``s_optimizer`` only with a spectral adversary)."""
        super().compile(**kwargs)
        if self.discriminator is not None and d_optimizer is None:
            raise ValueError("the three-player game needs d_optimizer")
        if self.spectral_classifier is not None and s_optimizer is None:
            raise ValueError("a spectral adversary needs s_optimizer")
        self.g_optimizer = g_optimizer
        self.c_optimizer = c_optimizer
        self.d_optimizer = d_optimizer
        self.s_optimizer = s_optimizer

    def call(self, x, training=None):
        """The output generator's result: GECO used as a model *is* the de-artifacting generator."""
        return self.output_generator(x, training=training)

    @property
    def output_generator(self) -> keras.Model:
        """The generator a run validates, keeps and saves: the weight average
        (:attr:`ema_generator`) with ``generator_ema``, else the trained generator itself."""
        return self.ema_generator if self.ema_generator is not None else self.generator

    def update_ema(self) -> None:
        """``ema = decay * ema + (1 - decay) * weights``, for every weight of the generator.

        Called once per game step outside the replicated ``train_step`` (so it runs in
        cross-replica context, where an assignment reaches every replica's copy)."""
        if self.ema_generator is None:
            return
        decay = self.generator_ema
        for average, weight in zip(self.ema_generator.weights, self.generator.weights):
            average.assign(decay * average.value + (1.0 - decay) * tf.cast(weight.value, average.dtype))

    def build(self, input_shape) -> None:
        """Build all networks (and optimizers' slots) for ``input_shape`` [B, H, W, 1]."""
        x = keras.ops.zeros([1, *input_shape[1:]])
        g = self.generator(x)
        if self.ema_generator is not None:  # the average starts at the initial weights
            self.ema_generator(x)
            for average, weight in zip(self.ema_generator.weights, self.generator.weights):
                average.assign(weight.value)
        self.classifier(g)
        if self.discriminator is not None:
            self.discriminator(g)
        for snapshot in self.snapshots:
            snapshot(g)
        if self.spectral_classifier is not None:
            self.spectral_classifier(g)
            self.s_optimizer.build(self.spectral_classifier.trainable_variables)
        self.g_optimizer.build(self.generator.trainable_variables)
        self.c_optimizer.build(self.classifier.trainable_variables)
        if self.d_optimizer is not None:
            self.d_optimizer.build(self.discriminator.trainable_variables)
        self.built = True

    @property
    def metrics(self) -> list:
        return [self.accuracy_tracker, self.ssim_tracker, self.psnr_tracker]

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "generator": keras.saving.serialize_keras_object(self.generator),
            "classifier": keras.saving.serialize_keras_object(self.classifier),
            "discriminator": (
                keras.saving.serialize_keras_object(self.discriminator) if self.discriminator is not None else None
            ),
            "spectral_classifier": (
                keras.saving.serialize_keras_object(self.spectral_classifier)
                if self.spectral_classifier is not None
                else None
            ),
            "spectral_weight": self.spectral_weight,
            "num_classes": self.num_classes,
            "beta": self.beta,
            "critic_steps": self.critic_steps,
            "use_mse": self.use_mse,
            "label_smoothing": self.label_smoothing,
            "disc_weight": self.disc_weight,
            "pool_size": self.pool_size,
            "pool_fraction": self.pool_fraction,
            "warmup_steps": self.warmup_steps,
            "image_size": self.image_size,
            "seed": self.seed,
            "ssim_weight": self.ssim_weight,
            "ssim_setpoint": self.ssim_setpoint,
            "beta_rate": self.beta_rate,
            "classifier_snapshots": self.classifier_snapshots,
            "generator_ema": self.generator_ema,
            "classifier_shift": self.classifier_shift,
            "classifier_flip": self.classifier_flip,
        }

    @classmethod
    def from_config(cls, config: dict) -> GECO:
        config = dict(config)
        for key in ("generator", "classifier", "discriminator", "spectral_classifier"):
            if config.get(key) is not None:
                config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)

    # -- losses ---------------------------------------------------------------------------
    def classifier_loss(self, y: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
        """Per-image cross-entropy ``CE(Y, C(G(X)))`` with optional label smoothing, from logits."""
        onehot = tf.one_hot(y, self.num_classes, dtype=tf.float32)
        if self.label_smoothing:
            onehot = onehot * (1.0 - self.label_smoothing) + self.label_smoothing / self.num_classes
        return -tf.reduce_sum(onehot * tf.nn.log_softmax(logits, axis=-1), axis=-1)

    def adversarial_loss(self, logits: tf.Tensor) -> tf.Tensor:
        """Per-image ``-(1/c) sum_i log C(G(X))_i``: minimal (log c) at a uniform prediction.

        Computed from logits (``logsumexp(z) - mean(z)``): its gradient, ``softmax(z) - 1/c``,
        never vanishes. From clipped probabilities it did: a classifier sure enough to give the
        other classes less than the clip (1e-7) gave the generator no gradient at all, and in
        the field-strength game, where the classifier was 0.99 right, the generator never moved
        (SSIM 0.999 for 15 epochs).
        """
        return -tf.reduce_mean(tf.nn.log_softmax(logits, axis=-1), axis=-1)

    @staticmethod
    def pixel_loss(x: tf.Tensor, g: tf.Tensor) -> tf.Tensor:
        """Per-image sum of squared differences (beta multiplies this)."""
        return tf.reduce_sum(tf.square(tf.cast(x, tf.float32) - tf.cast(g, tf.float32)), axis=[1, 2, 3])

    def take_snapshot(self) -> int:
        """Copy the co-trained classifier (weights and batch-norm statistics) into the next
        snapshot slot, oldest first. Call it outside ``train_step`` (between epochs). Returns
        the slot."""
        slot = int(self.snapshot_count.numpy()) % self.classifier_snapshots
        for target, source in zip(self.snapshots[slot].weights, self.classifier.weights):
            target.assign(source.value)
        self.snapshot_count.assign_add(1)
        return slot

    @property
    def snapshot_filled(self) -> tf.Tensor:
        """1.0 for each snapshot slot that holds a classifier, else 0.0 (slots fill in order)."""
        slots = tf.range(self.classifier_snapshots, dtype=tf.int64)
        return tf.cast(slots < self.snapshot_count.value, tf.float32)

    # -- the replay pool ------------------------------------------------------------------
    def _pool_mix(self, gx: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """Classifier batch: the current G(X) plus pool images; then store G(X) in the pool.

        Returns images, labels and per-image weights (pool images weigh 0 until the pool holds
        something). Sampling and replacement use stateless randomness seeded by the step, so a
        resumed run draws exactly what an uninterrupted one would.
        """
        batch = tf.shape(gx)[0]
        n_pool = tf.cast(tf.math.ceil(tf.cast(batch, tf.float32) * self.pool_fraction), tf.int32)
        count = tf.cast(tf.minimum(self.pool_count.value, self.pool_size), tf.int32)
        replica = tf.distribute.get_replica_context()
        rid = tf.cast(replica.replica_id_in_sync_group if replica is not None else 0, tf.int64)
        seed = tf.stack([tf.cast(self.seed, tf.int64) * 1000003 + rid, self.step_counter.value])
        idx = tf.random.stateless_uniform([n_pool], seed=seed, minval=0, maxval=tf.maximum(count, 1), dtype=tf.int32)
        old_x = tf.gather(self.pool_images.value, idx)
        old_y = tf.gather(self.pool_labels.value, idx)
        has = tf.cast(count > 0, tf.float32)
        images = tf.concat([gx, old_x], axis=0)
        labels = tf.concat([y, old_y], axis=0)
        weights = tf.concat([tf.ones([batch]), tf.fill([n_pool], has)], axis=0)
        # Store: fill in order until full, then overwrite random slots (older images survive
        # longer than in a ring buffer, so the memory reaches further back).
        fill = tf.cast(self.pool_count.value, tf.int32) + tf.range(batch)
        rand = tf.random.stateless_uniform([batch], seed=seed + tf.constant([7, 0], tf.int64), minval=0, maxval=self.pool_size, dtype=tf.int32)
        slots = tf.where(fill < self.pool_size, fill, rand)
        self.pool_images.assign(tf.tensor_scatter_nd_update(self.pool_images.value, slots[:, None], gx))
        self.pool_labels.assign(tf.tensor_scatter_nd_update(self.pool_labels.value, slots[:, None], y))
        self.pool_count.assign_add(tf.cast(batch, tf.int64))
        return images, labels, weights

    # -- the game -------------------------------------------------------------------------
    def train_step(self, data) -> dict[str, tf.Tensor]:
        """One round: ``critic_steps`` classifier updates, a discriminator update (three-player),
        one generator update. ``data`` is ``(images, labels)`` or ``(images, labels, extra)``."""
        x, y = data[0], tf.cast(data[1], tf.int32)
        x = tf.cast(x, tf.float32)
        replicas = _replicas()
        # The generator runs forward once: its tape records this pass and stops recording while
        # the other networks learn (their updates do not touch the generator's weights, so its
        # gradient at step 3 is the same as from a second forward pass, at ~10% less cost).
        g_tape = tf.GradientTape()
        with g_tape:
            g = tf.cast(self.generator(x, training=True), tf.float32)
        gx = tf.stop_gradient(g)

        # Slices of held-out subjects (``holdout.py``): the classifiers never learn their labels
        # (label -1, weight 0, also in the replay pool) and the generator's adversarial terms
        # are computed on them only. Without the flag every slice plays both roles.
        held = learnt = None  # float flags [B]: 1 for a held-out slice / a slice the classifiers learn
        if len(data) > 2 and isinstance(data[2], dict) and "holdout" in data[2]:
            held = tf.cast(data[2]["holdout"], tf.float32)
            learnt = 1.0 - held
        learn_y = y if held is None else tf.where(held > 0, -1, y)

        # 1. classifier: it sees only generated images
        cls_images, cls_labels, cls_weights = gx, learn_y, None
        if self.pool_size:
            cls_images, cls_labels, cls_weights = self._pool_mix(gx, learn_y)
        if held is not None:
            known = tf.cast(cls_labels >= 0, tf.float32)
            cls_weights = known if cls_weights is None else cls_weights * known
        n = tf.shape(gx)[0]
        cls_loss = tf.constant(0.0)
        cls_acc = tf.constant(0.0)
        for k in range(self.critic_steps):
            cls_loss, logits = self._classifier_update(
                self.classifier, self.c_optimizer, self._augment(cls_images, k), cls_labels, cls_weights, replicas
            )
            cls_acc = _accuracy(logits[:n], y, learnt)
        if held is not None:  # the classifier on slices it never learnt from, as on validation
            cls_holdout_acc = _accuracy(logits[:n], y, held)
        spec_loss = tf.constant(0.0)
        spec_acc = tf.constant(0.0)
        if self.spectral_classifier is not None:
            for _ in range(self.critic_steps):
                spec_loss, logits = self._classifier_update(
                    self.spectral_classifier, self.s_optimizer, cls_images, cls_labels, cls_weights, replicas
                )
                spec_acc = _accuracy(logits[:n], y, learnt)

        # 2. discriminator (three-player game): originals are 1, generated images 0
        disc_loss = tf.constant(0.0)
        if self.discriminator is not None:
            with tf.GradientTape() as tape:
                d_real = self.discriminator(x, training=True, return_logits=True)
                d_fake = self.discriminator(gx, training=True, return_logits=True)
                per_image = _bce(tf.ones_like(d_real), d_real) + _bce(tf.zeros_like(d_fake), d_fake)
                disc_loss = tf.nn.compute_average_loss(per_image)
                scaled = self.d_optimizer.scale_loss(disc_loss)
            grads = tape.gradient(scaled, self.discriminator.trainable_variables)
            self.d_optimizer.apply_gradients(zip(grads, self.discriminator.trainable_variables))

        # 3. generator
        adv_warm = tf.cast(self.step_counter.value >= self.warmup_steps, tf.float32)
        adv_on = adv_warm
        if held is not None:  # adversarial terms from held-out slices, rescaled to the batch mean
            adv_on = adv_on * held * tf.cast(n, tf.float32) / tf.maximum(tf.reduce_sum(held), 1.0)
        with g_tape:
            logits = self.classifier(g, training=True, return_logits=True)
            adv = self.adversarial_loss(logits)
            pix = self.pixel_loss(x, g)
            fooled = adv
            if self.snapshots:  # mean over the live classifier and the filled snapshots
                filled = self.snapshot_filled
                snapshot_adv = [self.adversarial_loss(s(g, training=False, return_logits=True)) for s in self.snapshots]
                fooled = (adv + sum(filled[k] * a for k, a in enumerate(snapshot_adv))) / (1.0 + tf.reduce_sum(filled))
            per_image = adv_on * fooled
            if self.spectral_classifier is not None:
                spec_adv = self.adversarial_loss(self.spectral_classifier(g, training=True, return_logits=True))
                per_image = per_image + adv_on * self.spectral_weight * spec_adv
            scale = tf.exp(self.log_beta_scale.value)
            if self.use_mse:
                per_image = per_image + scale * self.beta * pix
            # SSIM only when a term or the controller needs it: it adds a blur pass to every step
            batch_ssim = ssim(x, g) if self.ssim_weight or self.ssim_setpoint else None
            if self.ssim_weight:
                per_image = per_image + scale * self.ssim_weight * (1.0 - batch_ssim)
            if self.discriminator is not None:
                d_logit = self.discriminator(g, training=True, return_logits=True)
                fool = _bce(tf.ones_like(d_logit), d_logit)
                per_image = per_image + adv_warm * self.disc_weight * fool
            gen_loss = tf.nn.compute_average_loss(per_image)
            scaled = self.g_optimizer.scale_loss(gen_loss)
        if self.generator.trainable_variables:  # a frozen generator (e.g. a classifier-only phase)
            grads = g_tape.gradient(scaled, self.generator.trainable_variables)
            self.g_optimizer.apply_gradients(zip(grads, self.generator.trainable_variables))
        self.step_counter.assign_add(1)
        if self.ssim_setpoint:
            error = (self.ssim_setpoint - _global_mean(batch_ssim)) / (1.0 - self.ssim_setpoint)
            self.log_beta_scale.assign(
                tf.clip_by_value(self.log_beta_scale + adv_warm * self.beta_rate * error, -BETA_LOG_RANGE, BETA_LOG_RANGE)
            )

        pixels = tf.cast(tf.reduce_prod(tf.shape(x)[1:]), tf.float32)
        out = {
            "gen_loss": gen_loss * replicas,
            "gen_adv_loss": tf.reduce_mean(adv) if held is None else _weighted_mean(adv, held),
            "gen_mse": tf.reduce_mean(pix) / pixels,
            "cls_loss": cls_loss * replicas,
            "cls_accuracy": cls_acc,
        }
        if held is not None:
            out["cls_holdout_accuracy"] = cls_holdout_acc
        if self.snapshots:
            out["gen_snapshot_adv_loss"] = tf.reduce_mean(tf.stack(snapshot_adv))
        if batch_ssim is not None:
            out["gen_ssim"] = tf.reduce_mean(batch_ssim)
        if self.ssim_setpoint:
            out["beta_scale"] = scale
        if self.discriminator is not None:
            out["disc_loss"] = disc_loss * replicas
        if self.spectral_classifier is not None:
            out.update(spec_loss=spec_loss * replicas, spec_accuracy=spec_acc, gen_spec_adv_loss=tf.reduce_mean(spec_adv))
        return out

    def _augment(self, images: tf.Tensor, critic_step: int) -> tf.Tensor:
        """The CNN classifier's learning batch shifted and mirrored (``augment.py``), a fresh draw
        for every step, critic step and replica, seeded by the step counter (resumable). The
        spectral adversary learns from G(X) as it is: its Fourier magnitudes do not say where the
        anatomy lies, and a mirror or a reflected edge would change them."""
        if not self.classifier_shift and not self.classifier_flip:
            return images
        replica = tf.distribute.get_replica_context()
        rid = tf.cast(replica.replica_id_in_sync_group if replica is not None else 0, tf.int64)
        seed = tf.stack([tf.cast(self.seed, tf.int64) * 1000003 + 97 * rid + critic_step, self.step_counter.value])
        return shift_and_flip(images, seed, self.classifier_shift, self.classifier_flip)

    def _classifier_update(self, network, optimizer, images, labels, weights, replicas):
        """One update of a classifier (the CNN or the spectral adversary) on generated images:
        ``CE(Y, C(G(X)))``, pool images weighted by ``weights``. Returns (loss, logits)."""
        with tf.GradientTape() as tape:
            logits = network(images, training=True, return_logits=True)
            per_image = self.classifier_loss(labels, logits)
            if weights is not None:
                loss = tf.math.divide_no_nan(tf.reduce_sum(per_image * weights), tf.reduce_sum(weights) * replicas)
            else:
                loss = tf.nn.compute_average_loss(per_image)
            scaled = optimizer.scale_loss(loss)
        grads = tape.gradient(scaled, network.trainable_variables)
        optimizer.apply_gradients(zip(grads, network.trainable_variables))
        return loss, logits

    def test_step(self, data) -> dict[str, tf.Tensor]:
        """Co-trained accuracy on G(X), SSIM and PSNR of G(X) against X (running means), G the
        :attr:`output_generator`."""
        x, y = tf.cast(data[0], tf.float32), tf.cast(data[1], tf.int32)
        g = tf.cast(self.output_generator(x, training=False), tf.float32)
        probs = self.classifier(g, training=False)
        correct = tf.cast(tf.equal(tf.argmax(probs, -1, output_type=tf.int32), y), tf.float32)
        self.accuracy_tracker.update_state(correct)
        self.ssim_tracker.update_state(ssim(x, g))
        self.psnr_tracker.update_state(psnr(x, g))
        return {m.name: m.result() for m in self.metrics}


def _global_mean(values: tf.Tensor) -> tf.Tensor:
    """Mean over the global batch (all replicas), so every replica moves beta alike."""
    replica = tf.distribute.get_replica_context()
    total = tf.reduce_sum(values)
    count = tf.cast(tf.size(values), tf.float32)
    if replica is not None and replica.num_replicas_in_sync > 1:
        total, count = replica.all_reduce("sum", total), replica.all_reduce("sum", count)
    return total / count


def _accuracy(logits: tf.Tensor, y: tf.Tensor, weights: tf.Tensor | None = None) -> tf.Tensor:
    """Share of rows (of those with weight 1) whose largest logit is the label."""
    correct = tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), y), tf.float32)
    return tf.reduce_mean(correct) if weights is None else _weighted_mean(correct, weights)


def _weighted_mean(values: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
    """``sum(w v) / sum(w)``, 0 when every weight is 0."""
    return tf.math.divide_no_nan(tf.reduce_sum(values * weights), tf.reduce_sum(weights))


def _bce(target: tf.Tensor, logit: tf.Tensor) -> tf.Tensor:
    """Per-image binary cross-entropy of logits [B, 1] (stable, never saturating)."""
    return tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(labels=target, logits=logit), axis=-1)
