"""Evaluation: statistics, harmonisation baselines, probes, the verdict, and ``evaluate_run`` on
a fake run directory over a tiny dataset with a planted, easy scanner signature."""

from __future__ import annotations

import base64
import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from geco_tf.evaluation import harmonisation, stats
from geco_tf.evaluation.probes import fit_predict_cnn, fit_predict_fourier, fourier_features
from geco_tf.evaluation.report import AUDIT_POWER, verdict

DESIGN_KEYS = (
    "target classes n_test accuracy_original accuracy_cotrained accuracy_audit accuracy_audit_original "
    "utility_retained chance ssim psnr per_modality confusion_cotrained"
).split()
SIZE = 32
VENDORS = ("GE Medical Systems", "Siemens", "Philips", "Imaging Biometrics")


# ------------------------------------------------------------------------------- statistics


def test_wilson_interval_matches_known_values() -> None:
    # Reference values (Wilson 1927; e.g. Newcombe 1998 table): 0/10 and 5/10.
    low, high = stats.wilson_interval(0, 10)
    assert low == 0.0 and high == pytest.approx(0.2775, abs=1e-4)
    low, high = stats.wilson_interval(5, 10)
    assert (low, high) == (pytest.approx(0.2366, abs=1e-4), pytest.approx(0.7634, abs=1e-4))
    assert all(np.isnan(stats.wilson_interval(0, 0)))
    with pytest.raises(ValueError):
        stats.wilson_interval(11, 10)


def test_accuracy_ci_confusion_and_mean_ci() -> None:
    y = np.array([0, 0, 1, 1, 2, 2])
    p = np.array([0, 1, 1, 1, 2, 0])
    acc = stats.accuracy_ci(y, p)
    assert acc["accuracy"] == pytest.approx(4 / 6) and acc["n"] == 6
    assert acc["ci95"][0] < 4 / 6 < acc["ci95"][1]
    assert stats.confusion_matrix(y, p, 3) == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    m = stats.mean_ci([1.0, 2.0, 3.0, np.nan])
    assert m["mean"] == 2.0 and m["n"] == 3 and m["ci95"][0] < 2.0 < m["ci95"][1]
    assert stats.proportion_ci(0.5, 10) == pytest.approx(list(stats.wilson_interval(5, 10)))


# ------------------------------------------------------------------------------- harmonisation


