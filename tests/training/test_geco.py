"""GECO's game, one step at a time: losses, train step, the replay pool, mixed precision and
the best-epoch rule. Whole runs are in ``test_geco_runs.py``."""

from __future__ import annotations

import inspect
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from geco_tf.errors import UserError
from geco_tf.models import MaxPoolClassifier, UNetGenerator
from geco_tf.training.geco import GECO
from geco_tf.training.precision import precision_policy, resolve_precision, wrap_optimizer
from geco_tf.training.run import first_learnt_epoch, learnt_accuracy, make_checkpoint, select_best
from geco_tf.training.train import effective_beta


def _game(policy: str = "float32", pool_size: int = 0, warmup: int = 0, input_skip: bool = False, **kwargs) -> GECO:
    with precision_policy(policy):
        model = GECO(
            UNetGenerator(depth=2, base_filters=4, input_skip=input_skip),
            MaxPoolClassifier(4, padding="same", dense_units=16, dropout=0.0),
            num_classes=4,
            beta=effective_beta(0.02, 32, 32),
            pool_size=pool_size,
            warmup_steps=warmup,
            image_size=32,
            **kwargs,
        )
        model.compile(
            g_optimizer=wrap_optimizer(keras.optimizers.Adam(1e-3), policy),
            c_optimizer=wrap_optimizer(keras.optimizers.Adam(1e-3), policy),
        )
        model.build((None, 32, 32, 1))
    return model


def _batch(seed: int = 0, n: int = 8):
    rng = np.random.default_rng(seed)
    x = np.tanh(rng.standard_normal((n, 32, 32, 1))).astype(np.float32)
    y = (np.arange(n) % 4).astype(np.int32)
    return tf.constant(x), tf.constant(y)


def test_losses_match_their_definitions():
    model = _game()
    probs = tf.constant([[0.25, 0.25, 0.25, 0.25], [0.7, 0.1, 0.1, 0.1]])
    logits = tf.math.log(probs) + 3.0  # any shift: softmax(logits) == probs
    adv = model.adversarial_loss(logits).numpy()
    np.testing.assert_allclose(adv, -np.log(probs.numpy()).mean(axis=1), rtol=1e-6)
    assert adv[0] < adv[1]  # uniform prediction is the generator's optimum
    y = tf.constant([0, 0])
    np.testing.assert_allclose(model.classifier_loss(y, logits).numpy(), -np.log([0.25, 0.7]), rtol=1e-6)
    # a classifier far beyond any probability clip still gives the generator a gradient
    sure = tf.constant([[40.0, 0.0, 0.0, 0.0]])
    with tf.GradientTape() as tape:
        tape.watch(sure)
        loss = model.adversarial_loss(sure)
    np.testing.assert_allclose(tape.gradient(loss, sure).numpy(), [[0.75, -0.25, -0.25, -0.25]], atol=1e-6)
    x, _ = _batch()
    g = tf.zeros_like(x)
    np.testing.assert_allclose(model.pixel_loss(x, g).numpy(), (x.numpy() ** 2).sum(axis=(1, 2, 3)), rtol=1e-5)


def test_beta_is_scaled_to_the_image_area():
    assert effective_beta(0.02, 512, 512) == pytest.approx(0.02)
    assert effective_beta(0.02, 64, 64) == pytest.approx(0.02 * 64)
    assert effective_beta(0.02, 64, 64, "none") == pytest.approx(0.02)


@pytest.mark.slow
def test_train_step_trains_both_players_and_warmup_reduces_pixel_error():
    keras.utils.set_random_seed(0)
    model = _game(pool_size=16, warmup=1000)
    x, y = _batch()
    g0 = [v.numpy().copy() for v in model.generator.trainable_variables]
    c0 = [v.numpy().copy() for v in model.classifier.trainable_variables]
    step = tf.function(model.train_step)
    mses = [float(step((x, y))["gen_mse"]) for _ in range(8)]
    assert mses[-1] < 0.8 * mses[0]  # warm-up: pixel term only, G moves toward identity
    assert any(not np.allclose(a, b.numpy()) for a, b in zip(g0, model.generator.trainable_variables))
    assert any(not np.allclose(a, b.numpy()) for a, b in zip(c0, model.classifier.trainable_variables))
    assert int(model.step_counter.numpy()) == 8
    # the pool filled in order with the generated images' labels
    assert int(model.pool.count.numpy()) == 8 * 8
    assert set(model.pool.labels.numpy().tolist()) == {0, 1, 2, 3}


