"""GECO's game: losses, train step, mixed precision, run directory, best epoch, errors."""

from __future__ import annotations

import csv
import json
import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from test_geco_helpers import make_tiny_dataset, tiny_data  # noqa: F401 - fixture

from geco_tf.errors import UserError
from geco_tf.models import MaxPoolClassifier, UNetGenerator
from geco_tf.training.geco import BETA_LOG_RANGE, GECO
from geco_tf.training.precision import precision_policy, resolve_precision, wrap_optimizer
from geco_tf.training.run import make_checkpoint, select_best
from geco_tf.training.train import DEFAULTS, effective_beta, fidelity_terms, train_geco

SMALL = {"base_filters": 4, "depth": 2, "classifier": "maxpool", "batch_size": 8, "warmup_steps": 2, "pool_size": 32}


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


def test_train_geco_writes_the_run_directory(tiny_data, tmp_path):  # noqa: F811
    out = tmp_path / "run"
    metrics = train_geco(tiny_data, out, epochs=2, progress=False, selection_probe="fourier", **SMALL)
    for name in ("config.json", "history.csv", "generator.keras", "classifier.keras", "metrics.json"):
        assert (out / name).is_file(), name
    assert list((out / "logs").glob("events.out.tfevents.*"))
    assert (out / "checkpoints" / "ckpt-1.index").exists() and (out / "checkpoints" / "ckpt-2.index").exists()
    lines = (out / "history.csv").read_text().splitlines()
    assert lines[0].startswith("epoch,gen_loss,gen_adv_loss,gen_mse,gen_ssim,beta_scale,cls_loss")
    assert [line.split(",")[0] for line in lines[1:]] == ["1", "2"]
    rows = list(csv.DictReader(lines))
    assert all(0.0 <= float(r["val_accuracy_probe"]) <= 1.0 for r in rows)  # the fresh probe, every epoch
    config = json.loads((out / "config.json").read_text())
    assert config["resolved"]["beta_effective"] == pytest.approx(DEFAULTS["beta"] * 512**2 / 32**2)
    assert config["resolved"]["classifier_padding"] == "same"
    assert config["resolved"]["fidelity_terms"] == {"pixel_mse": True, "ssim_weight": 0.0}  # the paper's loss
    for key in ("target", "classes", "n_test", "accuracy_cotrained", "chance", "ssim", "psnr", "per_modality",
                "confusion_cotrained", "best_epoch"):
        assert key in metrics
    assert json.loads((out / "metrics.json").read_text())["best_epoch"] == metrics["best_epoch"]
    assert sum(map(sum, metrics["confusion_cotrained"])) == metrics["n_test"]
    gen = keras.saving.load_model(out / "generator.keras", compile=False)
    assert gen(np.zeros((1, 40, 24, 1), np.float32)).shape == (1, 40, 24, 1)  # any size
    # an existing run is not overwritten without --resume
    with pytest.raises(UserError, match="--resume"):
        train_geco(tiny_data, out, epochs=1, progress=False, **SMALL)


def test_ssim_fidelity_run_records_its_terms_and_controller(tiny_data, tmp_path):  # noqa: F811
    out = tmp_path / "ssim"
    train_geco(tiny_data, out, epochs=1, progress=False, fidelity="ssim", ssim_setpoint=0.975, **SMALL)
    config = json.loads((out / "config.json").read_text())
    assert config["resolved"]["fidelity_terms"] == {"pixel_mse": False, "ssim_weight": DEFAULTS["ssim_weight"]}
    rows = list(csv.DictReader((out / "history.csv").read_text().splitlines()))
    assert all(0.0 < float(r["gen_ssim"]) <= 1.0 and float(r["beta_scale"]) > 0.0 for r in rows)