def _heads(n: int, seed: int = 0, soft: bool = True) -> np.ndarray:
    """Discs on a -1 background with per-image brightness and contrast (a scanner's scaling)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    out = np.full((n, SIZE, SIZE, 1), -1.0, np.float32)
    for i in range(n):
        r = np.hypot(yy - SIZE / 2, xx - SIZE / 2)
        head = r < SIZE * 0.4
        scale, offset = rng.uniform(0.3, 0.9), rng.uniform(-0.1, 0.3)
        tissue = offset + scale * np.cos(r / 3.0) * 0.5 + rng.normal(0, 0.02, r.shape)
        out[i, ..., 0][head] = np.clip(tissue[head], -0.75, 1)
    # Soft edges, as in a band-limited MR image: a hard disc edge would spread energy over every
    # spatial frequency and hide the noise spectrum that the tests plant as a signature.
    return gaussian_filter(out, (0, 1.0, 1.0, 0)).astype(np.float32) if soft else out


def test_harmonisers_keep_shape_range_and_do_their_job() -> None:
    x = _heads(12, soft=False)
    baselines = {h.name: h.fit(x) for h in harmonisation.default_baselines(sigmas=(1.0,))}
    assert {"identity", "zscore", "nyul", "blur-1"} <= set(baselines)
    for h in baselines.values():
        y = h(x)
        assert y.shape == x.shape and y.dtype == np.float32
        assert y.min() >= -1.0 and y.max() <= 1.0
    np.testing.assert_array_equal(baselines["identity"](x), x)

    head = x[0, ..., 0] > -0.8  # the same disc in every slice

    def head_stats(images):
        return np.array([(im[head].mean(), im[head].std()) for im in images[..., 0]])

    # z-score and Nyul remove the per-image brightness/contrast spread the raw slices have.
    spread_raw = head_stats(x).std(axis=0)
    for name in ("zscore", "nyul"):
        spread = head_stats(baselines[name](x)).std(axis=0)
        assert np.all(spread < 0.5 * spread_raw), (name, spread, spread_raw)
    # Blur removes high spatial frequencies: white noise loses most of its variance.
    noise = np.clip(np.random.default_rng(0).normal(0, 0.3, x.shape), -1, 1).astype(np.float32)
    assert baselines["blur-1"](noise).std() < 0.5 * noise.std()


def test_kspace_lowpass_removes_what_lies_outside_the_band_and_blacks_out_the_air() -> None:
    x = _heads(4)
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    stripes = 0.05 * np.cos(np.pi * xx)  # the highest column frequency: outside the 0.9 band
    air = x[..., 0] < -0.95
    noisy = x.copy()
    noisy[..., 0] += np.where(air, np.abs(rng.normal(0, 0.01, air.shape)), stripes)
    harmoniser = harmonisation.KSpaceLowpass()
    y = harmoniser(noisy)
    assert y.shape == x.shape and y.dtype == np.float32 and y.min() >= -1.0 and y.max() <= 1.0
    far_air = gaussian_filter(air.astype(float), (0, 2, 2)) > 0.99  # away from the head's edge
    assert np.all(y[..., 0][far_air] == -1.0)
    residual = np.abs(np.fft.fft2(y[..., 0] - x[..., 0]))[:, 0, SIZE // 2]  # the stripes' frequency
    planted = np.abs(np.fft.fft2(noisy[..., 0] - x[..., 0]))[:, 0, SIZE // 2]
    assert np.all(residual < 0.1 * planted)  # the mask and the clip leave a little at every frequency
    # the head's own (band-limited) content passes almost unchanged
    inside = x[..., 0] > -0.5
    assert np.abs(y[..., 0] - x[..., 0])[inside].mean() < 0.02


# ------------------------------------------------------------------------------- probes


#: Per-vendor width of a Gaussian k-space apodisation filter (cycles per pixel).
APODISATION = (0.5, 0.35, 0.25, 0.18)


def _scanner(image: np.ndarray, vendor: int, rng: np.random.Generator) -> np.ndarray:
    """A planted scanner signature: noise, then the vendor's k-space apodisation filter."""
    k = np.hypot(*np.meshgrid(np.fft.fftfreq(image.shape[0]), np.fft.fftfreq(image.shape[1])))
    noisy = image + rng.normal(0, 0.05, image.shape)
    filtered = np.real(np.fft.ifft2(np.fft.fft2(noisy) * np.exp(-((k / APODISATION[vendor]) ** 2))))
    return np.clip(filtered, -1, 1).astype(np.float32)


