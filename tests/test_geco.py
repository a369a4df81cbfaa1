"""GECO's game, one step at a time: losses, train step, the SSIM controller, mixed precision,
the best-epoch rule, classifier snapshots and the generator average. Whole runs are in
``test_geco_runs.py``."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from geco_tf.errors import UserError
from geco_tf.models import MaxPoolClassifier, UNetGenerator
from geco_tf.training.geco import BETA_LOG_RANGE, GECO
from geco_tf.training.precision import precision_policy, resolve_precision, wrap_optimizer
from geco_tf.training.run import first_learnt_epoch, learnt_accuracy, make_checkpoint, select_best
from geco_tf.training.train import effective_beta, fidelity_terms


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
    assert int(model.pool_count.numpy()) == 8 * 8
    assert set(model.pool_labels.numpy().tolist()) == {0, 1, 2, 3}


def test_classifier_learns_generated_images_when_generator_is_frozen():
    keras.utils.set_random_seed(1)
    model = _game(critic_steps=2)
    model.generator.trainable = False
    x, y = _batch(1)
    step = tf.function(model.train_step)
    losses = [float(step((x, y))["cls_loss"]) for _ in range(8)]
    assert losses[-1] < losses[0]


def test_ssim_term_alone_pulls_a_random_generator_towards_the_input():
    keras.utils.set_random_seed(3)
    model = _game(warmup=1000, use_mse=False, ssim_weight=1.0)  # adversaries off: SSIM term only
    x, y = _batch(3)
    step = tf.function(model.train_step)
    ssims = [float(step((x, y))["gen_ssim"]) for _ in range(10)]
    assert ssims[-1] > ssims[0] + 0.01
    # without it (and without the pixel term) nothing pulls G towards X: no gradient at all
    keras.utils.set_random_seed(3)
    idle = _game(warmup=1000, use_mse=False)
    before = [v.numpy().copy() for v in idle.generator.trainable_variables]
    tf.function(idle.train_step)((x, y))
    assert all(np.allclose(a, b.numpy()) for a, b in zip(before, idle.generator.trainable_variables))


@pytest.mark.parametrize("setpoint, direction", [(0.9999, 1), (0.5, -1)])
def test_ssim_setpoint_raises_beta_below_it_and_lowers_it_above(setpoint, direction):
    keras.utils.set_random_seed(4)
    # a generator that starts as the identity (SSIM ~0.999): below 0.9999, far above 0.5
    model = _game(ssim_setpoint=setpoint, beta_rate=0.1, input_skip=True)
    x, y = _batch(4)
    step = tf.function(model.train_step)
    scales = [float(step((x, y))["beta_scale"]) for _ in range(4)]
    assert scales[0] == pytest.approx(1.0)  # the first step uses the configured beta
    log_scale = float(model.log_beta_scale.numpy())
    assert direction * log_scale > 0
    assert abs(log_scale) <= BETA_LOG_RANGE + 1e-6  # clipped
    assert direction * (scales[-1] - 1.0) > 0  # and later steps used the moved beta


def test_the_ssim_controllers_state_is_checkpointed_for_resume(tmp_path):
    """A resumed ``--ssim-setpoint`` run continues with the beta its controller had reached,
    not from the configured beta again."""
    from geco_tf.training.run import make_checkpoint

    keras.utils.set_random_seed(4)
    model = _game(ssim_setpoint=0.9999, beta_rate=0.1, input_skip=True)
    step = tf.function(model.train_step)
    for _ in range(3):
        step(_batch(4))
    moved = float(model.log_beta_scale.numpy())
    assert moved > 0
    path = make_checkpoint(model, tf.Variable(1, dtype=tf.int64)).write(str(tmp_path / "ckpt"))
    fresh = _game(ssim_setpoint=0.9999, beta_rate=0.1, input_skip=True)
    assert float(fresh.log_beta_scale.numpy()) == 0.0
    make_checkpoint(fresh, tf.Variable(0, dtype=tf.int64)).read(path).assert_existing_objects_matched()
    assert float(fresh.log_beta_scale.numpy()) == pytest.approx(moved)


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


def test_classifier_snapshots_are_frozen_copies_the_generator_must_also_fool():
    keras.utils.set_random_seed(5)
    model = _game(classifier_snapshots=2)
    step = tf.function(model.train_step)
    x, y = _batch(1)
    logs = step((x, y))
    # before any snapshot is filled the term is the live classifier's alone
    assert float(model.snapshot_filled.numpy().sum()) == 0.0
    assert "gen_snapshot_adv_loss" in logs
    assert model.take_snapshot() == 0
    live = [w.numpy().copy() for w in model.classifier.weights]
    for a, b in zip(model.snapshots[0].weights, live):
        np.testing.assert_array_equal(a.numpy(), b)
    step((x, y))
    # the live classifier learnt, the snapshot did not (frozen: no gradient, no BN update)
    assert any(not np.array_equal(w.numpy(), b) for w, b in zip(model.classifier.weights, live))
    for a, b in zip(model.snapshots[0].weights, live):
        np.testing.assert_array_equal(a.numpy(), b)
    assert [model.take_snapshot(), model.take_snapshot()] == [1, 0]  # in turn, oldest replaced
    np.testing.assert_array_equal(model.snapshot_filled.numpy(), [1.0, 1.0])
    assert GECO.from_config(model.get_config()).classifier_snapshots == 2


def test_a_snapshot_changes_the_generators_gradient():
    """With a filled snapshot the adversarial term averages two classifiers, so the generator's
    update differs from the same step with the snapshot slot empty."""
    x, y = _batch(2)
    updates = []
    for fill in (False, True):
        keras.utils.set_random_seed(6)
        model = _game(classifier_snapshots=1)
        for w in model.snapshots[0].trainable_weights:  # a different classifier than the live one
            w.assign(np.random.default_rng(1).normal(0, 0.1, w.shape).astype(np.float32))
        if fill:
            model.snapshot_count.assign(1)  # slot 0 holds a classifier
        before = [w.numpy().copy() for w in model.generator.trainable_weights]
        model.train_step((x, y))
        updates.append(np.concatenate([(w.numpy() - b).ravel() for w, b in zip(model.generator.trainable_weights, before)]))
    assert np.abs(updates[0] - updates[1]).max() > 1e-6


def test_fidelity_option_picks_the_generator_terms():
    assert fidelity_terms("mse", 20.0) == (True, 0.0)  # the paper's loss
    assert fidelity_terms("ssim", 20.0) == (False, 20.0)
    assert fidelity_terms("mse+ssim", 5.0) == (True, 5.0)
    assert fidelity_terms("ssim", 20.0, no_mse=True) == (False, 0.0)  # Table 1's last row: none
    with pytest.raises(UserError, match="--fidelity"):
        fidelity_terms("l1", 1.0)


def test_generator_ema_averages_the_generators_weights_and_is_the_output():
    keras.utils.set_random_seed(7)
    model = _game(generator_ema=0.75)
    assert model.output_generator is model.ema_generator
    for a, w in zip(model.ema_generator.weights, model.generator.weights):
        np.testing.assert_array_equal(a.numpy(), w.numpy())  # starts at the initial weights
    before = [w.numpy().copy() for w in model.ema_generator.weights]
    model.train_step(_batch(3))
    # the step moves the generator only; the average follows when update_ema is called
    for a, b in zip(model.ema_generator.weights, before):
        np.testing.assert_array_equal(a.numpy(), b)
    model.update_ema()
    moved = False
    for a, b, w in zip(model.ema_generator.weights, before, model.generator.weights):
        np.testing.assert_allclose(a.numpy(), 0.75 * b + 0.25 * w.numpy(), rtol=1e-6, atol=1e-7)
        moved |= not np.array_equal(w.numpy(), b)
    assert moved
    x = _batch(4)[0]
    np.testing.assert_allclose(np.asarray(model(x)), np.asarray(model.ema_generator(x)), atol=1e-6)
    assert GECO.from_config(model.get_config()).generator_ema == 0.75
    plain = _game()
    assert plain.ema_generator is None and plain.output_generator is plain.generator


def test_the_generator_average_goes_through_the_checkpoint(tmp_path):
    keras.utils.set_random_seed(8)
    model = _game(generator_ema=0.5)
    model.train_step(_batch(5))
    model.update_ema()
    path = make_checkpoint(model, tf.Variable(1, dtype=tf.int64)).write(str(tmp_path / "ckpt"))
    keras.utils.set_random_seed(9)
    other = _game(generator_ema=0.5)
    make_checkpoint(other, tf.Variable(0, dtype=tf.int64)).read(path).assert_existing_objects_matched()
    for a, b in zip(other.ema_generator.weights, model.ema_generator.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