def test_noise_channel_run_saves_a_stochastic_generator(tiny_data, tmp_path):  # noqa: F811
    out = tmp_path / "noise"
    train_geco(tiny_data, out, epochs=1, progress=False, noise_channels=1, **SMALL)
    config = json.loads((out / "config.json").read_text())
    assert config["options"]["noise_channels"] == 1
    gen = keras.saving.load_model(out / "generator.keras", compile=False)
    assert gen.noise_channels == 1
    x = np.tanh(np.random.default_rng(0).standard_normal((2, 32, 32, 1))).astype(np.float32)
    z = np.zeros((2, 32, 32, 1), np.float32)
    np.testing.assert_array_equal(np.asarray(gen(x, noise=z)), np.asarray(gen(x, noise=z)))
    assert np.isfinite(np.asarray(gen(x))).all()


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


def test_a_snapshot_run_checkpoints_and_resumes_its_snapshots(tiny_data, tmp_path):  # noqa: F811
    out = tmp_path / "snap"
    train_geco(tiny_data, out, epochs=1, progress=False, classifier_snapshots=2, **SMALL)
    stored = tf.train.load_variable(str(out / "checkpoints" / "ckpt-1"), "snapshot_count/.ATTRIBUTES/VARIABLE_VALUE")
    assert stored == 1  # one snapshot per epoch
    train_geco(tiny_data, out, resume=True, epochs=2, progress=False)
    assert tf.train.load_variable(str(out / "checkpoints" / "ckpt-2"), "snapshot_count/.ATTRIBUTES/VARIABLE_VALUE") == 2
    assert json.loads((out / "config.json").read_text())["options"]["classifier_snapshots"] == 2


def test_a_run_from_before_the_fidelity_option_resumes_with_the_papers_loss(tiny_data, tmp_path):  # noqa: F811
    out = tmp_path / "old"
    train_geco(tiny_data, out, epochs=1, progress=False, fidelity="ssim", ssim_setpoint=0.975, **SMALL)
    config = json.loads((out / "config.json").read_text())
    for key in ("fidelity", "ssim_weight", "ssim_setpoint", "beta_rate"):
        del config["options"][key]  # as written before these options existed
    (out / "config.json").write_text(json.dumps(config))
    train_geco(tiny_data, out, resume=True, epochs=2, progress=False)
    resumed = json.loads((out / "config.json").read_text())
    assert resumed["options"]["fidelity"] == "mse" and resumed["options"]["ssim_setpoint"] == 0.0
    assert resumed["resolved"]["fidelity_terms"] == {"pixel_mse": True, "ssim_weight": 0.0}


def test_fidelity_option_picks_the_generator_terms():
    assert fidelity_terms("mse", 20.0) == (True, 0.0)  # the paper's loss
    assert fidelity_terms("ssim", 20.0) == (False, 20.0)
    assert fidelity_terms("mse+ssim", 5.0) == (True, 5.0)
    assert fidelity_terms("ssim", 20.0, no_mse=True) == (False, 0.0)  # Table 1's last row: none
    with pytest.raises(UserError, match="--fidelity"):
        fidelity_terms("l1", 1.0)


def test_cli_choices_match_the_library():
    from geco_tf_cli import train as cli_train

    from geco_tf.training.distribute import STRATEGIES
    from geco_tf.training.fresh_probe import SELECTION_PROBES
    from geco_tf.training.precision import PRECISIONS
    from geco_tf.training.train import FIDELITIES

    assert cli_train.PRECISIONS == PRECISIONS and cli_train.STRATEGIES == STRATEGIES
    assert cli_train.FIDELITIES == FIDELITIES and cli_train.SELECTION_PROBES == SELECTION_PROBES


def test_defaults_keep_the_papers_architecture_and_schedule():
    # beta and both learning rates differ from the paper on purpose (docs/method.md)
    assert DEFAULTS["epochs"] == 15 and DEFAULTS["beta_scaling"] == "area"
    assert 1 <= DEFAULTS["critic_steps"] <= 3  # the paper's range
    assert DEFAULTS["generator"] == "unet" and DEFAULTS["classifier"] == "dds"