def _textured(n: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Heads with a per-class apodisation signature (what a spectrum shows)."""
    rng = np.random.default_rng(seed)
    x = _heads(n, seed)
    y = np.arange(n) % classes
    for i in range(n):
        x[i, ..., 0] = _scanner(x[i, ..., 0], y[i], rng)
    return x, y


def test_fourier_probe_finds_noise_colour_and_features_are_bounded() -> None:
    x_tr, y_tr = _textured(120, 3, seed=1)
    x_te, y_te = _textured(60, 3, seed=2)
    assert fourier_features(np.zeros((2, 512, 512, 1), np.float32)).shape[1] <= 32 * 32
    acc = np.mean(fit_predict_fourier(x_tr, y_tr, x_te) == y_te)
    assert acc >= 0.9
    # With the labels shuffled there is nothing to find: near chance.
    shuffled = np.random.default_rng(0).permutation(y_tr)
    assert np.mean(fit_predict_fourier(x_tr, shuffled, x_te) == y_te) < 0.6


@pytest.mark.slow
def test_cnn_probe_finds_noise_colour_and_not_shuffled_labels() -> None:
    """The small CNN must find a texture signature on its own (early stop on held-out slices),
    else a harmoniser's 'low leakage' would only mean an untrained probe."""
    x_tr, y_tr = _textured(160, 2, seed=1)
    x_te, y_te = _textured(60, 2, seed=2)
    assert np.mean(fit_predict_cnn(x_tr, y_tr, x_te, 2, epochs=20) == y_te) >= 0.9
    shuffled = np.random.default_rng(0).permutation(y_tr)
    assert np.mean(fit_predict_cnn(x_tr, shuffled, x_te, 2, epochs=20) == y_te) < 0.75


# ------------------------------------------------------------------------------- verdict


def _audit(acc: float, power: float) -> dict:
    return {"model": "m", "accuracy": acc, "ci95": [acc - 0.05, acc + 0.05], "accuracy_original": power}


def test_verdict_says_survives_removed_or_inconclusive() -> None:
    v = verdict([_audit(0.30, 0.99), _audit(0.62, 0.97)], chance=0.25, ssim=0.98, target="manufacturer")
    assert v["status"] == "SURVIVES" and "0.620" in v["text"]
    v = verdict([_audit(0.30, 0.99), _audit(0.36, 0.95)], chance=0.25, ssim=0.98, target="manufacturer")
    assert v["status"] == "REMOVED"
    # A low accuracy from a model without power cannot show removal ...
    v = verdict([_audit(0.30, 0.99), _audit(0.26, AUDIT_POWER - 0.1)], 0.25, 0.98, "manufacturer")
    assert v["status"] == "REMOVED" and "cannot show removal" in v["text"]
    assert verdict([_audit(0.25, 0.5)], 0.25, 0.98, "manufacturer")["status"] == "INCONCLUSIVE"
    # ... but a high one shows survival whatever its power on originals (the demo's case: an
    # identity-like generator, a Fourier probe at 0.85 on both X and G(X)).
    assert verdict([_audit(0.43, 0.50), _audit(0.85, 0.85)], 0.25, 1.0, "manufacturer")["status"] == "SURVIVES"
    assert verdict([_audit(0.30, 0.99)], 0.25, 0.90, "manufacturer")["status"] == "REMOVED-LOW-FIDELITY"


# ------------------------------------------------------------------------------- evaluate_run


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    """A 32x32 dataset: 4 vendors with a planted apodisation signature, 2 modalities
    (different contrast), 24 subjects x 6 slices."""
    from geco_tf.data.dataset import DatasetWriter, SliceRecord, split_by_subject

    out = tmp_path_factory.mktemp("eval") / "data"
    rng = np.random.default_rng(0)
    subjects = {f"sub-{i:03d}": VENDORS[i % 4] for i in range(24)}
    splits = split_by_subject(subjects, seed=0)
    classes = {"manufacturer": VENDORS, "field_strength": ("1.5T", "3T"), "modality": ("T1 PRE", "T2"),
               "lesion": ("absent", "present")}
    with DatasetWriter(out, SIZE, classes, splits, made_by={"by": "tests/test_evaluation.py"}) as w:
        for s, (subject, vendor) in enumerate(subjects.items()):
            v = VENDORS.index(vendor)
            heads = _heads(6, seed=s)
            for k in range(6):
                modality = ("T1 PRE", "T2")[k % 2]
                img = heads[k, ..., 0]
                if modality == "T2":
                    img = np.where(img > -0.8, -0.2 - 0.6 * (img + 0.2), img)
                img = _scanner(img, v, rng)
                w.add(SliceRecord(img, subject, vendor, "3T", modality, f"{subject}.nii.gz", k, "absent"))
    return out


def _write_run(run: Path, data: Path, generator) -> Path:
    from geco_tf.io import write_json_atomic
    from geco_tf.models import MaxPoolClassifier

    run.mkdir(parents=True)
    generator(np.zeros((1, SIZE, SIZE, 1), np.float32))
    generator.save(run / "generator.keras")
    classifier = MaxPoolClassifier(num_classes=4, dense_units=8)
    classifier(np.zeros((1, SIZE, SIZE, 1), np.float32))
    classifier.save(run / "classifier.keras")
    write_json_atomic(run / "config.json", {"target": "manufacturer", "data": str(data)})  # as geco-tf train writes it
    write_json_atomic(run / "metrics.json", {"target": "manufacturer", "best_epoch": 2})
    with open(run / "history.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["epoch", "gen_loss", "val_accuracy_cotrained", "val_ssim", "val_psnr"])
        for e, (acc, s) in enumerate([(0.6, 0.80), (0.35, 0.95), (0.30, 0.975)], start=1):
            w.writerow([e, 1.0 / e, acc, s, 20 + 5 * e])
    return run


@pytest.fixture(scope="module")
def identity_report(tiny_data, tmp_path_factory) -> tuple[dict, Path]:
    """``geco-tf evaluate`` on a run whose generator is the identity: the signature must be
    reported alive."""
    import keras
    from click.testing import CliRunner
    from geco_tf_cli.main import cli

    generator = keras.Sequential([keras.Input((SIZE, SIZE, 1)), keras.layers.Identity()])
    run = _write_run(tmp_path_factory.mktemp("eval") / "run", tiny_data, generator)
    out = run.parent / "report"
    result = CliRunner().invoke(
        cli, ["evaluate", "--run", str(run), "--out", str(out), "--audit-epochs", "1", "--probe-epochs", "2", "--sigmas", "1",
              "--baselines", "identity,zscore"]
    )
    assert result.exit_code == 0, result.output
    assert "VERDICT:" in result.output and "accuracy_audit" in result.output
    # Long work shows itself on stderr: numbered steps and a bar over each classifier's epochs.
    assert "[1/9] loading the run and the data" in result.output
    assert "[4/9] audit: a fresh DDS-style classifier trained on generated images" in result.output
    assert "audit dds on generated images" in result.output and "[9/9] per modality" in result.output
    return json.loads((out / "metrics.json").read_text()), out


@pytest.mark.slow
def test_report_has_design_keys_and_consistent_numbers(identity_report) -> None:
    metrics, out = identity_report
    on_disk = json.loads((out / "metrics.json").read_text())
    assert set(DESIGN_KEYS) <= set(on_disk)
    assert on_disk["chance"] == 0.25 and on_disk["classes"] == list(VENDORS)
    n = on_disk["n_test"]
    assert np.sum(on_disk["confusion_cotrained"]) == n
    assert sum(r["n"] for r in on_disk["per_modality"].values()) == n
    assert set(on_disk["per_modality"]) == {"T1 PRE", "T2"}
    for row in on_disk["per_modality"].values():
        assert sum(row["counts"].values()) == row["n"] and set(row["counts"]) == set(VENDORS)
    # The identity keeps every pixel.
    assert on_disk["ssim"] == pytest.approx(1.0, abs=1e-4)
    for key in ("accuracy_cotrained", "accuracy_audit", "accuracy_audit_fourier"):
        low, high = on_disk["ci95"][key]
        assert low <= on_disk[key] <= high
    names = [p["name"] for p in on_disk["leakage"]]
    assert names[:2] == ["identity", "zscore"] and names[-1] == "GECO"


@pytest.mark.slow
def test_identity_generator_is_reported_as_surviving(identity_report) -> None:
    metrics, out = identity_report
    # The planted apodisation is a spectrum signature: the Fourier audit has full power and
    # still finds it on the (unchanged) generated images, so the verdict must say SURVIVES.
    assert metrics["accuracy_audit_fourier_original"] >= AUDIT_POWER
    assert metrics["accuracy_audit_fourier"] >= AUDIT_POWER
    assert metrics["verdict"]["status"] == "SURVIVES"
    page = (out / "index.html").read_text()
    assert "VERDICT: The manufacturer signature SURVIVES" in page
    # The utility label (modality, contrast-coded) is learnt equally on both: ratio 1.
    assert metrics["utility"]["label"] == "modality"
    assert metrics["utility_retained"] == pytest.approx(1.0, abs=0.05)


@pytest.mark.slow
def test_html_is_self_contained_with_every_figure(identity_report) -> None:
    metrics, out = identity_report
    page = (out / "index.html").read_text()
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == len(metrics["figures"]) >= 6
    for data in images:
        assert base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n"
    assert not re.search(r'src="(?!data:)', page)  # nothing fetched from outside
    for name in metrics["figures"].values():
        assert (out / name).stat().st_size > 1000
    assert "Table 2" in page and "Imaging Biometrics" in page


def test_cli_user_errors_exit_2(tiny_data, tmp_path) -> None:
    """A missing run, an output that is a file, a bad option: one line, exit 2, no traceback."""
    from click.testing import CliRunner
    from geco_tf_cli.main import cli

    runner = CliRunner()
    result = runner.invoke(cli, ["evaluate", "--run", str(tmp_path / "nope"), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "nope" in result.output and "Traceback" not in result.output
    (tmp_path / "file").write_text("x")
    (tmp_path / "run").mkdir()
    result = runner.invoke(cli, ["evaluate", "--run", str(tmp_path / "run"), "--out", str(tmp_path / "file")])
    assert result.exit_code == 2 and "file" in result.output
    result = runner.invoke(cli, ["evaluate", "--run", str(tmp_path / "run"), "--out", "r", "--baselines", "histeq"])
    assert result.exit_code == 2 and "histeq" in result.output
    # A run without a config naming its target.
    result = runner.invoke(cli, ["evaluate", "--run", str(tmp_path / "run"), "--data", str(tiny_data), "--out", "r"])
    assert result.exit_code == 2 and "config.json" in result.output
