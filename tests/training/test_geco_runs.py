"""GECO runs end to end (``train_geco`` and ``geco-tf train``): the run directory, the output
band's run, resume (also of a run written before TrainConfig), the final networks, and user errors.

Each test trains a tiny run (32x32, a few steps); most of its time is tracing the train step.
"""

from __future__ import annotations

import csv
import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from test_geco_helpers import make_tiny_dataset

from geco_tf.errors import UserError
from geco_tf.training.config import TrainConfig
from geco_tf.training.train import train_geco

SMALL = {"base_filters": 4, "depth": 2, "classifier": "maxpool", "batch_size": 8, "warmup_steps": 2, "pool_size": 32}


@pytest.mark.slow
def test_train_geco_writes_the_run_directory(tiny_data, tmp_path):
    out = tmp_path / "run"
    metrics = train_geco(tiny_data, out, epochs=2, progress=False, selection_probe="fourier", **SMALL)
    for name in ("config.json", "history.csv", "generator.keras", "classifier.keras", "metrics.json"):
        assert (out / name).is_file(), name
    assert list((out / "logs").glob("events.out.tfevents.*"))
    assert (out / "checkpoints" / "ckpt-1.index").exists() and (out / "checkpoints" / "ckpt-2.index").exists()
    lines = (out / "history.csv").read_text().splitlines()
    assert lines[0].startswith("epoch,gen_loss,gen_adv_loss,gen_mse,cls_loss")
    assert [line.split(",")[0] for line in lines[1:]] == ["1", "2"]
    rows = list(csv.DictReader(lines))
    assert all(0.0 <= float(r["val_accuracy_probe"]) <= 1.0 for r in rows)  # the fresh probe, every epoch
    config = json.loads((out / "config.json").read_text())
    assert config["resolved"]["beta_effective"] == pytest.approx(TrainConfig().beta * 512**2 / 32**2)
    assert config["resolved"]["classifier_padding"] == "same"
    assert config["resolved"]["pixel_mse"] is True  # the paper's loss
    # config.json holds the whole TrainConfig, and it reads back as the one the run used
    assert TrainConfig.from_stored(config) == TrainConfig().replace(epochs=2, selection_probe="fourier", **SMALL)
    for key in ("target", "classes", "data", "image_size", "n_train", "n_val"):
        assert key in config
    for key in ("target", "classes", "n_test", "accuracy_cotrained", "chance", "ssim", "psnr", "per_modality",
                "confusion_cotrained", "best_epoch"):
        assert key in metrics
    assert json.loads((out / "metrics.json").read_text())["best_epoch"] == metrics["best_epoch"]
    assert metrics["adversarial_epochs"] == 2  # SMALL's warm-up is 2 steps: both epochs played the game
    assert sum(map(sum, metrics["confusion_cotrained"])) == metrics["n_test"]
    gen = keras.saving.load_model(out / "generator.keras", compile=False)
    assert gen(np.zeros((1, 40, 24, 1), np.float32)).shape == (1, 40, 24, 1)  # any size
    # an existing run is not overwritten without --resume
    with pytest.raises(UserError, match="--resume"):
        train_geco(tiny_data, out, epochs=1, progress=False, **SMALL)


@pytest.mark.benchmark  # 40-70 s on 2 cores: out of the 8-minute suite; run with python -m pytest -m benchmark
def test_a_run_written_before_the_config_resumes_if_its_removed_settings_were_off(tiny_data, tmp_path):
    """A run directory from before TrainConfig stored ``"options"`` (with settings since deleted):
    it resumes when each deleted setting was off, and says which one stops it otherwise."""
    out = tmp_path / "old"
    train_geco(tiny_data, out, epochs=1, progress=False, **SMALL)
    config = json.loads((out / "config.json").read_text())
    stored = config.pop("config")
    legacy = {**config, "options": {**stored, "fidelity": "mse", "ssim_weight": 20.0, "generator_ema": 0.0,
                                    "noise_channels": 0}}
    (out / "config.json").write_text(json.dumps(legacy))
    train_geco(tiny_data, out, resume=True, epochs=2, progress=False)
    resumed = json.loads((out / "config.json").read_text())
    assert "options" not in resumed and resumed["config"]["epochs"] == 2
    assert [r["epoch"] for r in csv.DictReader((out / "history.csv").read_text().splitlines())] == ["1", "2"]
    legacy["options"]["generator_ema"] = 0.9
    (out / "config.json").write_text(json.dumps(legacy))
    with pytest.raises(UserError, match="generator_ema"):
        train_geco(tiny_data, out, resume=True, epochs=3, progress=False)


def _cli(*args: str):
    """In process (a subprocess per case would spend most of the test importing TensorFlow)."""
    from click.testing import CliRunner
    from geco_tf_cli.main import cli

    return CliRunner().invoke(cli, ["train", *args])


@pytest.mark.benchmark  # 40-70 s on 2 cores: out of the 8-minute suite; run with python -m pytest -m benchmark
def test_output_band_run_saves_a_band_limited_generator(tiny_data, tmp_path):
    """--output-band reaches the saved generator: its outputs have no power beyond the band."""
    out = tmp_path / "band"
    train_geco(tiny_data, out, epochs=1, progress=False, output_band="0.5,0.6", **SMALL)
    config = json.loads((out / "config.json").read_text())
    assert config["config"]["output_band"] == "0.5,0.6" and config["resolved"]["output_band"] == [0.5, 0.6]
    gen = keras.saving.load_model(out / "generator.keras", compile=False)
    x = np.tanh(np.random.default_rng(0).standard_normal((2, 32, 32, 1))).astype(np.float32)
    power = np.abs(np.fft.fft2(np.asarray(gen(x))[..., 0])) ** 2
    k = np.abs(np.fft.fftfreq(32) * 2)
    assert power[:, k > 0.7, :].sum() < 1e-3 * power.sum() and power[:, :, k > 0.8].sum() < 1e-3 * power.sum()