def _cli(*args: str):
    """In process (a subprocess per case would spend most of the test importing TensorFlow)."""
    from click.testing import CliRunner
    from geco_tf_cli.main import cli

    return CliRunner().invoke(cli, ["train", *args])


def test_output_band_run_saves_a_band_limited_generator(tiny_data, tmp_path):  # noqa: F811
    """--output-band reaches the saved generator: its outputs have no power beyond the band."""
    out = tmp_path / "band"
    train_geco(tiny_data, out, epochs=1, progress=False, output_band=(0.5, 0.6), **SMALL)
    config = json.loads((out / "config.json").read_text())
    assert config["options"]["output_band"] == [0.5, 0.6] and config["resolved"]["output_band"] == [0.5, 0.6]
    gen = keras.saving.load_model(out / "generator.keras", compile=False)
    x = np.tanh(np.random.default_rng(0).standard_normal((2, 32, 32, 1))).astype(np.float32)
    power = np.abs(np.fft.fft2(np.asarray(gen(x))[..., 0])) ** 2
    k = np.abs(np.fft.fftfreq(32) * 2)
    assert power[:, k > 0.7, :].sum() < 1e-3 * power.sum() and power[:, :, k > 0.8].sum() < 1e-3 * power.sum()


def test_output_band_auto_is_the_band_every_recorded_scanner_acquired(tiny_data):  # noqa: F811
    """auto reads the acquisitions dataset.json records (the simulator's vendors): the smallest
    acquired fraction per axis; nothing recorded, or nothing to cut, means no band."""
    from geco_tf.data.dataset import DatasetInfo, open_dataset
    from geco_tf.training.train import resolve_output_band

    tiny = open_dataset(tiny_data)

    def with_vendors(vendors: dict) -> DatasetInfo:
        return DatasetInfo(path=tiny.path, info={**tiny.info, "made_by": {"vendors": vendors}}, manifest=tiny.manifest)

    recorded = with_vendors({"A": {"acquired": [0.8, 1.0]}, "B": {"acquired": [1.0, 0.85]}, "C": {"acquired": [1, 1]}})
    assert resolve_output_band("auto", recorded) == (0.8, 0.85)
    assert resolve_output_band("auto", with_vendors({"A": {"acquired": [1, 1]}})) is None
    assert resolve_output_band("auto", tiny) is None  # no acquisitions recorded
    assert resolve_output_band("off", recorded) is None
    assert resolve_output_band("0.7,0.9", tiny) == (0.7, 0.9) == resolve_output_band([0.7, 0.9], tiny)


def test_a_run_that_never_leaves_the_warm_up_says_its_accuracy_means_nothing(tiny_data, tmp_path):  # noqa: F811
    """A budget too short for the machine can end every epoch inside the warm-up; the kept
    epoch's co-trained accuracy is then an untrained classifier's, and the command says so."""
    out = tmp_path / "warm"
    result = _cli("--data", str(tiny_data), "--out", str(out), "--epochs", "1", "--warmup-steps", "1000",
                  "--classifier", "maxpool", "--base-filters", "4", "--depth", "2", "--batch-size", "8")
    assert result.exit_code == 0, (result.output, result.exception)
    assert "inside the generator's warm-up" in result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["adversarial_epochs"] == 0 and metrics["epochs_trained"] == 1
    played = train_geco(tiny_data, tmp_path / "played", epochs=1, progress=False, **SMALL)
    assert played["adversarial_epochs"] == 1  # SMALL's warm-up is 2 steps


@pytest.fixture(scope="module")
def bad_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    empty = root / "empty"
    empty.mkdir()
    tiny8 = make_tiny_dataset(root / "tiny8", size=8, subjects_per_class=3, slices=1)
    one_class = make_tiny_dataset(root / "one", size=32, subjects_per_class=3, slices=1, classes=("Siemens",))
    return {"root": root, "empty": empty, "tiny8": tiny8, "one": one_class}


