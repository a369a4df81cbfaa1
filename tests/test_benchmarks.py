"""Tests for ``benchmarks/``: the FLOP counter against a hand count, and the harness pieces.

Why these: every fraction-of-peak figure divides by the FLOP count, so the counter must agree
with a count done by hand; and ``results.json`` is read by people comparing runs, so a run must
report every key. The whole ``run.py --quick`` takes minutes on a loaded 2-core machine, so the
default suite checks the pieces; the end-to-end quick run is marked ``benchmark``
(``python -m pytest -m benchmark tests/test_benchmarks.py``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import flops  # noqa: E402
import run  # noqa: E402


def _tiny_model():
    import keras
    from keras import layers

    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(4, 3, padding="valid")(inputs)  # -> 6x6x4
    x = layers.Conv2DTranspose(2, 2, strides=2)(x)  # -> 12x12x2
    x = layers.Conv2D(2, 5, padding="same", groups=2)(x)  # -> 12x12x2, grouped
    x = layers.Flatten()(x)  # -> 288
    outputs = layers.Dense(5)(x)
    return keras.Model(inputs, outputs)


def test_flops_match_hand_count():
    conv = 2 * 3 * 3 * 3 * 4 * 6 * 6  # K K Cin Cout Hout Wout
    transposed = 2 * 2 * 2 * 4 * 2 * 6 * 6  # K K Cin Cout Hin Win
    grouped = 2 * 5 * 5 * (2 // 2) * 2 * 12 * 12  # Cin / groups
    dense = 2 * 288 * 5
    records = flops.layer_flops(_tiny_model(), (8, 8, 3))
    assert [r.flops for r in records] == [conv, transposed, grouped, dense]
    assert flops.forward_flops(_tiny_model(), (8, 8, 3)) == conv + transposed + grouped + dense == 27360


def test_flops_subclassed_unet_counts_every_call_once():
    from geco_tf.models import UNetGenerator

    gen = UNetGenerator(depth=1, base_filters=2, norm=None)
    records = flops.layer_flops(gen, (8, 8, 1))
    # down0: 1->2, 2->2 at 8x8; bottleneck 2->4, 4->4 at 4x4; up0 4->2 (2x2, stride 2) from 4x4;
    # upblock0: 4->2, 2->2 at 8x8; head 2->1 (1x1) at 8x8.
    expected = [
        2 * 9 * 1 * 2 * 64,
        2 * 9 * 2 * 2 * 64,
        2 * 9 * 2 * 4 * 16,
        2 * 9 * 4 * 4 * 16,
        2 * 4 * 4 * 2 * 16,
        2 * 9 * 4 * 2 * 64,
        2 * 9 * 2 * 2 * 64,
        2 * 1 * 2 * 1 * 64,
    ]
    assert [r.flops for r in records] == expected
    # the hooks are gone afterwards: a second count is identical
    assert flops.forward_flops(gen, (8, 8, 1)) == sum(expected)


def test_geco_step_convention():
    step = flops.geco_step_flops(10, 100, classifier_steps=2, classifier_batch_factor=1.5)
    assert step["classifier_update"] == 10 + 2 * 3 * 100 * 1.5
    assert step["generator_update"] == 3 * 10 + 2 * 100
    assert step["step"] == step["classifier_update"] + step["generator_update"]
    three = flops.geco_step_flops(10, 100, discriminator_forward=7)
    assert three["step"] == (10 + 300) + (30 + 200 + 14) + 42


def test_peak_quick_is_positive():
    import peak

    result = peak.measure_peak(quick=True)
    assert result["conv"]["gflops"] > 0 and result["matmul"]["gflops"] > 0


def test_memory_fit_and_extrapolation():
    gib = 1024**3
    points = [(2, 3 * gib), (4, 4 * gib), (8, 6 * gib)]
    intercept, slope = run.linear_fit(points)
    assert intercept == pytest.approx(2 * gib) and slope == pytest.approx(0.5 * gib)
    assert run.largest_batch(intercept, slope, 16 * gib) == 28
    assert run.largest_batch(intercept, 0.0, 16 * gib) is None
    assert run.linear_fit([(2, 1.0), (2, 2.0)]) is None


def _fake_results() -> dict:
    row = {
        "size": 256, "batch": 8, "precision": "float32", "images_per_s": 2.0, "gflop_per_image": 50.0,
        "achieved_gflops": 100.0, "fraction_of_conv_peak": 0.4, "cpu_seconds_per_image": 0.5,
        "cpu_time_gflops": 200.0, "peak_rss_bytes": 2 * 1024**3,
    }
    pipe = {
        "tfdata_uncached": {"images_per_s": 500.0}, "tfdata_cached": {"images_per_s": 900.0},
        "dds_nifti_loader": {"images_per_s": 20.0}, "step_consumption_images_per_s": 2.0,
        "ratio_tfdata_to_step": 250.0, "ratio_tfdata_to_dds_loader": 25.0,
    }
    results = {
        "machine": {
            "cpu": "x", "logical_cores": 2, "ram_bytes": 8 * 1024**3, "gpu": "no GPU", "tensorflow": "2",
            "load_average_start": [0.1], "load_average_end": [0.2],
        },
        "peak": {"conv": {"gflops": 250.0}, "matmul": {"gflops": 300.0}},
        "flops": {"convention": "..."},
        "training": [
            {**row, "xla": False}, {**row, "xla": True},
            {"size": 256, "batch": 8, "precision": "mixed_float16", "xla": None, "status": "skipped: no GPU"},
        ],
        "profile": {"size": 256, "compute_share": 0.5, "by_type": [{"op": "Conv2D", "ms": 1.0, "share": 1.0}],
                    "by_scope": {}, "trace_dir": "t"},
        "pipeline": {"sizes": {"256": pipe}},
        "inference": {"size": 512, "slices": 32, **{f"{m}_batch{b}": 1.0 for m in ("keras", "saved_model", "tflite")
                                                    for b in (1, 16)}},
        "preprocessing": {"status": "not available", "summary": {}, "per_series": [], "whole_preprocess": {}},
        "memory": {"size": 512, "points": [{"batch": 8, "peak_rss_bytes": 1}], "fit": None,
                   "largest_batch_in_16GiB": None, "peak_rss_batch8_bytes": 1},
        "seconds_total": 1.0,
    }
    results["targets"] = run.targets(results, 256)
    return results


def test_targets_and_table_from_a_complete_result():
    results = _fake_results()
    assert run.missing_keys(results) == []
    met = {t["name"]: t["met"] for t in results["targets"]}
    assert met == {"train_fraction_of_conv_peak_256": False, "pipeline_vs_step": True, "pipeline_vs_dds_loader": True}
    table = run.format_table(results)
    for needle in ("images/s", "% conv peak", "tf.data / DDS", "SavedModel", "TFLite", "memory", "target"):
        assert needle in table
    del results["inference"]["tflite_batch16"]
    results["training"] = results["training"][:1]
    missing = run.missing_keys(results)
    assert "inference.tflite_batch16" in missing and "training[xla on and off]" in missing


@pytest.mark.benchmark
def test_quick_run_reports_every_key(tmp_path):
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--out", str(out)],
        capture_output=True, text=True, timeout=1200,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(out.read_text())
    assert run.missing_keys(results) == []
    assert "images/s" in proc.stdout


def test_midpoint_renders_are_deterministic_and_ssim_is_measured():
    """The midpoint benchmark renders the same anatomy through every manufacturer: a draw is
    reproducible, a new draw changes only the noise, and each SSIM is a real similarity."""
    import midpoint

    from geco_tf.data.synth import MANUFACTURERS

    first = midpoint.renders(subjects=1, seed=0, size=32, draw=1)
    again = midpoint.renders(subjects=1, seed=0, size=32, draw=1)
    assert list(first) == list(MANUFACTURERS)
    for m in MANUFACTURERS:
        np.testing.assert_array_equal(first[m], again[m])
        assert first[m].shape == (8, 32, 32, 1)
    rows = midpoint.midpoint_ssim(subjects=1, seed=0, size=32)
    for row in rows.values():
        assert 0.8 < row["to_midpoint"] < 1.0 and 0.8 < row["new_noise"] < 1.0


def test_reference_acquisition_is_noise_free_and_manufacturer_free():
    """The deterministic reference is the same image whatever the noise draw, and the common
    band's reference has much less power beyond the band along the rows, where GE stops."""
    import midpoint

    reference = {"full": midpoint.reference_acquisition(), "band": midpoint.reference_acquisition((0.8, 0.85))}
    one = midpoint.renders(subjects=1, seed=0, size=32, draw=1, acquisitions=reference)
    two = midpoint.renders(subjects=1, seed=0, size=32, draw=2, acquisitions=reference)
    for name in reference:
        np.testing.assert_allclose(one[name], two[name], atol=1e-6)
    noisy = midpoint.renders(subjects=1, seed=0, size=32, draw=1)["Siemens"]
    assert np.abs(noisy - one["full"]).max() > 0.01  # the manufacturer's own render is not the reference

    def beyond_band(images: np.ndarray) -> float:  # spectral power at |k_row| > 0.85 Nyquist
        power = np.abs(np.fft.fftshift(np.fft.fft2(images[..., 0]), axes=(1, 2))) ** 2
        k = np.abs(np.arange(32) - 16) / 16
        return float(power[:, k > 0.85, :].sum() / power.sum())

    assert beyond_band(one["band"]) < 0.5 * beyond_band(one["full"])  # not 0: magnitude and rounding spread it
    table = midpoint.reference_ssim(subjects=1, seed=0, size=32)
    assert list(table) == list(midpoint.references())
    for row in table.values():
        assert 0.8 < row["mean"] < 1.0