@pytest.mark.slow
def test_classifier_learns_generated_images_when_generator_is_frozen():
    keras.utils.set_random_seed(1)
    model = _game(critic_steps=2)
    model.generator.trainable = False
    x, y = _batch(1)
    step = tf.function(model.train_step)
    losses = [float(step((x, y))["cls_loss"]) for _ in range(8)]
    assert losses[-1] < losses[0]


@pytest.mark.slow
def test_mixed_float16_steps_are_finite_and_variables_stay_float32():
    keras.utils.set_random_seed(2)
    model = _game("mixed_float16", pool_size=16)
    assert isinstance(model.g_optimizer, keras.optimizers.LossScaleOptimizer)
    assert isinstance(model.c_optimizer, keras.optimizers.LossScaleOptimizer)
    assert model.generator.layers[0].compute_dtype == "float16" or model.generator.compute_dtype == "float16"
    x, y = _batch(2)
    before = [v.numpy().copy() for v in model.generator.trainable_variables]
    step = tf.function(model.train_step)
    for _ in range(4):
        out = step((x, y))
        assert all(math.isfinite(float(v)) for v in out.values())
    for v in model.generator.trainable_variables + model.classifier.trainable_variables:
        assert v.dtype == "float32"
    # Either the update went through, or a float16 overflow of the scaled gradients was caught:
    # the step was skipped (weights intact) and the loss scale halved (initial scale 32768).
    changed = any(not np.allclose(a, b.numpy()) for a, b in zip(before, model.generator.trainable_variables))
    assert changed or float(model.g_optimizer.dynamic_scale.numpy()) < 32768.0
    assert all(np.all(np.isfinite(v.numpy())) for v in model.generator.trainable_variables)
    assert model.generator(x).dtype == tf.float32 and model.classifier(x).dtype == tf.float32


def test_precision_auto_is_float32_without_gpu():
    if not tf.config.list_physical_devices("GPU"):
        assert resolve_precision("auto") == "float32"
    with pytest.raises(UserError):
        resolve_precision("float8")


def test_best_epoch_rule():
    rows = [
        {"epoch": 1, "val_accuracy_cotrained": 0.25, "val_ssim": 0.90},
        {"epoch": 2, "val_accuracy_cotrained": 0.40, "val_ssim": 0.975},
        {"epoch": 3, "val_accuracy_cotrained": 0.30, "val_ssim": 0.98},
        {"epoch": 4, "val_accuracy_cotrained": 0.60, "val_ssim": 0.99},
    ]
    best, met = select_best(rows, 0.97)
    assert best["epoch"] == 3 and met
    best, met = select_best(rows, 0.995)
    assert best["epoch"] == 4 and not met
    # an epoch inside the generator's warm-up cannot win, however low its accuracy
    played = [{**r, "step": 10 * r["epoch"]} for r in rows]
    played[0]["val_ssim"] = 1.0
    assert select_best(played, 0.97, warmup_steps=15)[0]["epoch"] == 3
    assert select_best(played, 0.97, warmup_steps=0)[0]["epoch"] == 1
    # with a spectral adversary the higher of the two co-trained accuracies counts
    played[2]["val_accuracy_spectral"] = 0.70
    assert select_best(played, 0.97, warmup_steps=15)[0]["epoch"] == 2


