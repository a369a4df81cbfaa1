"""``geco-tf baseline``: run directory, from-scratch vs pretrained, frozen backbone, bad weights files."""

from __future__ import annotations

import hashlib
import json

import keras
import numpy as np
import pytest
from click.testing import CliRunner
from dds_hdf5 import legacy_arrays, write_legacy_hdf5
from geco_tf_cli.main import cli

from geco_tf.data.dataset import FIELD_STRENGTHS, MANUFACTURERS, DatasetWriter, SliceRecord, split_by_subject
from geco_tf.models.deepdicomsort import read_dds_hdf5
from geco_tf.training.baseline import build_pretrained_baseline, load_baseline, run_baseline

SIZE = 32  # the smallest size where the 'same'-padded DDS classifier keeps a feature map


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """32x32 slices, 4 manufacturers, each with its own stripe frequency (learnable in a few steps)."""
    root = tmp_path_factory.mktemp("baseline")
    strata = {f"s{i:02d}": MANUFACTURERS[i % 4] for i in range(24)}
    splits = split_by_subject(strata, seed=0)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    classes = {"manufacturer": MANUFACTURERS, "field_strength": FIELD_STRENGTHS}
    with DatasetWriter(root / "data", SIZE, classes, splits, made_by={"test": "tiny"}) as w:
        for subject, man in strata.items():
            k = MANUFACTURERS.index(man)
            for s in range(4):
                stripes = np.sin(2 * np.pi * (2 + 3 * k) * (xx + rng.uniform()) + 0.3 * yy)
                image = np.clip(0.6 * stripes + rng.normal(0, 0.2, (SIZE, SIZE)), -1, 1).astype(np.float32)
                w.add(SliceRecord(image, subject, man, FIELD_STRENGTHS[s % 2], "T2", f"{subject}/T2", s))
    return root / "data"


@pytest.fixture(scope="module")
def legacy_file(tmp_path_factory):
    arrays = legacy_arrays(seed=5)
    path = tmp_path_factory.mktemp("weights") / "model_all_brain_tumor_data.hdf5"
    write_legacy_hdf5(path, arrays)
    return path, arrays


@pytest.mark.slow
def test_from_scratch_run_directory_says_not_pretrained(tiny_data, tmp_path):
    run = tmp_path / "run"
    result = _invoke(["--data", str(tiny_data), "--out", str(run), "--epochs", "2", "--batch-size", "16"])
    assert result.exit_code == 0, result.output
    assert "not pretrained" in result.stderr and "from scratch" in result.stderr
    assert "trained from scratch" in result.stdout and "test accuracy" in result.stdout
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("target", "classes", "n_test", "accuracy_original", "chance", "confusion_original", "pretrained"):
        assert key in metrics
    assert metrics["pretrained"] is False and metrics["chance"] == 0.25
    assert metrics["classes"] == list(MANUFACTURERS)
    assert np.asarray(metrics["confusion_original"]).sum() == metrics["n_test"] > 0
    config = json.loads((run / "config.json").read_text())
    assert config["dds_weights"] is None and config["classifier_config"]["padding"] == "same"
    rows = (run / "history.csv").read_text().splitlines()
    assert rows[0] == "epoch,loss,accuracy,val_loss,val_accuracy" and len(rows) == 3
    # The saved model reproduces the reported accuracy on the test split.
    from geco_tf.data.dataset import open_dataset
    from geco_tf.data.pipeline import load_split_arrays

    model = keras.models.load_model(run / "baseline.keras")
    images, labels, _ = load_split_arrays(open_dataset(tiny_data), "test", "manufacturer")
    accuracy = float(np.mean(model.predict(images, verbose=0).argmax(1) == labels))
    assert accuracy == pytest.approx(metrics["accuracy_original"])