def test_noise_free_mean_of_the_acquisitions_is_deterministic_and_keeps_vendor_effects():
    """The noise-free mean of the four acquisitions depends on the anatomy alone (two noise draws
    give the same image), yet is not the vendor-free reference: it keeps the mean of the vendors'
    shading, filtering and partial Fourier."""
    import midpoint

    scans_one, one = midpoint.reference_images(subjects=1, seed=0, size=32, draw=1)
    scans_two, two = midpoint.reference_images(subjects=1, seed=0, size=32, draw=2)
    for name in one:
        np.testing.assert_allclose(one[name], two[name], atol=1e-6)
    assert np.abs(scans_one["Philips"] - scans_two["Philips"]).max() > 0.01  # the scans themselves are noisy
    full_mean, full_clean = (next(v for k, v in one.items() if k.startswith(p)) for p in (
        "noise-free mean of the four acquisitions (", "noise-free, full matrix"))
    assert np.abs(full_mean - full_clean).max() > 0.01
    assert midpoint.noise_free("GE Medical Systems", midpoint.COMMON_BAND)["acquired"] == [0.8, 0.85]


def test_epoch_probe_restores_each_epochs_generator(tmp_path, capsys):
    """The per-epoch probe reads every checkpoint's generator, not the final one each time
    (epochs 1 and 2 of a run with a large learning rate give different images), and returns
    each epoch's accuracies; ``benchmarks/audit.py --epoch`` audits one such epoch's generator
    and stops with exit 2 on an epoch the run has no checkpoint of."""
    import epoch_probe
    from test_geco_helpers import make_tiny_dataset

    from geco_tf.training.train import train_geco

    data = make_tiny_dataset(tmp_path / "tiny")
    small = {"base_filters": 4, "depth": 2, "classifier": "maxpool", "batch_size": 8, "warmup_steps": 0, "pool_size": 0}
    train_geco(data, tmp_path / "run", epochs=2, progress=False, ssim_target=0.0, g_lr=0.05, **small)
    import keras

    x = np.tanh(np.random.default_rng(0).standard_normal((2, 32, 32, 1))).astype(np.float32)
    generator = keras.models.load_model(tmp_path / "run" / "generator.keras", compile=False)
    first = np.asarray(epoch_probe.restore_generator(generator, tmp_path / "run", 1)(x))
    second = np.asarray(epoch_probe.restore_generator(generator, tmp_path / "run", 2)(x))
    assert np.abs(first - second).max() > 1e-4
    rows = epoch_probe.epoch_probe(str(data), str(tmp_path / "run"))
    assert [r["epoch"] for r in rows] == [1, 2]
    for row in rows:
        assert 0.0 <= row["val"] <= 1.0 and 0.0 <= row["test"] <= 1.0 and 0.0 <= row["cotrained"] <= 1.0
    import audit

    # The audit of another epoch names it, and a missing epoch is one clear error (exit 2).
    audit.main(["--data", str(data), "--run", str(tmp_path / "run"), "--epoch", "1", "--dds-epochs", "1"])
    with pytest.raises(SystemExit) as exit_info:
        audit.main(["--data", str(data), "--run", str(tmp_path / "run"), "--epoch", "9"])
    assert exit_info.value.code == 2
    printed = capsys.readouterr().out
    assert "run epoch 1: G(test) SSIM" in printed and "run epoch 1: DDS audit" in printed