def test_output_band_auto_is_the_band_every_recorded_scanner_acquired(tiny_data):
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


@pytest.mark.slow
def test_a_run_that_never_leaves_the_warm_up_says_its_accuracy_means_nothing(tiny_data, tmp_path):
    """A budget too short for the machine can end every epoch inside the warm-up; the kept
    epoch's co-trained accuracy is then an untrained classifier's, and the command says so."""
    out = tmp_path / "warm"
    result = _cli("--data", str(tiny_data), "--out", str(out), "--epochs", "1", "--set", "warmup_steps=1000",
                  "--classifier", "maxpool", "--set", "base_filters=4", "--set", "depth=2", "--batch-size", "8")
    assert result.exit_code == 0, (result.output, result.exception)
    assert "inside the generator's warm-up" in result.stderr
    assert "epoch 1: val accuracy" in result.stderr  # the per-epoch line (stderr; --quiet drops it)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["adversarial_epochs"] == 0 and metrics["epochs_trained"] == 1
    # (a run that does leave it counts its epochs: test_train_geco_writes_the_run_directory)


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
        # tiny8 holds 4 training slices: one batch of 4 (below: the default batch of 32 is too big)
        ("tiny8", ["--batch-size", "4", "--classifier", "dds"], "classifier maxpool"),
        ("tiny8", ["--batch-size", "4", "--classifier", "maxpool", "--generator", "residual", "--set", "output_band=0.8,0.85"], "output_band"),
        ("tiny8", ["--batch-size", "4", "--classifier", "maxpool", "--set", "output_band=1.5,0.8"], "output_band"),
        ("tiny8", ["--batch-size", "4", "--classifier", "maxpool", "--set", "output_band=wide"], "output_band"),
        ("tiny8", ["--classifier", "maxpool"], "4 training slices is less than one batch of batch_size 32"),
        ("tiny8", ["--set", "noise_channels=1"], "unknown setting(s) noise_channels"),
        ("tiny8", ["--set", "critic_steps=9"], "critic_steps = 9: must be <= 5"),
    ],
)
def test_user_errors_exit_2_with_one_line(bad_data, tmp_path, case, args, message):
    data = {"target": bad_data["tiny8"], "missing": bad_data["root"] / "nope"}.get(case, bad_data.get(case))
    result = _cli("--data", str(data), "--out", str(tmp_path / "run"), *args)
    assert result.exit_code == 2, (result.output, result.exception)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], result.stderr
    assert "Traceback" not in result.output


@pytest.mark.slow
def test_final_networks_are_restored_from_the_best_epochs_checkpoint(tiny_data, tmp_path):
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
    for i, v in enumerate(gen.weights):
        saved = tf.train.load_variable(str(out / "checkpoints" / f"ckpt-{best}"), f"generator_weights/{i}/.ATTRIBUTES/VARIABLE_VALUE")
        np.testing.assert_array_equal(v.numpy(), saved)


@pytest.mark.benchmark  # 40-70 s on 2 cores: out of the 8-minute suite; run with python -m pytest -m benchmark
def test_resuming_a_finished_run_trains_nothing_and_reapplies_the_selection_rule(tiny_data, tmp_path):
    """The best epoch must come after an adversary first learnt the target; a finished run
    resumed re-judges its history (here rewritten by hand, so each case is known) and
    restores the chosen epoch's generator."""
    from geco_tf.training.run import RunDir

    out = tmp_path / "run"
    train_geco(tiny_data, out, epochs=2, progress=False, **SMALL)
    run = RunDir(out)
    history = run.read_history()

    def rejudge(acc1, acc2):
        for row, acc, ssim in zip(history, (acc1, acc2), (0.995, 0.99)):
            row.update(val_accuracy_cotrained=acc, val_accuracy_spectral=None, val_accuracy_probe=None, val_ssim=ssim)
        run.write_history(history)
        result = _cli("--data", str(tiny_data), "--out", str(out), "--resume")
        assert result.exit_code == 0, (result.output, result.exception)
        assert [r["epoch"] for r in run.read_history()] == [1, 2]  # nothing trained
        return json.loads(run.metrics.read_text()), result.stderr

    # no adversary reached the learnt level: the low accuracy of epoch 2 proves nothing
    metrics, stderr = rejudge(0.40, 0.30)
    assert metrics["learnt_accuracy"] == pytest.approx(0.5 + 0.5 / len(metrics["classes"]))
    assert metrics["first_learnt_epoch"] is None and metrics["best_epoch"] == 1
    assert "no adversary's validation accuracy reached" in stderr
    # the classifier learnt in epoch 2 (on the edited images): only epoch 2 counts
    metrics, stderr = rejudge(0.40, 0.95)
    assert metrics["first_learnt_epoch"] == 2 and metrics["best_epoch"] == 2 and "warning" not in stderr
    gen = keras.saving.load_model(out / "generator.keras", compile=False)
    saved = tf.train.load_variable(str(out / "checkpoints" / "ckpt-2"), "generator_weights/0/.ATTRIBUTES/VARIABLE_VALUE")
    np.testing.assert_array_equal(gen.weights[0].numpy(), saved)
