"""The torture set for ``geco-tf preprocess``: bad DICOM, NIfTI and CSV inputs, each
with its one-line reason in ``skipped.csv`` (or a one-line exit-2 error), no traceback, and every
original file byte-identical afterwards.

The inputs are built here (pydicom, nibabel) into two trees, one DICOM and one NIfTI + CSV,
around a few good series, so that each run also shows that one bad input costs only itself.
"""

from __future__ import annotations

import csv
import hashlib
import os
import random
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pydicom.data
import pytest
from click.testing import CliRunner
from dicom_series import nibabel_data, philips_enhanced, write_series
from geco_tf_cli.main import cli
from pydicom.encaps import encapsulate

pytestmark = pytest.mark.slow  # two trees of ~250 files and three preprocess runs: about 20 s

GOOD_UNICODE = "Patiënt ü/serie 1 – T1"

#: DICOM tree: input (relative path) -> the reason expected in skipped.csv.
DICOM_EXPECTED = {
    "bad/empty.dcm": "not a DICOM file",
    "bad/garbage.bin": "not a DICOM file",
    "bad/notes.txt": "not a DICOM file",
    "bad/preamble_then_garbage.dcm": "DICOM header without SeriesInstanceUID",
    "bad/header_cut.dcm": "DICOM header without SeriesInstanceUID",
    "bad/truncated_pixels.dcm": "pixel data",
    "bad/no_decoder": "no decoder for the transfer syntax: MPEG2 Main Profile / Main Level",
    "bad/huge_dimensions": "pixel data shorter than Rows x Columns (2048 of 1800000000 bytes)",
    "bad/multiframe_no_geometry.dcm": "enhanced multi-frame object without per-frame functional groups",
    "bad/four_d_missing": "4-D series with unequal volumes (1 to 2 images per position): missing slices?",
    "bad/ct.dcm": "modality CT, not MR",
    "bad/sc_rgb.dcm": "secondary capture",
    "bad/mosaic.dcm": "Siemens mosaic (EPI/diffusion) series that cannot be de-mosaicked",
    "bad/localiser": "localiser (scout) series",
    "bad/no_manufacturer": "missing Manufacturer (0008,0070)",
    "bad/no_field": "missing or unreadable MagneticFieldStrength (0018,0087)",
    "bad/gap": "uneven slice spacing",
    "bad/single_sagittal": "too thin",
    "bad/all_black": "no informative axial slice",
    "bad/no_geometry": "geometry unknown",
    "bad/mixed_sizes": "mixed image sizes in one series",
    "bad/DICOMDIR": "DICOMDIR (an index of the files, not an image)",
    "good2": "duplicate instance (same SOPInstanceUID as another file of the series)",
    "caf\\xe9/x\\xff.dcm": "not a DICOM file",  # a name that is not UTF-8, written with \\x escapes
}
#: NIfTI + CSV tree: input -> reason in skipped.csv.
NIFTI_EXPECTED = {
    "empty.nii": "unreadable NIfTI",
    "garbage.nii": "unreadable NIfTI",
    "short.nii": "truncated NIfTI: the header declares 512x512x512 voxels",
    "five_d.nii": "5-D data with more than one volume per time point",
    "thin.nii": "too thin",
    "missing.nii": "file not found (line",
    "labels.csv:9": "fields where the header has 5 (an unquoted comma? put the path in double quotes)",
    "good a.nii": "listed twice in the CSV (line 11, first on line 2)",
    "nofield.nii": "missing or unreadable field_strength",
    "nosubject.nii": "empty subject",
}


