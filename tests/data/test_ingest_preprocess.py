"""``geco-tf preprocess`` end to end: a messy archive with planted identifiers, resumption after
a kill, NIfTI with a labels CSV, and the exit-code contract."""

from __future__ import annotations

import csv
import gzip
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pydicom.data
import pytest
from click.testing import CliRunner
from dicom_series import nibabel_data, philips_enhanced, write_series

from geco_tf.data import privacy as P
from geco_tf.data.dataset import MANUFACTURERS, open_dataset
from geco_tf.data.intensity import is_informative, pad_or_crop, scale_to_unit_range
from geco_tf.data.preprocess import preprocess, work_dir_for

NAME = "Zyxwvut^Qwertyuiop"
BIRTH = "19421231"
ACCESSION = "ACCZ98765"
SIZE = 64


def _ids(i: int) -> dict:
    return {"patient_id": f"MRN555{i:02d}", "patient_name": f"{NAME}{i}", "birth_date": BIRTH, "accession": ACCESSION}


def build_archive(root: Path) -> dict:
    """Good series of several vendors, field strengths and planes, plus every kind of junk.

    Returns the expected labels per series UID and the junk paths with the reason expected.
    """
    good: dict[str, dict] = {}
    by_name = root / "Zyxwvut_Qwertyuiop_19421231"  # a folder named after the patient, as exports do

    def add(folder, labels, **kwargs):
        series = write_series(folder, **kwargs)
        good[series["series_uid"]] = {"labels": labels, "series": series}
        return series

    t1 = add(by_name / "t1", ("Siemens", "3T", "T1 PRE"), orientation="axial", description="t1_mprage_tra", **_ids(0))
    add(by_name / "t2", ("Siemens", "3T", "T2"), orientation="axial", description="t2_tse_tra", seed=5,
        study_uid=t1["study_uid"], **_ids(0))  # one exam: one study
    add(root / "a" / "b" / "c", ("GE Medical Systems", "1.5T", "T1 POST"), orientation="sagittal",
        manufacturer="GE MEDICAL SYSTEMS", field_strength=1.5, description="SAG T1 POST GD", nested=True,
        shape=(20, 40, 40), **_ids(1))
    add(root / "p2", ("Philips", "3T", "FLAIR"), orientation="coronal", manufacturer="Philips Healthcare",
        description="COR FLAIR", shape=(24, 40, 40), **_ids(2))
    add(root / "tosh", ("Toshiba MEC", "1.5T", "T2 FLAIR"), orientation="oblique", manufacturer="TOSHIBA_MEC",
        field_strength=1.494, description="T2 FLAIR obl", **_ids(3))
    add(root / "lowfield", ("Siemens", None, "T1 PRE"), manufacturer="Siemens Healthineers", field_strength=1.0,
        description="T1 SE", **_ids(4))
    four_d = add(root / "fourd", ("Siemens", "3T", "OTHER"), description="perfusion dsc", seed=7,
                 extra={"TemporalPositionIdentifier": 1}, **_ids(5))
    write_series(root / "fourd", description="perfusion dsc", seed=8, **_ids(5),
                 extra={"TemporalPositionIdentifier": 2, "SeriesInstanceUID": four_d["series_uid"]})
    dup = add(root / four_d["study_uid"], ("Siemens", "3T", "T1 POST"), description="t1 +c", seed=9, **_ids(6))
    shutil.copy(dup["files"][0], root / four_d["study_uid"] / "copy.dcm")  # a UID-named folder, too
    (root / "enh").mkdir()
    philips_enhanced(root / "enh" / "IM_0001", frames=30, size=64)
    enhanced_uid = str(pydicom.dcmread(root / "enh" / "IM_0001", stop_before_pixels=True).SeriesInstanceUID)
    good[enhanced_uid] = {"labels": ("Philips", "3T", "T1 PRE")}

    junk = root / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("not an image\n")
    (junk / "corrupt.dcm").write_bytes(b"\0" * 128 + b"DICM" + random.Random(78).randbytes(300))  # seeded: the same junk every run
    shutil.copy(pydicom.data.get_testdata_file("CT_small.dcm"), junk / "ct.dcm")
    shutil.copy(pydicom.data.get_testdata_file("SC_rgb_rle.dcm"), junk / "sc_rgb.dcm")
    shutil.copy(nibabel_data("0.dcm"), junk / "mosaic.dcm")
    truncated = pydicom.dcmread(pydicom.data.get_testdata_file("MR_truncated.dcm"))
    truncated.MagneticFieldStrength = 1.5
    truncated.save_as(junk / "truncated.dcm")
    write_series(junk / "localiser", extra={"ImageType": ["ORIGINAL", "PRIMARY", "LOCALIZER"]}, **_ids(7))
    write_series(junk / "gap", skip_slices=(6,), **_ids(7))
    write_series(junk / "nomanufacturer", manufacturer=None, **_ids(7))
    write_series(junk / "nofield", field_strength=None, **_ids(7))
    expected_skips = {
        "junk/notes.txt": "not a DICOM file",
        "junk/corrupt.dcm": "without SeriesInstanceUID",
        "junk/ct.dcm": "modality CT, not MR",
        "junk/sc_rgb.dcm": "secondary capture",
        "junk/mosaic.dcm": "mosaic",
        "junk/truncated.dcm": "pixel data",
        "junk/localiser": "localiser",
        "junk/gap": "uneven slice spacing",
        "junk/nomanufacturer": "missing Manufacturer",
        "junk/nofield": "MagneticFieldStrength",
    }
    return {"good": good, "skips": expected_skips}