@pytest.mark.slow
def test_pretrained_backbone_frozen_through_a_training_step(legacy_file):
    path, arrays = legacy_file
    model, bb = build_pretrained_baseline(4, SIZE, read_dds_hdf5(path))
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    head_before = model.get_layer("dense1").kernel.numpy().copy()
    x = np.random.default_rng(0).uniform(-1, 1, (8, SIZE, SIZE, 1)).astype(np.float32)
    model.fit(x, np.arange(8) % 4, epochs=1, batch_size=8, verbose=0)  # one step through the whole model
    _assert_backbone_is(bb, arrays)
    assert not np.array_equal(model.get_layer("dense1").kernel.numpy(), head_before)  # the head did learn


def _assert_backbone_is(bb, arrays):
    for i in range(6):
        n = i + 1
        np.testing.assert_array_equal(bb.convs[i].kernel.numpy(), arrays[f"conv2d_{n}"]["kernel"])
        np.testing.assert_array_equal(bb.norms[i].gamma.numpy(), arrays[f"batch_normalization_{n}"]["gamma"])
        np.testing.assert_array_equal(bb.norms[i].moving_mean.numpy(), arrays[f"batch_normalization_{n}"]["moving_mean"])
        np.testing.assert_array_equal(bb.prelus[i].alpha.numpy(), arrays[f"p_re_lu_{n}"]["alpha"])


@pytest.mark.slow
def test_pretrained_run_on_small_slices_resamples_to_256_and_saves_frozen_model(tiny_data, legacy_file, tmp_path):
    path, arrays = legacy_file
    run = tmp_path / "run"
    metrics = run_baseline(tiny_data, run, dds_weights=path, batch_size=16)
    assert metrics["pretrained"] is True and metrics["epochs"] == 3  # the paper's default with weights
    config = json.loads((run / "config.json").read_text())
    assert config["dds_weights"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert config["model_input_size"] == 256 and config["image_size"] == SIZE
    model = load_baseline(run)
    assert model.input_shape == (None, SIZE, SIZE, 1)  # takes dataset slices; resamples inside
    _assert_backbone_is(model.get_layer("backbone"), arrays)  # head trained, backbone untouched
    # Reloaded, the backbone is still frozen: a further training step leaves it (and BN stats) alone.
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(np.zeros((4, SIZE, SIZE, 1), np.float32), np.arange(4), verbose=0)
    _assert_backbone_is(model.get_layer("backbone"), arrays)
    assert len((run / "history.csv").read_text().splitlines()) == 4


def _invoke(args):
    return CliRunner().invoke(cli, ["baseline", *args])


def test_cli_refuses_bad_weights_with_one_line(tiny_data, legacy_file, tmp_path):
    base = ["--data", str(tiny_data), "--out", str(tmp_path / "run"), "--epochs", "1"]
    truncated = tmp_path / "truncated.hdf5"
    truncated.write_bytes(legacy_file[0].read_bytes()[:1_000_000])
    result = _invoke([*base, "--dds-weights", str(truncated)])
    assert result.exit_code == 2 and result.stderr.strip().count("\n") == 0
    assert "truncated" in result.stderr

    text = tmp_path / "weights.hdf5"
    text.write_text("hello")
    result = _invoke([*base, "--dds-weights", str(text)])
    assert result.exit_code == 2 and result.stderr.strip().count("\n") == 0
    assert "not an HDF5 file" in result.stderr and str(text) in result.stderr

    arrays = legacy_arrays(seed=6)
    arrays["dense_1"]["kernel"] = np.zeros((1600, 1024), np.float32)  # tag row missing
    wrong = tmp_path / "wrong.hdf5"
    write_legacy_hdf5(wrong, arrays)
    result = _invoke([*base, "--dds-weights", str(wrong)])
    assert result.exit_code == 2 and result.stderr.strip().count("\n") == 0
    assert "'dense_1'" in result.stderr and "(1600, 1024)" in result.stderr and "(1601, 1024)" in result.stderr
    assert not (tmp_path / "run").exists()  # nothing written for a refused run


def test_cli_help_and_missing_dataset():
    result = _invoke(["--help"])
    assert result.exit_code == 0 and "geco-tf baseline --data" in result.output and "--dds-weights" in result.output
    result = _invoke(["--data", "/nonexistent/data", "--out", "/tmp/never"])
    assert result.exit_code == 2 and "does not exist" in result.stderr