def _hashes(root: Path) -> dict[str, str]:
    out = {}
    for dirpath, _, files in os.walk(root):  # links not followed: each original once
        for name in files:
            path = Path(dirpath) / name
            if path.is_file() and not path.is_symlink():
                out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _series_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def build_dicom_tree(root: Path) -> None:
    bad = root / "bad"
    bad.mkdir(parents=True)
    rng = random.Random(33)
    (bad / "empty.dcm").write_bytes(b"")
    (bad / "garbage.bin").write_bytes(rng.randbytes(4096))
    (bad / "notes.txt").write_text("not an image, ünïcödé\n")
    (bad / "preamble_then_garbage.dcm").write_bytes(b"\0" * 128 + b"DICM" + rng.randbytes(300))
    mr = Path(pydicom.data.get_testdata_file("MR_small.dcm")).read_bytes()
    (bad / "header_cut.dcm").write_bytes(mr[:700])
    truncated = pydicom.dcmread(pydicom.data.get_testdata_file("MR_truncated.dcm"))
    truncated.MagneticFieldStrength = 1.5
    truncated.save_as(bad / "truncated_pixels.dcm")
    series = write_series(bad / "no_decoder", shape=(4, 32, 32))
    for f in series["files"]:
        ds = pydicom.dcmread(f)
        ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG-2 video: no decoder
        ds.PixelData = encapsulate([rng.randbytes(100)])
        ds["PixelData"].VR = "OB"
        ds.save_as(f, enforce_file_format=True)
    series = write_series(bad / "huge_dimensions", shape=(4, 32, 32))
    for f in series["files"]:
        ds = pydicom.dcmread(f)
        ds.Rows = ds.Columns = 30000  # declares 30000 x 30000 over 2 kB of pixel data
        ds.save_as(f)
    philips_enhanced(bad / "multiframe_no_geometry.dcm", frames=4, size=32)
    ds = pydicom.dcmread(bad / "multiframe_no_geometry.dcm")
    del ds.PerFrameFunctionalGroupsSequence
    ds.SeriesInstanceUID = pydicom.uid.generate_uid()  # not the good enhanced object's series
    ds.save_as(bad / "multiframe_no_geometry.dcm")
    first = write_series(bad / "four_d_missing", shape=(6, 32, 32), extra={"TemporalPositionIdentifier": 1})
    write_series(bad / "four_d_missing", shape=(6, 32, 32), skip_slices=(3,), seed=4,
                 extra={"TemporalPositionIdentifier": 2, "SeriesInstanceUID": first["series_uid"]})
    shutil.copy(pydicom.data.get_testdata_file("CT_small.dcm"), bad / "ct.dcm")
    shutil.copy(pydicom.data.get_testdata_file("SC_rgb_rle.dcm"), bad / "sc_rgb.dcm")
    shutil.copy(nibabel_data("0.dcm"), bad / "mosaic.dcm")
    write_series(bad / "localiser", shape=(4, 32, 32), extra={"ImageType": ["ORIGINAL", "PRIMARY", "LOCALIZER"]})
    write_series(bad / "no_manufacturer", shape=(4, 32, 32), manufacturer=None)
    write_series(bad / "no_field", shape=(4, 32, 32), field_strength=None)
    write_series(bad / "gap", shape=(8, 32, 32), skip_slices=(4,))
    write_series(bad / "single_sagittal", orientation="sagittal", shape=(1, 32, 32))
    write_series(bad / "all_black", shape=(4, 32, 32), volume=np.zeros((4, 32, 32), np.int16))
    series = write_series(bad / "no_geometry", shape=(4, 32, 32))
    for f in series["files"]:
        ds = pydicom.dcmread(f)
        del ds.ImagePositionPatient
        ds.save_as(f)
    first = write_series(bad / "mixed_sizes", shape=(4, 32, 32))
    write_series(bad / "mixed_sizes", shape=(4, 24, 24), origin=(-30, -25, 0),
                 extra={"SeriesInstanceUID": first["series_uid"]})
    shutil.copy(pydicom.data.get_testdata_file("DICOMDIR"), bad / "DICOMDIR")
    # good series: unicode and spaces in the path, a duplicate copy, an enhanced multi-frame object
    write_series(root / GOOD_UNICODE, shape=(6, 32, 32), manufacturer="GE MEDICAL SYSTEMS", patient_id="P1")
    good2 = write_series(root / "good2", shape=(6, 32, 32), patient_id="P2", field_strength=1.5)
    shutil.copy(good2["files"][0], root / "good2" / "copy of one.dcm")
    (root / "enhanced").mkdir()
    philips_enhanced(root / "enhanced" / "IM_0001", frames=20, size=32)
    os.symlink(root, root / "loop")  # a folder link back to the root: walked once
    # file names that are not valid UTF-8 (Latin-1 bytes from an old export): a series and junk
    latin = os.fsencode(root) + b"/caf\xe9"
    os.makedirs(latin)
    with open(latin + b"/x\xff.dcm", "wb") as f:
        f.write(b"junk")
    write_series(os.fsdecode(latin + b"/s\xe9rie"), shape=(6, 32, 32), patient_id="P3")