def _labels(entry: dict) -> tuple:
    return entry["labels"]


def _uids_in(path: Path) -> set[str]:
    """Every UID in a DICOM file (meta, body and nested sequences)."""
    found: set[str] = set()
    try:
        ds = pydicom.dcmread(path, force=True)
    except Exception:
        return found

    def visit(dataset):
        for tag in list(dataset.keys()):
            try:  # a junk file (truncated, random bytes) can hold elements pydicom cannot decode
                element = dataset[tag]
            except Exception:
                continue
            if element.VR == "UI" and element.value:
                found.update(str(v) for v in (element.value if element.VM > 1 else [element.value]))
            elif element.VR == "SQ":
                for item in element.value:
                    visit(item)

    visit(ds)
    if hasattr(ds, "file_meta"):
        visit(ds.file_meta)
    return {u for u in found if len(u) > 12}


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    root = tmp_path_factory.mktemp("archive")
    expected = build_archive(root / "dicom")
    planted = {NAME.split("^")[0], NAME.split("^")[1], BIRTH, ACCESSION, "MRN555"}
    for path in (root / "dicom").rglob("*"):
        if path.is_file():
            planted |= _uids_in(path)
    return {"root": root, "dicom": root / "dicom", "expected": expected, "planted": planted}


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, "-m", "geco_tf_cli.main", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.fixture(scope="module")
def main_run(archive):
    out = archive["root"] / "out"
    key = archive["root"] / "keys" / "site.key"
    key.parent.mkdir()
    proc = _cli("preprocess", str(archive["dicom"]), "--out", str(out), "--size", str(SIZE), "--workers", "2",
                "--key-file", str(key))
    assert proc.returncode == 0, proc.stderr
    return {"out": out, "key": key, "proc": proc}


def _manifest(out: Path) -> list[dict]:
    with open(out / "manifest.csv", newline="") as f:
        return list(csv.DictReader(f))