def test_best_epoch_counts_only_once_an_adversary_has_learnt_the_target():
    # validation accuracies of a field-strength run (2 classes, seed 1 of the compromise
    # protocol): its classifier was still at chance in epochs 1-3 and learnt in epoch 4
    accuracy = [0.500, 0.544, 0.513, 0.766, 0.732, 0.828, 0.789, 0.719, 0.734, 0.714, 0.625, 0.708]
    rows = [
        {"epoch": e, "step": 46 * e, "val_accuracy_cotrained": a, "val_ssim": 0.98}
        for e, a in enumerate(accuracy, start=1)
    ]
    assert learnt_accuracy(2) == 0.75 and learnt_accuracy(4) == 0.625
    assert first_learnt_epoch(rows, 0.75) == 4 and first_learnt_epoch(rows, None) == 1
    assert select_best(rows, 0.97, warmup_steps=100)[0]["epoch"] == 3  # the old rule: untrained classifier
    best, met = select_best(rows, 0.97, warmup_steps=100, learnt=0.75)
    assert best["epoch"] == 11 and met
    # a warm-up epoch may show that the classifier learnt (G is the identity there) ...
    rows[0]["val_accuracy_cotrained"] = 0.9
    assert select_best(rows, 0.97, warmup_steps=100, learnt=0.75)[0]["epoch"] == 3
    # ... and when no adversary ever learnt, no accuracy is evidence: the highest SSIM is kept
    flat = [{**r, "val_accuracy_cotrained": 0.55, "val_ssim": 0.98 + r["epoch"] / 1000} for r in rows[:5]]
    best, met = select_best(flat, 0.97, warmup_steps=100, learnt=0.75)
    assert best["epoch"] == 5 and not met


@pytest.mark.slow
def test_the_replay_pool_goes_through_the_checkpoint(tmp_path):
    """A resumed run's classifiers keep their memory of earlier generators: the pool's images,
    labels and count are restored from the checkpoint."""
    keras.utils.set_random_seed(8)
    model = _game(pool_size=16)
    step = tf.function(model.train_step)
    for seed in range(3):
        step(_batch(seed))
    path = make_checkpoint(model, tf.Variable(1, dtype=tf.int64)).write(str(tmp_path / "ckpt"))
    other = _game(pool_size=16)
    assert int(other.pool.count.numpy()) == 0
    make_checkpoint(other, tf.Variable(0, dtype=tf.int64)).read(path).assert_existing_objects_matched()
    assert int(other.pool.count.numpy()) == 24
    np.testing.assert_array_equal(other.pool.images.numpy(), model.pool.images.numpy())
    assert np.abs(other.pool.images.numpy()).max() > 0


def test_a_pool_image_weighs_nothing_until_the_pool_holds_one():
    """The classifier's first batch is G(X) alone in effect: the pool's slots (zeros) weigh 0."""
    model = _game(pool_size=8)
    gx, y = _batch(0, n=4)
    images, labels, weights = model.pool.mix(gx, y, tf.constant(0, tf.int64))
    assert images.shape[0] == 4 + 2 and labels.shape[0] == 6  # pool_fraction 0.5 of the batch
    np.testing.assert_array_equal(weights.numpy(), [1, 1, 1, 1, 0, 0])
    _, _, weights = model.pool.mix(gx, y, tf.constant(1, tf.int64))
    np.testing.assert_array_equal(weights.numpy(), [1] * 6)


def test_the_three_player_losses_are_the_papers():
    """Section 3.1.1: D learns BCE(1, D(X)) + BCE(0, D(G(X))); eq. 3 adds BCE(1, D(G(X))) to G."""
    real, fake = tf.constant([[2.0], [-1.0]]), tf.constant([[0.5], [-3.0]])
    sig = lambda z: 1.0 / (1.0 + np.exp(-z))  # noqa: E731
    expected = -np.log(sig(real.numpy()[:, 0])) - np.log(1.0 - sig(fake.numpy()[:, 0]))
    np.testing.assert_allclose(GECO.discriminator_loss(real, fake).numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(GECO.realism_loss(fake).numpy(), -np.log(sig(fake.numpy()[:, 0])), rtol=1e-5)


def test_the_game_fits_on_one_screen():
    """The whole round (classifier, discriminator, generator updates) stays readable: at most
    60 lines from ``def`` to the method's last line."""
    lines = inspect.getsource(GECO.train_step).rstrip().splitlines()
    assert len(lines) <= 60, f"GECO.train_step has {len(lines)} lines"