def build_nifti_tree(root: Path) -> Path:
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)

    def volume(shape=(24, 24, 6)):
        data = np.zeros(shape, np.float32)
        data[3:-3, 3:-3] = rng.uniform(100, 900, (shape[0] - 6, shape[1] - 6, *shape[2:]))
        return data

    for name in ("good a.nii", "vol é.nii", "a,b.nii", "nofield.nii", "nosubject.nii"):
        nib.save(nib.Nifti1Image(volume(), np.eye(4)), root / name)
    (root / "empty.nii").write_bytes(b"")
    (root / "garbage.nii").write_bytes(random.Random(1).randbytes(1000))
    header = nib.Nifti1Header()
    header.set_data_shape((512, 512, 512))
    header.set_data_dtype(np.float32)
    nib.save(nib.Nifti1Image(np.zeros((2, 2, 2), np.float32), np.eye(4)), root / "short.nii")
    short = bytearray((root / "short.nii").read_bytes())
    short[:348] = header.binaryblock  # a header declaring 512^3 float32 over 32 bytes of data
    (root / "short.nii").write_bytes(bytes(short))
    nib.save(nib.Nifti1Image(rng.uniform(0, 1, (24, 24, 6, 2, 2)).astype(np.float32), np.eye(4)), root / "five_d.nii")
    nib.save(nib.Nifti1Image(rng.uniform(100, 900, (3, 40, 40)).astype(np.float32), np.eye(4)), root / "thin.nii")
    lines = [
        "path,subject,manufacturer,field_strength,modality",  # 1
        "good a.nii,sub-1,GE,3,T1",  # 2: a space in the path
        "vol é.nii,sübject é,Siemens,1.5,T2",  # 3: Latin-1 text (the file is encoded Latin-1)
        "a,b.nii,sub-3,Philips,3,FLAIR",  # 4: an unquoted comma in a path that exists
        "empty.nii,sub-4,GE,3,T1",  # 5
        "garbage.nii,sub-5,GE,3,T1",  # 6
        "short.nii,sub-6,GE,3,T1",  # 7
        "five_d.nii,sub-7,GE,3,T1",  # 8
        "x,y,z.nii,sub-8,GE,3,T1",  # 9: an unquoted comma, and no such file either way
        "thin.nii,sub-9,GE,3,T1",  # 10
        "good a.nii,sub-1,GE,3,T1",  # 11: a duplicate row
        "missing.nii,sub-10,GE,3,T1",  # 12
        "nofield.nii,sub-11,GE,,T1",  # 13
        "nosubject.nii,,GE,3,T1",  # 14
    ]
    (root / "labels.csv").write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    return root / "labels.csv"


def _invoke(*args: str):
    result = CliRunner().invoke(cli, list(args), catch_exceptions=True)
    text = result.output  # stdout and stderr, interleaved
    assert "Traceback" not in text, text
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result, text


def _skips(out: Path) -> list[tuple[str, str]]:
    with open(out / "skipped.csv", newline="") as f:
        return [(r["path"], r["reason"]) for r in csv.DictReader(f)]