def _skipped(out: Path) -> list[dict]:
    with open(out / "skipped.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow  # the module's archive and a CLI run with spawned workers: about 35 s
def test_archive_to_dataset_labels_and_reasons(archive, main_run):
    out = main_run["out"]
    key = bytes.fromhex(main_run["key"].read_text().strip())
    data = open_dataset(out)
    good = archive["expected"]["good"]
    # every good series is in, with the expected labels (found through its keyed pseudonym)
    rows_by_series: dict[str, list[dict]] = {}
    for row in data.manifest:
        rows_by_series.setdefault(row["source_volume"], []).append(row)
    expected_ids = {P.pseudonym(key, uid, "ser"): _labels(entry) for uid, entry in good.items()}
    assert set(rows_by_series) == set(expected_ids)
    for series_id, (manufacturer, field, modality) in expected_ids.items():
        labels = {(r["manufacturer"], r["field_strength"], r["modality"]) for r in rows_by_series[series_id]}
        assert labels == {(manufacturer, field or "", modality)}, series_id
    info = data.info
    assert info["image_size"] == SIZE
    assert info["classes"]["manufacturer"] == [*MANUFACTURERS, "Toshiba MEC"]
    assert info["classes"]["field_strength"] == ["1.5T", "3T"]
    assert info["made_by"]["field_strength_excluded"] == {
        "1T": len(rows_by_series[P.pseudonym(key, _uid_with(good, "Siemens", None), "ser")])
    }
    assert info["made_by"]["four_d_first_volume_series"] == 1
    assert not info["made_by"]["cropped"]
    # subjects never straddle splits
    split_of: dict[str, set] = {}
    for row in data.manifest:
        split_of.setdefault(row["subject"], set()).add(row["split"])
    assert all(len(s) == 1 for s in split_of.values()) and len(split_of) == 8
    # everything left out has its reason
    skipped = _skipped(out)
    for where, reason in archive["expected"]["skips"].items():
        hits = [r for r in skipped if r["path"] == where or r["path"].startswith(where + "/")]
        assert hits and any(reason in r["reason"] for r in hits), (where, reason, skipped)
    assert any("duplicate instance" in r["reason"] for r in skipped)
    # the run cleaned up after itself
    assert not work_dir_for(out).exists() and not (out.parent / f".{out.name}.partial").exists()


def _uid_with(good: dict, manufacturer: str, field: str | None) -> str:
    return next(uid for uid, entry in good.items() if _labels(entry)[:2] == (manufacturer, field))


@pytest.mark.slow  # the module's archive and a CLI run with spawned workers: about 35 s
def test_slices_are_the_axial_informative_slices_scaled_and_padded(archive, main_run):
    import tensorflow as tf

    out = main_run["out"]
    key = bytes.fromhex(main_run["key"].read_text().strip())
    good = archive["expected"]["good"]
    uid = _uid_with(good, "Siemens", None)  # an axial series: its phantom volume is the axial volume
    volume = good[uid]["series"]["volume"].astype(np.float32)
    kept = [k for k in range(volume.shape[0]) if is_informative(volume[k])]
    assert 0 < len(kept) < volume.shape[0]  # the filter dropped the caps of the head
    rows = [r for r in _manifest(out) if r["source_volume"] == P.pseudonym(key, uid, "ser")]
    assert [int(r["slice_index"]) for r in rows] == kept
    wanted = {int(r["slice_id"]): int(r["slice_index"]) for r in rows}
    shard = out / "slices" / rows[0]["shard"]
    seen = 0
    for raw in tf.data.TFRecordDataset(str(shard)).as_numpy_iterator():
        example = tf.train.Example.FromString(raw)
        slice_id = example.features.feature["slice_id"].int64_list.value[0]
        if slice_id in wanted:
            image = np.frombuffer(example.features.feature["image"].bytes_list.value[0], "<f2").reshape(SIZE, SIZE)
            expected, _ = pad_or_crop(scale_to_unit_range(volume[wanted[slice_id]]), SIZE)
            np.testing.assert_allclose(image, expected, atol=1e-3)
            seen += 1
    assert seen == len(rows)


@pytest.mark.slow  # the module's archive and a CLI run with spawned workers: about 35 s
def test_no_identifier_in_dataset_or_logs(archive, main_run):
    out = main_run["out"]
    planted = archive["planted"]
    assert len(planted) > 40  # names, dates, accession and every UID of every input file
    key_hex = main_run["key"].read_text().strip()
    texts = {"stdout": main_run["proc"].stdout.encode(), "stderr": main_run["proc"].stderr.encode()}
    for path in out.rglob("*"):
        if path.is_file():
            texts[str(path)] = path.read_bytes()
    assert len(texts) >= 6
    for where, blob in texts.items():
        lower = blob.lower()
        for value in planted:
            assert value.lower().encode() not in lower, f"{value!r} found in {where}"
        assert key_hex.encode() not in blob, f"the key is in {where}"
    assert not list(out.rglob("*.key"))


@pytest.mark.slow  # the module's archive and a CLI run with spawned workers: about 35 s
def test_rerun_after_kill_resumes_and_gives_the_same_dataset(archive, main_run, tmp_path):
    out = tmp_path / "killed"
    work = work_dir_for(out)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "geco_tf_cli.main", "preprocess", str(archive["dicom"]), "--out", str(out),
         "--size", str(SIZE), "--workers", "1", "--key-file", str(main_run["key"])],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if work.is_dir() and len([p for p in work.glob("ser-*.json")]) >= 3:
            break
        time.sleep(0.005)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists(), "a killed run left an output directory"
    done = sorted(work.glob("ser-*.json"))
    for path in work.iterdir():  # every file under its final name is whole (temporary ones are hidden)
        if path.name.startswith("."):
            continue
        if path.suffix in (".json", ".started"):  # records; start counts of series being converted
            json.loads(path.read_text())
        else:
            assert np.load(path).ndim == 3
    for record in done:
        if json.loads(record.read_text())["status"] == "ok":
            assert record.with_suffix(".npy").is_file()
    summary = preprocess(out, dicom_dir=archive["dicom"], size=SIZE, workers=1, key_file=main_run["key"])
    assert summary.n_resumed >= len(done) >= 3
    assert summary.n_converted == summary.n_series - summary.n_resumed
    assert _manifest(out) == _manifest(main_run["out"])
    assert sorted(map(tuple, (r.values() for r in _skipped(out)))) == sorted(
        map(tuple, (r.values() for r in _skipped(main_run["out"])))
    )


