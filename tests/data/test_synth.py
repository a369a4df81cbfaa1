"""The built-in multi-vendor dataset (`geco-tf synth`): layout, determinism, splits, intensity
convention, and that the same anatomy by two vendors stays similar (SSIM >= 0.95).

The other subtlety bounds (a probe on global intensity statistics near chance, a small CNN at
>= 0.95 on manufacturer and field strength) need scikit-learn and minutes of training: they are
``experiments/subtlety.py``.
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest

from geco_tf.data import synth
from geco_tf.data.dataset import FIELD_STRENGTHS, MANIFEST_COLUMNS, MANUFACTURERS, SPLITS, open_dataset
from geco_tf.data.pipeline import load_split_arrays


def _manifest(path: Path) -> list[dict]:
    with open(path / "manifest.csv", newline="") as f:
        return list(csv.DictReader(f))


def _shard_bytes(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((path / "slices").glob("*.tfrecord"))}


@pytest.mark.slow
def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    opts = dict(size=32, subjects=8, slices_per_subject=2)
    a = synth.synthesize(tmp_path / "a", seed=3, **opts)
    b = synth.synthesize(tmp_path / "b", seed=3, **opts)
    c = synth.synthesize(tmp_path / "c", seed=4, **opts)
    assert _manifest(a) == _manifest(b)
    assert _shard_bytes(a) == _shard_bytes(b)
    assert _shard_bytes(a) != _shard_bytes(c)


@pytest.mark.slow
def test_same_seed_same_slices_across_processes(tmp_path, synth_data):
    """A fresh process with the same options reproduces the session dataset byte for byte
    (``DatasetWriter`` serialises examples deterministically) and slice for slice."""
    out = tmp_path / "again"
    code = (
        "from geco_tf.data.synth import synthesize; "
        f"synthesize({str(out)!r}, size=64, subjects=24, slices_per_subject=4, seed=0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert _manifest(out) == _manifest(synth_data)
    for split in SPLITS:
        a, ya, _ = load_split_arrays(open_dataset(out), split, "manufacturer")
        b, yb, _ = load_split_arrays(open_dataset(synth_data), split, "manufacturer")
        assert np.array_equal(a, b) and np.array_equal(ya, yb), split
    shards = sorted(p.name for p in (synth_data / "slices").iterdir())
    assert shards == sorted(p.name for p in (out / "slices").iterdir())
    for name in shards:
        assert (out / "slices" / name).read_bytes() == (synth_data / "slices" / name).read_bytes(), name


def test_manifest_and_dataset_json(synth_data):
    rows = _manifest(synth_data)
    assert tuple(rows[0].keys()) == MANIFEST_COLUMNS
    assert len(rows) == 24 * 4
    for r in rows:
        assert re.fullmatch(r"sim-\d{4}", r["subject"]), r["subject"]
        assert r["source_volume"] == f"{r['subject']}/{r['modality']}"
        assert r["modality"] in synth.SYNTH_MODALITIES
        assert r["lesion"] in ("absent", "present")
        assert int(r["slice_index"]) >= 0
    info = json.loads((synth_data / "dataset.json").read_text())
    made = info["made_by"]
    assert made["generator"] == "geco_tf.data.synth" and made["seed"] == 0
    assert made["options"] == {"size": 64, "subjects": 24, "slices_per_subject": 4, "protocol": "shared"}
    assert set(made["vendors"]) == set(MANUFACTURERS) and set(made["field_strengths"]) == set(FIELD_STRENGTHS)
    assert info["classes"]["manufacturer"] == list(MANUFACTURERS)
    assert info["classes"]["modality"] == list(synth.SYNTH_MODALITIES)
    assert info["image_size"] == 64


def test_no_subject_in_two_splits_and_classes_balance(synth_data):
    rows = _manifest(synth_data)
    splits_of = defaultdict(set)
    scanner_of = defaultdict(set)
    for r in rows:
        splits_of[r["subject"]].add(r["split"])
        scanner_of[r["subject"]].add((r["manufacturer"], r["field_strength"]))
    assert all(len(s) == 1 for s in splits_of.values())
    assert all(len(s) == 1 for s in scanner_of.values()), "a subject is scanned on one scanner"
    for split in SPLITS:
        in_split = [r for r in rows if r["split"] == split]
        pairs = Counter((r["manufacturer"], r["field_strength"]) for r in in_split)
        assert len(pairs) == 8 and len(set(pairs.values())) == 1, (split, pairs)
        modalities = Counter(r["modality"] for r in in_split)
        assert len(set(modalities.values())) == 1, (split, modalities)
    subjects = Counter(r["split"] for r in {r["subject"]: r for r in rows}.values())
    assert subjects == {"train": 8, "val": 8, "test": 8}


def test_value_range_background_and_padding(synth_data):
    data = open_dataset(synth_data)
    x, _, _ = load_split_arrays(data, "train", "manufacturer")
    assert x.shape[1:] == (64, 64, 1)
    assert x.min() >= -1.0 and x.max() <= 1.0
    assert np.allclose(x.reshape(len(x), -1).min(axis=1), -1.0), "each slice's minimum maps to -1"
    assert np.all(x.reshape(len(x), -1).max(axis=1) > 0.99), "each slice reaches +1"
    frame = np.concatenate([x[:, :2].ravel(), x[:, -2:].ravel(), x[:, :, :2].ravel(), x[:, :, -2:].ravel()])
    assert frame.mean() < -0.9, "the corners are air (near -1), the head is inside the field of view"
    # A raw image that is not square is centred and padded with -1 (raw zero).
    padded = synth.to_convention(np.ones((20, 32), np.float32) + np.arange(32, dtype=np.float32), 32)
    assert padded.shape == (32, 32)
    assert np.all(padded[:6] == -1.0) and np.all(padded[-6:] == -1.0)


def test_lesions_and_contrasts_differ():
    """The lesion shows on T1 POST (enhancing rim) and the contrasts are genuinely different."""
    sim = next(s for i in range(40) if (s := synth.SimSubject(i, 0, MANUFACTURERS[1], "3T")).anatomy.lesion is not None)
    z = int(round((sim.anatomy.lesion.centre_mm[2] - synth.SLICE_ORIGIN_MM) / synth.SLICE_SPACING_MM))
    images = {}
    for modality in synth.SYNTH_MODALITIES:
        images[modality], lesion = sim.render(modality, z, 64, rng=np.random.default_rng(0))
        assert lesion, modality
    for a in synth.SYNTH_MODALITIES:
        for b in synth.SYNTH_MODALITIES:
            if a < b and {a, b} != {"T1 PRE", "T1 POST"}:
                assert np.mean(np.abs(images[a] - images[b])) > 0.02, (a, b)
    # T1 POST differs from T1 PRE where the lesion rim takes up gadolinium, hardly elsewhere.
    enhancement = images["T1 POST"] - images["T1 PRE"]
    assert enhancement.max() > 0.3 and np.median(np.abs(enhancement)) < 0.05
    # Gadolinium shortens T1 of the rim: it gets brighter relative to white matter.
    assert synth.tissue_signal("rim", "T1 POST", "3T") > 1.5 * synth.tissue_signal("rim", "T1 PRE", "3T")
    # FLAIR nulls CSF at both field strengths.
    for fs in FIELD_STRENGTHS:
        assert synth.tissue_signal("csf", "FLAIR", fs) < 0.1 * synth.tissue_signal("wm", "FLAIR", fs)


def test_a_field_override_switches_one_acquisition_cue():
    """``render(field=...)`` replaces the field strength's acquisition parameters only: its own
    parameters reproduce the plain render, 3T's chemical shift alone moves the scalp's fat."""
    sim = synth.SimSubject(3, 0, MANUFACTURERS[0], "1.5T")
    plain, _ = sim.render("T1 PRE", 10, 64, rng=np.random.default_rng(1))
    same, _ = sim.render("T1 PRE", 10, 64, rng=np.random.default_rng(1), field=dict(synth.FIELDS["1.5T"]))
    np.testing.assert_array_equal(plain, same)
    shifted = {**synth.FIELDS["1.5T"], "fat_shift_hz": synth.FIELDS["3T"]["fat_shift_hz"]}
    moved, _ = sim.render("T1 PRE", 10, 64, rng=np.random.default_rng(1), field=shifted)
    change = np.abs(moved - plain)
    assert change.max() > 0.1  # the bright scalp ring moved
    assert np.median(change) < 0.01  # and little else


def test_tuned_protocol_makes_field_strength_subtle(tmp_path):
    """``protocol="tuned"``: the 3T scan's fat moves as many pixels as at 1.5T, its T1-weighted
    contrast follows 1.5T's, 1.5T itself is untouched, and the same anatomy at 1.5T and 3T is
    much closer (SSIM) than with the shared protocol."""
    from geco_tf.metrics import fidelity

    tuned = synth.field_parameters("3T", "tuned")
    assert tuned["fat_shift_hz"] / tuned["bandwidth_factor"] == synth.FIELDS["1.5T"]["fat_shift_hz"]
    assert tuned["snr"] < synth.FIELDS["3T"]["snr"]  # a wider bandwidth costs noise
    assert synth.field_parameters("1.5T", "tuned") == synth.field_parameters("1.5T", "shared")
    at_15 = [synth.SimSubject(2, 0, MANUFACTURERS[2], "1.5T", p).render("T2", 10, 64)[0] for p in ("shared", "tuned")]
    np.testing.assert_array_equal(*at_15)  # 1.5T is untouched

    def wm_over_gm(field_strength, protocol):
        return synth.tissue_signal("wm", "T1 PRE", field_strength, protocol=protocol) / synth.tissue_signal(
            "gm", "T1 PRE", field_strength, protocol=protocol
        )

    reference = wm_over_gm("1.5T", "shared")
    assert abs(wm_over_gm("3T", "tuned") - reference) < 0.5 * abs(wm_over_gm("3T", "shared") - reference)

    def both_fields(protocol):
        pairs = {fs: [] for fs in FIELD_STRENGTHS}
        for index in range(4):
            for fs in FIELD_STRENGTHS:
                sim = synth.SimSubject(index, 0, MANUFACTURERS[index], fs, protocol)
                for modality, slice_index in sim.slice_plan(4):
                    rng = np.random.default_rng([index, slice_index])
                    pairs[fs].append(sim.render(modality, slice_index, 64, rng=rng)[0])
        return [np.stack(pairs[fs])[..., None] for fs in FIELD_STRENGTHS]

    shared = fidelity(*both_fields("shared"))["ssim"].mean()
    tuned_ssim = fidelity(*both_fields("tuned"))["ssim"].mean()
    assert shared < 0.9 and tuned_ssim > 0.94, (shared, tuned_ssim)

    out = synth.synthesize(tmp_path / "tuned", size=32, subjects=8, slices_per_subject=2, protocol="tuned")
    made_by = json.loads((out / "dataset.json").read_text())["made_by"]
    assert made_by["options"]["protocol"] == "tuned"
    assert made_by["protocol"]["changes_from_shared"]["3T"]["bandwidth_factor"] == 2.0
    with pytest.raises(ValueError, match="unknown protocol"):
        synth.synthesize(tmp_path / "bad", subjects=8, protocol="matched")


def test_compromise_protocol_lies_between_tuned_and_shared():
    """``compromise`` runs the tuned 3T sequences at 1.5x the bandwidth instead of 2x: the fat
    shift in pixels lies strictly between the tuned (= 1.5T) and the shared one, contrast is the
    tuned protocol's, and the SNR cost of the wider bandwidth is smaller than tuned's."""
    at_3t = {p: synth.field_parameters("3T", p) for p in ("shared", "tuned", "compromise")}
    shift = {p: field["fat_shift_hz"] / field["bandwidth_factor"] for p, field in at_3t.items()}
    assert shift["tuned"] < shift["compromise"] < shift["shared"]
    assert at_3t["tuned"]["snr"] < at_3t["compromise"]["snr"] < synth.FIELDS["3T"]["snr"]
    for modality in synth.SEQUENCES:
        assert synth.sequence(modality, "3T", "compromise") == synth.sequence(modality, "3T", "tuned")
    assert synth.field_parameters("1.5T", "compromise") == synth.field_parameters("1.5T", "shared")


def test_ssim_between_manufacturers_on_same_anatomy():
    """The same anatomy rendered by two manufacturers (independent noise) has mean SSIM >= 0.95:
    the signatures must not change the anatomy, yet the vendors must differ at all."""
    from geco_tf.metrics import ssim

    renders: dict[str, list[np.ndarray]] = {m: [] for m in synth.MANUFACTURERS}
    for index, (manufacturer, field_strength) in enumerate(synth.subject_strata(8)):
        sim = synth.SimSubject(index, 0, manufacturer, field_strength)
        for modality, slice_index in sim.slice_plan(len(synth.SYNTH_MODALITIES)):
            for v, vendor in enumerate(synth.MANUFACTURERS):
                rng = np.random.default_rng([0, index, slice_index, v, 7])
                renders[vendor].append(sim.render(modality, slice_index, 64, manufacturer=vendor, rng=rng)[0])
    stacks = [np.stack(renders[m])[..., None].astype(np.float32) for m in synth.MANUFACTURERS]
    values = np.concatenate([np.asarray(ssim(a, b)) for i, a in enumerate(stacks) for b in stacks[i + 1 :]])
    assert values.size == 6 * 8 * 4
    assert 0.95 <= values.mean() < 0.999, values.mean()


def test_cli_help_and_user_errors(tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "geco_tf_cli.main", "synth", *args], capture_output=True, text=True)

    proc = run("--help")
    assert proc.returncode == 0 and "geco-tf synth --out" in proc.stdout
    proc = run("--out", str(tmp_path / "d"), "--size", "-64")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "--size" in proc.stderr
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    proc = run("--out", str(a_file))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and str(a_file) in proc.stderr and "file" in proc.stderr
    proc = run("--out", str(tmp_path / "d"), "--subjects", "0")
    assert proc.returncode == 2 and "--subjects" in proc.stderr


@pytest.mark.slow
def test_cli_writes_dataset(tmp_path):
    out = tmp_path / "cli"
    proc = subprocess.run(
        [sys.executable, "-m", "geco_tf_cli.main", "synth", "--out", str(out), "--size", "32", "--subjects", "8",
         "--slices-per-subject", "1"],
        capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert (out / "dataset.json").is_file() and len(_manifest(out)) == 8
    assert "wrote" in proc.stdout


def test_cli_defaults_match_library():
    from geco_tf_cli import synth as cli_synth

    assert (cli_synth.DEFAULT_SIZE, cli_synth.DEFAULT_SUBJECTS, cli_synth.DEFAULT_SLICES_PER_SUBJECT) == (
        synth.DEFAULT_SIZE,
        synth.DEFAULT_SUBJECTS,
        synth.DEFAULT_SLICES_PER_SUBJECT,
    )
    assert cli_synth.PROTOCOLS == tuple(synth.PROTOCOLS) and synth.DEFAULT_PROTOCOL == "shared"
