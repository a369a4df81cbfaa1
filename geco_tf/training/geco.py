"""GECO: a generator that edits slices and a classifier that tries to name their scanner.

:class:`GECO` is a ``keras.Model`` holding the networks, compiled with one optimizer per network,
whose :meth:`GECO.train_step` plays one round of the game of the paper's section 3.1:

1. **Classifier** (``critic_steps`` times), eq. 2: ``CE(Y, C(G(X)))`` -- it only ever sees
   generated images.
2. **Discriminator** (three-player variant only, 3.1.1): ``BCE(1, D(X)) + BCE(0, D(G(X)))``.
3. **Generator**, eq. 1: ``-(1/c) sum_i log C(G(X))_i + beta * sum_pixels (X - G(X))^2`` per
   image (cross-entropy to the uniform distribution: the classifier must be *unsure*, not
   wrong), plus eq. 3's ``BCE(1, D(G(X)))`` in the three-player variant; ``use_mse=False``
   drops the pixel term (Table 1's last row).

Each loss term is a method of its own below, named after its equation. What this project adds
to the paper, each in a module that says what it measured: a replay pool of earlier generated
images for the classifiers (:mod:`geco_tf.training.replay_pool`), a second adversary that sees
Fourier magnitudes (:mod:`geco_tf.models.spectral`), the warm-up (:mod:`geco_tf.training.warmup`),
and, outside the game, the output band (:mod:`geco_tf.models.band`) and the fresh selection probe
(:mod:`geco_tf.training.fresh_probe`).

Every loss is a per-image value averaged over the *global* batch (``tf.nn.compute_average_loss``)
so a ``tf.distribute`` strategy with N replicas takes the same step as one device. With a
:class:`keras.optimizers.LossScaleOptimizer` (mixed_float16) each loss is multiplied by
``optimizer.scale_loss`` before differentiation; the optimizer divides the gradients by the same
scale before applying them (and skips non-finite steps). Reported values (dict of scalars) are
per-replica estimates of the global batch mean.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from geco_tf.metrics import psnr, ssim
from geco_tf.training.replay_pool import ReplayPool
from geco_tf.training.warmup import adversarial_weight

PACKAGE = "geco_tf"

#: Reported losses that are global-batch averages (``compute_average_loss``): multiplied by the
#: number of replicas to report each replica's estimate of the batch mean.
AVERAGED_LOSSES = ("gen_loss", "cls_loss", "spec_loss", "disc_loss")


@keras.saving.register_keras_serializable(package=PACKAGE)
class GECO(keras.Model):
    """The GECO game between ``generator``, ``classifier`` and an optional ``discriminator``.

    Args:
        generator: image -> image model in [-1, 1] (e.g. :class:`UNetGenerator`).
        classifier: image -> class probabilities (softmax, float32); called with
            ``return_logits=True`` it must return the logits, which every loss here uses.
        num_classes: classes of the scanner target (``c`` in eq. 1).
        beta: weight of the per-image *sum* of squared pixel differences, already scaled for
            the image size (:func:`geco_tf.training.train.effective_beta`).
        discriminator: image -> probability of being an original (its logit with
            ``return_logits=True``); enables the three-player game.
        spectral_classifier: a second adversary with the classifier's task that sees only
            Fourier-magnitude features (:class:`geco_tf.models.spectral.SpectralClassifier`);
            trained like the classifier, and the generator must make it unsure too.
        spectral_weight: weight of the spectral adversary's term in the generator loss.
        critic_steps: classifier updates per generator update (1 or 2 in the paper).
        use_mse: keep the pixel term (False = Table 1's "no MSE" row).
        label_smoothing: of the classifiers' cross-entropy; keeps them from becoming so confident
            that the generator's gradient vanishes or explodes.
        disc_weight: weight of the generator's ``BCE(1, D(G(X)))`` term.
        pool_size: images in the replay pool (0 = none); needs ``image_size``.
        pool_fraction: share of each classifier batch drawn from the pool (once it has images).
        warmup_steps: generator steps with the pixel term only.
        image_size: H = W of the training images (for the pool's storage).
        seed: seed of the pool's stateless random sampling (reproducible across resumes).
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
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if critic_steps < 1:
            raise ValueError("critic_steps must be >= 1")
        if pool_size and not image_size:
            raise ValueError("a replay pool needs image_size")
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
        # Game state that must survive a resume: the step counter drives the warm-up and the
        # pool's random stream; the pool itself is the classifiers' memory.
        self.step_counter = self.add_weight(
            name="step", shape=(), dtype="int64", initializer="zeros", trainable=False,
            aggregation="only_first_replica",
        )
        self.pool = (
            ReplayPool(self.pool_size, image_size, self.pool_fraction, self.seed, name="replay_pool")
            if self.pool_size
            else None
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
        """The generator's result: GECO used as a model *is* the de-artifacting generator."""
        return self.generator(x, training=training)

    @property
    def output_generator(self) -> keras.Model:
        """The generator a run validates, keeps and saves."""
        return self.generator

    def build(self, input_shape) -> None:
        """Build all networks (and optimizers' slots) for ``input_shape`` [B, H, W, 1]."""
        x = keras.ops.zeros([1, *input_shape[1:]])
        g = self.generator(x)
        self.classifier(g)
        if self.discriminator is not None:
            self.discriminator(g)
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
        def serialize(network):
            return keras.saving.serialize_keras_object(network) if network is not None else None

        return {
            **super().get_config(),
            "generator": serialize(self.generator),
            "classifier": serialize(self.classifier),
            "discriminator": serialize(self.discriminator),
            "spectral_classifier": serialize(self.spectral_classifier),
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
        }

    @classmethod
    def from_config(cls, config: dict) -> GECO:
        config = dict(config)
        for key in ("generator", "classifier", "discriminator", "spectral_classifier"):
            if config.get(key) is not None:
                config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)

    # -- the loss terms -------------------------------------------------------------------
    def classifier_loss(self, y: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
        """Eq. 2, ``L_disc = CE(Y, C(G(X)))`` per image, from logits, with optional label
        smoothing (not in the paper; ``label_smoothing``)."""
        onehot = tf.one_hot(y, self.num_classes, dtype=tf.float32)
        if self.label_smoothing:
            onehot = onehot * (1.0 - self.label_smoothing) + self.label_smoothing / self.num_classes
        return -tf.reduce_sum(onehot * tf.nn.log_softmax(logits, axis=-1), axis=-1)

    @staticmethod
    def adversarial_loss(logits: tf.Tensor) -> tf.Tensor:
        """Eq. 1's first term, ``-(1/c) sum_i log C(G(X))_i`` per image: minimal (log c) at a
        uniform prediction.

        Computed from logits (``logsumexp(z) - mean(z)``): its gradient, ``softmax(z) - 1/c``,
        never vanishes. From clipped probabilities it did: a classifier sure enough to give the
        other classes less than the clip (1e-7) gave the generator no gradient at all, and in
        the field-strength game, where the classifier was 0.99 right, the generator never moved
        (SSIM 0.999 for 15 epochs).
        """
        return -tf.reduce_mean(tf.nn.log_softmax(logits, axis=-1), axis=-1)

    @staticmethod
    def pixel_loss(x: tf.Tensor, g: tf.Tensor) -> tf.Tensor:
        """Eq. 1's second term without beta: the per-image sum of squared pixel differences."""
        return tf.reduce_sum(tf.square(tf.cast(x, tf.float32) - tf.cast(g, tf.float32)), axis=[1, 2, 3])

    @staticmethod
    def discriminator_loss(real_logits: tf.Tensor, fake_logits: tf.Tensor) -> tf.Tensor:
        """Section 3.1.1's discriminator: ``BCE(1, D(X)) + BCE(0, D(G(X)))`` per image."""
        return _bce(tf.ones_like(real_logits), real_logits) + _bce(tf.zeros_like(fake_logits), fake_logits)

    @staticmethod
    def realism_loss(fake_logits: tf.Tensor) -> tf.Tensor:
        """Eq. 3's added term for the generator, ``BCE(1, D(G(X)))`` per image: look original."""
        return _bce(tf.ones_like(fake_logits), fake_logits)

    # -- the game -------------------------------------------------------------------------
    def train_step(self, data) -> dict[str, tf.Tensor]:
        """One round (paper 3.1): ``critic_steps`` updates of each classifier on G(X) (eq. 2),
        one of the discriminator (three-player, 3.1.1), one of the generator (eq. 1; eq. 3 in
        the three-player game). ``data`` is ``(images, labels)``."""
        x, y = tf.cast(data[0], tf.float32), tf.cast(data[1], tf.int32)
        # G runs forward once: its tape pauses while the other networks learn (their updates do
        # not touch G's weights, so its gradient is that of a second pass, at ~10% less cost).
        g_tape = tf.GradientTape()
        with g_tape:
            g = tf.cast(self.generator(x, training=True), tf.float32)
        gx = tf.stop_gradient(g)
        n = tf.shape(gx)[0]

        # 1. the classifiers learn the scanner from generated images only (eq. 2)
        images, labels, weights = gx, y, None
        if self.pool is not None:
            images, labels, weights = self.pool.mix(gx, y, self.step_counter.value)
        for _ in range(self.critic_steps):
            cls_loss, logits = self._fit_classifier(self.classifier, self.c_optimizer, images, labels, weights)
        out = {"cls_loss": cls_loss, "cls_accuracy": _accuracy(logits[:n], y)}
        if self.spectral_classifier is not None:
            for _ in range(self.critic_steps):
                spec_loss, logits = self._fit_classifier(
                    self.spectral_classifier, self.s_optimizer, images, labels, weights
                )
            out.update(spec_loss=spec_loss, spec_accuracy=_accuracy(logits[:n], y))

        # 2. three-player game: the discriminator learns originals (1) from generated images (0)
        if self.discriminator is not None:
            out["disc_loss"] = self._fit_discriminator(x, gx)

        # 3. the generator: make the adversaries unsure and stay close to X (eq. 1, eq. 3)
        game_on = adversarial_weight(self.step_counter.value, self.warmup_steps)
        with g_tape:
            adv = self.adversarial_loss(self.classifier(g, training=True, return_logits=True))
            pix = self.pixel_loss(x, g)
            per_image = game_on * adv
            if self.spectral_classifier is not None:
                spec_adv = self.adversarial_loss(self.spectral_classifier(g, training=True, return_logits=True))
                per_image = per_image + game_on * self.spectral_weight * spec_adv
                out["gen_spec_adv_loss"] = tf.reduce_mean(spec_adv)
            if self.use_mse:
                per_image = per_image + self.beta * pix
            if self.discriminator is not None:
                realism = self.realism_loss(self.discriminator(g, training=True, return_logits=True))
                per_image = per_image + game_on * self.disc_weight * realism
            gen_loss = tf.nn.compute_average_loss(per_image)
            scaled = self.g_optimizer.scale_loss(gen_loss)
        if self.generator.trainable_variables:  # a frozen generator (e.g. a classifier-only phase)
            grads = g_tape.gradient(scaled, self.generator.trainable_variables)
            self.g_optimizer.apply_gradients(zip(grads, self.generator.trainable_variables))
        self.step_counter.assign_add(1)

        pixels = tf.cast(tf.reduce_prod(tf.shape(x)[1:]), tf.float32)
        out.update(gen_loss=gen_loss, gen_adv_loss=tf.reduce_mean(adv), gen_mse=tf.reduce_mean(pix) / pixels)
        replicas = _replicas()
        return {k: v * replicas if k in AVERAGED_LOSSES else v for k, v in out.items()}

    def _fit_classifier(self, network, optimizer, images, labels, weights):
        """One update of a classifier (the CNN or the spectral adversary) on generated images,
        eq. 2, replay-pool images weighted by ``weights``. Returns (loss, logits)."""
        with tf.GradientTape() as tape:
            logits = network(images, training=True, return_logits=True)
            per_image = self.classifier_loss(labels, logits)
            if weights is not None:
                loss = tf.math.divide_no_nan(tf.reduce_sum(per_image * weights), tf.reduce_sum(weights) * _replicas())
            else:
                loss = tf.nn.compute_average_loss(per_image)
            scaled = optimizer.scale_loss(loss)
        grads = tape.gradient(scaled, network.trainable_variables)
        optimizer.apply_gradients(zip(grads, network.trainable_variables))
        return loss, logits

    def _fit_discriminator(self, x: tf.Tensor, gx: tf.Tensor) -> tf.Tensor:
        """One update of the discriminator (:meth:`discriminator_loss`). Returns the loss."""
        with tf.GradientTape() as tape:
            d_real = self.discriminator(x, training=True, return_logits=True)
            d_fake = self.discriminator(gx, training=True, return_logits=True)
            loss = tf.nn.compute_average_loss(self.discriminator_loss(d_real, d_fake))
            scaled = self.d_optimizer.scale_loss(loss)
        grads = tape.gradient(scaled, self.discriminator.trainable_variables)
        self.d_optimizer.apply_gradients(zip(grads, self.discriminator.trainable_variables))
        return loss

    def test_step(self, data) -> dict[str, tf.Tensor]:
        """Co-trained accuracy on G(X), SSIM and PSNR of G(X) against X (running means)."""
        x, y = tf.cast(data[0], tf.float32), tf.cast(data[1], tf.int32)
        g = tf.cast(self.generator(x, training=False), tf.float32)
        probs = self.classifier(g, training=False)
        correct = tf.cast(tf.equal(tf.argmax(probs, -1, output_type=tf.int32), y), tf.float32)
        self.accuracy_tracker.update_state(correct)
        self.ssim_tracker.update_state(ssim(x, g))
        self.psnr_tracker.update_state(psnr(x, g))
        return {m.name: m.result() for m in self.metrics}


def _replicas() -> int:
    return tf.distribute.get_strategy().num_replicas_in_sync


def _accuracy(logits: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
    """Share of rows whose largest logit is the label."""
    return tf.reduce_mean(tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), y), tf.float32))


def _bce(target: tf.Tensor, logit: tf.Tensor) -> tf.Tensor:
    """Per-image binary cross-entropy of logits [B, 1] (stable, never saturating)."""
    return tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(labels=target, logits=logit), axis=-1)