def test_nifti_csv_with_default_key_beside_the_dataset(tmp_path):
    rng = np.random.default_rng(3)
    volume = np.zeros((40, 36, 30), dtype=np.float32)  # i, j, k
    volume[5:35, 4:32, 3:27] = rng.uniform(100, 900, size=(30, 28, 24))
    affines = {
        "ras.nii.gz": np.diag([1.0, 1.0, 2.0, 1.0]),
        "lps.nii": np.diag([-1.0, -1.0, 2.0, 1.0]),
        "pir.nii.gz": np.array([[0, 0, -2.0, 0], [-1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 0, 1]]),
    }
    for name, affine in affines.items():
        nib.save(nib.Nifti1Image(volume, affine), tmp_path / name)
    nib.save(nib.Nifti1Image(np.stack([volume, volume * 2], axis=-1), np.eye(4)), tmp_path / "4d.nii.gz")
    rows = [
        ("path", "subject", "manufacturer", "field_strength", "modality"),
        ("ras.nii.gz", "Jane Zyxwvut", "SIEMENS", "1.494", "t1 post"),
        ("lps.nii", "Jane Zyxwvut", "GE Healthcare", "3", "T2"),
        ("pir.nii.gz", "Bob Qwertyuiop", "Philips Medical Systems", "3T", "FLAIR"),
        ("4d.nii.gz", "Carl Mnbvcxz", "IMAGING BIOMETRICS", "1.5", "T2 FLAIR"),
        ("missing.nii.gz", "Carl Mnbvcxz", "SIEMENS", "3", "T2"),
        ("ras.nii.gz", "Dora Lkjhg", "", "3", "T2"),
    ]
    with open(tmp_path / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    out = tmp_path / "data"
    summary = preprocess(out, nifti_csv=tmp_path / "labels.csv", size=48, workers=1)
    assert summary.key_file == str(tmp_path / "data.key") and (tmp_path / "data.key").is_file()
    manifest = _manifest(out)
    labels = {(r["manufacturer"], r["field_strength"], r["modality"]) for r in manifest}
    assert labels == {("Siemens", "1.5T", "T1 POST"), ("GE Medical Systems", "3T", "T2"), ("Philips", "3T", "FLAIR"),
                      ("Imaging Biometrics", "1.5T", "T2 FLAIR")}
    per_volume: dict[str, list[int]] = {}
    for r in manifest:
        per_volume.setdefault(r["source_volume"], []).append(int(r["slice_index"]))
    # data fill k = 3..26 (24 slices; k runs along S in three files) and j = 4..31 (28; j runs along S in
    # the PIR file); the all-black slices are dropped by the 90% rule
    assert sorted(len(v) for v in per_volume.values()) == [24, 24, 24, 28]
    reasons = {r["path"]: r["reason"] for r in _skipped(out)}
    assert "file not found" in reasons["missing.nii.gz"] and "missing manufacturer" in reasons["ras.nii.gz"]
    blob = b"".join(p.read_bytes() for p in out.rglob("*") if p.is_file()).lower()
    for secret in (b"zyxwvut", b"qwertyuiop", b"mnbvcxz", b"lkjhg"):
        assert secret not in blob
    assert json.loads((out / "dataset.json").read_text())["made_by"]["source"].startswith("NIfTI")


def test_cli_user_errors_are_one_line_exit_2(tmp_path):
    proc = _cli("preprocess", "--out", str(tmp_path / "d"))
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and "DICOM_DIR" in proc.stderr
    proc = _cli("preprocess", str(tmp_path / "nowhere"), "--out", str(tmp_path / "d"))
    assert proc.returncode == 2 and "nowhere" in proc.stderr and proc.stderr.strip().count("\n") == 0
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "thesis.docx").write_text("x")
    (tmp_path / "in").mkdir()
    proc = _cli("preprocess", str(tmp_path / "in"), "--out", str(busy))
    assert proc.returncode == 2 and "not empty" in proc.stderr
    proc = _cli("preprocess", str(tmp_path / "in"), "--out", str(tmp_path / "d"), "--key-file", str(tmp_path / "d" / "k"))
    assert proc.returncode == 2 and "outside the dataset" in proc.stderr
    proc = _cli("preprocess", str(tmp_path / "in"), "--out", str(tmp_path / "d"), "--quiet")
    assert proc.returncode == 2 and "no DICOM file found" in proc.stderr and proc.stderr.strip().count("\n") == 0
    assert not (tmp_path / "d").exists() and not (tmp_path / "d.key").exists()