def _matches(skips, where: str, reason: str) -> bool:
    return any((p == where or p.startswith(where + "/")) and reason in r for p, r in skips)


def test_dicom_torture(tmp_path):
    root = tmp_path / "in"
    build_dicom_tree(root)
    before = _hashes(root)
    out = tmp_path / "out"
    result, text = _invoke("preprocess", str(root), "--out", str(out), "--size", "32", "--workers", "1",
                           "--quiet", "--key-file", str(tmp_path / "k.key"))
    assert result.exit_code == 0, text
    skips = _skips(out)
    missing = {w: r for w, r in DICOM_EXPECTED.items() if not _matches(skips, w, r)}
    assert not missing, (missing, skips)
    with open(out / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    # unicode path, good2 (one copy dropped), enhanced, the series under a non-UTF-8 name
    assert len({r["source_volume"] for r in rows}) == 4
    assert "dataset:" in text and "4 series" in text
    assert _hashes(root) == before


def test_nifti_and_csv_torture(tmp_path):
    root = tmp_path / "in"
    labels = build_nifti_tree(root)
    before = _hashes(root)
    out = tmp_path / "out"
    result, text = _invoke("preprocess", "--nifti-csv", str(labels), "--out", str(out), "--size", "32",
                           "--workers", "1", "--quiet")
    assert result.exit_code == 0, text
    skips = _skips(out)
    missing = {w: r for w, r in NIFTI_EXPECTED.items() if not _matches(skips, w, r)}
    assert not missing, (missing, skips)
    with open(out / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["manufacturer"] for r in rows} == {"GE Medical Systems", "Siemens", "Philips"}  # good, é, a,b
    assert _hashes(root) == before
    # the same rows with a UTF-8 BOM read the same
    bom = root / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbf" + labels.read_bytes().decode("latin-1").encode("utf-8"))
    before = _hashes(root)
    result, text = _invoke("preprocess", "--nifti-csv", str(bom), "--out", str(tmp_path / "out2"), "--size", "32",
                           "--workers", "1", "--quiet", "--key-file", str(tmp_path / "k2.key"))
    assert result.exit_code == 0, text
    with open(tmp_path / "out2" / "manifest.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == len(rows)
    assert _hashes(root) == before


@pytest.mark.parametrize(
    "case,message",
    [
        ("binary_csv", "not a text CSV (it holds binary data)"),
        ("no_columns", "missing column(s) subject, manufacturer, field_strength, modality"),
        ("out_under_a_file", "lies under"),
        ("unwritable_out", "no permission to write there"),
    ],
)
def test_bad_runs_are_one_line_exit_2(tmp_path, case, message):
    root = tmp_path / "in"
    root.mkdir()
    nib.save(nib.Nifti1Image(np.ones((20, 20, 4), np.float32), np.eye(4)), root / "v.nii")
    labels = root / "labels.csv"
    labels.write_text("path,subject,manufacturer,field_strength,modality\nv.nii,s,GE,3,T1\n")
    out = tmp_path / "out"
    if case == "binary_csv":
        labels.write_bytes(b"path,subject\0\x01\x02")
    elif case == "no_columns":
        labels.write_text("path\nv.nii\n")
    elif case == "out_under_a_file":
        (tmp_path / "afile").write_text("x")
        out = tmp_path / "afile" / "out"
    elif case == "unwritable_out":
        if os.geteuid() == 0:
            pytest.skip("running as root: permissions do not stop writes (out_under_a_file covers an unwritable --out)")
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        out = locked / "out"
    before = _hashes(root)
    result, text = _invoke("preprocess", "--nifti-csv", str(labels), "--out", str(out), "--quiet")
    assert result.exit_code == 2
    lines = [line for line in text.strip().splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], text
    assert _hashes(root) == before
    assert not out.exists() or case == "unwritable_out"