@pytest.mark.parametrize(
    "case, args, message",
    [
        ("target", ["--target", "vendor"], "--target"),
        ("missing", [], "does not exist"),
        ("empty", [], "not a dataset directory"),
        ("one", [], "need at least 2"),
        ("tiny8", ["--classifier", "dds"], "--classifier maxpool"),
        ("tiny8", ["--classifier", "maxpool", "--generator", "residual", "--noise-channels", "1"], "--noise-channels"),
        ("tiny8", ["--classifier", "maxpool", "--generator", "residual", "--output-band", "0.8,0.85"], "--output-band"),
        ("tiny8", ["--classifier", "maxpool", "--output-band", "1.5,0.8"], "--output-band"),
        ("tiny8", ["--classifier", "maxpool", "--output-band", "wide"], "--output-band"),
    ],
)
def test_user_errors_exit_2_with_one_line(bad_data, tmp_path, case, args, message):
    data = {"target": bad_data["tiny8"], "missing": bad_data["root"] / "nope"}.get(case, bad_data.get(case))
    result = _cli("--data", str(data), "--out", str(tmp_path / "run"), *args)
    assert result.exit_code == 2, (result.output, result.exception)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], result.stderr
    assert "Traceback" not in result.output


def test_final_networks_are_restored_from_the_best_epochs_checkpoint(tiny_data, tmp_path):  # noqa: F811
    """Every epoch's checkpoint holds all network variables (batch-norm statistics included),
    and the final generator.keras is the chosen epoch's, not the last one's."""
    from geco_tf.training.run import RunDir

    out = tmp_path / "run"
    train_geco(tiny_data, out, epochs=2, progress=False, ssim_target=0.0, **SMALL)
    run = RunDir(out)
    names = [n for n, _ in tf.train.list_variables(str(out / "checkpoints" / "ckpt-1"))]
    assert any(n.startswith("classifier_weights") and "moving" not in n for n in names)
    assert sum(n.startswith("classifier_weights/") for n in names) == len(
        keras.saving.load_model(out / "classifier.keras", compile=False).weights
    )
    best = json.loads(run.metrics.read_text())["best_epoch"]
    gen = keras.saving.load_model(out / "generator.keras", compile=False)
    # generator.keras is the weight average when the run keeps one (the default)
    averaged = json.loads((out / "config.json").read_text())["options"]["generator_ema"] > 0
    prefix = "ema_generator_weights" if averaged else "generator_weights"
    for i, v in enumerate(gen.weights):
        saved = tf.train.load_variable(str(out / "checkpoints" / f"ckpt-{best}"), f"{prefix}/{i}/.ATTRIBUTES/VARIABLE_VALUE")
        np.testing.assert_array_equal(v.numpy(), saved)


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


def test_an_ema_run_saves_the_average_and_resumes_it(tiny_data, tmp_path):  # noqa: F811
    out = tmp_path / "ema"
    train_geco(tiny_data, out, epochs=1, progress=False, generator_ema=0.9, **SMALL)
    ckpt = str(out / "checkpoints" / "ckpt-1")
    names = [name for name, _ in tf.train.list_variables(ckpt)]
    assert any(name.startswith("ema_generator_weights/") for name in names)
    saved = keras.saving.load_model(out / "generator.keras", compile=False)
    ema = [tf.train.load_variable(ckpt, f"ema_generator_weights/{i}/.ATTRIBUTES/VARIABLE_VALUE") for i in range(len(saved.weights))]
    live = [tf.train.load_variable(ckpt, f"generator_weights/{i}/.ATTRIBUTES/VARIABLE_VALUE") for i in range(len(saved.weights))]
    for w, e in zip(saved.weights, ema):
        np.testing.assert_array_equal(w.numpy(), e)  # generator.keras is the average
    assert any(not np.array_equal(e, v) for e, v in zip(ema, live))  # which is not the live generator
    train_geco(tiny_data, out, resume=True, epochs=2, progress=False)
    assert json.loads((out / "config.json").read_text())["options"]["generator_ema"] == 0.9