def test_archive_without_usable_series_is_a_user_error(tmp_path):
    from geco_tf_cli.main import cli

    (tmp_path / "in").mkdir()
    shutil.copy(pydicom.data.get_testdata_file("CT_small.dcm"), tmp_path / "in" / "ct.dcm")
    result = CliRunner().invoke(cli, ["preprocess", str(tmp_path / "in"), "--out", str(tmp_path / "d"), "--workers", "1"])
    assert result.exit_code == 2
    assert "no usable slice" in result.output and "skipped.csv" in result.output
    assert "not MR" in (tmp_path / "d" / "skipped.csv").read_text()


def test_gzip_enhanced_source_untouched():
    """The nibabel file the enhanced tests rely on is still the real Philips Achieva header."""
    ds = pydicom.dcmread(gzip.open(nibabel_data("philips_mprage.dcm.gz")), stop_before_pixels=True)
    assert ds.ManufacturerModelName == "Achieva" and int(ds.NumberOfFrames) == 176


def test_output_and_key_inside_the_input_tree_are_not_read_back(tmp_path):
    root = tmp_path / "archive"
    write_series(root / "a", shape=(12, 32, 32), **_ids(20))
    write_series(root / "b", shape=(20, 32, 32), orientation="coronal", manufacturer="GE Healthcare", **_ids(21))
    first = preprocess(root / "data", dicom_dir=root, size=32, workers=1)
    assert first.written.n_series_ok == 2 and (root / "data.key").is_file()
    again = preprocess(root / "data", dicom_dir=root, size=32, workers=1)
    assert again.n_inputs == first.n_inputs and again.n_series == 2
    assert _skipped(root / "data") == []
