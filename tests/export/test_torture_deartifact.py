"""Issue 33, item 7: the deartifact torture set.

Bad inputs of every kind we know of -- overlapping ``--out`` in each direction, an output that is
an input, zero-length and garbage files, truncated NIfTI, NaN and infinite voxels, a 2-D and a
4-D NIfTI, CT and PET series, a DICOM with no decoder, one declaring huge dimensions over short
pixel data, one without an image, enhanced multi-frame, unicode and spaces in paths, existing
outputs without ``--overwrite``, stale temporaries, interrupted runs, a MemoryError. Each test
asserts the one-line message or the skip reason, that nothing raised (no traceback), and that
every original file is byte-identical afterwards (SHA-256 before and after).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
nib = pytest.importorskip("nibabel")
pytest.importorskip("tensorflow")

from click.testing import CliRunner  # noqa: E402
from dicom_series import philips_enhanced, write_series  # noqa: E402
from geco_tf_cli.main import cli  # noqa: E402
from pydicom.encaps import encapsulate  # noqa: E402

from geco_tf.errors import UserError  # noqa: E402
from geco_tf.export.deartifact import SKIPPED_FILE, deartifact_path, plan, run_job  # noqa: E402

#: Axial width that makes :func:`fake_model` raise MemoryError (no other input has it).
MEMORY_HOG_WIDTH = 18


def fake_model(batch: np.ndarray) -> np.ndarray:
    """The generator's stand-in in scanner units (changes every pixel); MemoryError on one input."""
    batch = np.asarray(batch, dtype=np.float32)
    if batch.shape[2] == MEMORY_HOG_WIDTH:
        raise MemoryError("simulated")
    return batch * 0.9 + 3.0


def digest_tree(root: Path) -> dict[str, str]:
    """SHA-256 of every file under ``root`` (hidden ones too)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def save_nifti(path: Path, data: np.ndarray, dtype=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = nib.Nifti1Image(np.asarray(data, dtype=dtype or data.dtype), np.diag([2.0, 2.0, 3.0, 1.0]))
    nib.save(image, path)
    return path


def head(shape=(24, 28, 6), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.gamma(2.0, 60.0, shape) + 50).astype(np.int16)


def dicom_file(path: Path, **changes) -> Path:
    """pydicom's MR_small with ``changes`` applied (keyword -> value; file meta via ``meta_``)."""
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    for keyword, value in changes.items():
        if keyword.startswith("meta_"):
            setattr(ds.file_meta, keyword[5:], value)
        elif value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=False)
    return path


#: Input -> what it must get: ("done", note or "") or ("skipped", reason substring).
EXPECTED = {
    "good/t1.nii.gz": ("done", ""),
    "ünïcode dir/t1 with space.nii.gz": ("done", ""),
    "séries 1 (MR)": ("done", ""),
    "four_d.nii.gz": ("done", "3 volumes"),
    "nan_background.nii.gz": ("done", "non-finite voxels written as the volume's background"),
    "inf_voxels.nii": ("done", "non-finite voxels written as the volume's background"),
    "enhanced": ("done", ""),
    "empty.nii.gz": ("skipped", "unreadable NIfTI"),
    "empty_dicom": ("skipped", "not a DICOM or NIfTI file"),
    "garbage.dcm": ("skipped", "not a DICOM or NIfTI file"),
    "garbage.nii": ("skipped", "unreadable NIfTI"),
    "truncated.nii": ("skipped", "unreadable NIfTI"),
    "truncated.nii.gz": ("skipped", "unreadable NIfTI"),
    "all_nan.nii.gz": ("skipped", "no finite voxel"),
    "two_d.nii.gz": ("skipped", "not a 3-D volume"),
    "memory_hog.nii.gz": ("skipped", "out of memory (MemoryError)"),
    "ct": ("skipped", "Modality CT, not MR"),
    "pet": ("skipped", "Modality PT, not MR"),
    "huge_dims": ("skipped", "unreadable pixel data"),
    "no_decoder": ("skipped", "unreadable pixel data"),
    "truncated_dicom": ("skipped", "unreadable pixel data"),
    "no_image": ("skipped", "DICOM without an image"),
    "colour": ("skipped", "not a greyscale image"),
}


def build_junk(src: Path) -> None:
    """Every input of :data:`EXPECTED` under ``src``."""
    from pydicom.data import get_testdata_file

    save_nifti(src / "good" / "t1.nii.gz", head())
    save_nifti(src / "ünïcode dir" / "t1 with space.nii.gz", head(seed=1))
    write_series(src / "séries 1 (MR)", shape=(6, 20, 24))
    save_nifti(src / "four_d.nii.gz", np.stack([head(seed=s) for s in range(3)], axis=-1))
    nan = head(seed=2).astype(np.float32)
    nan[:4] = np.nan  # an SPM/FSL-style masked background
    nan[:, :3] = np.nan
    save_nifti(src / "nan_background.nii.gz", nan)
    inf = head(seed=3).astype(np.float32)
    inf[0, 0, :] = np.inf
    inf[1, 1, :] = -np.inf
    save_nifti(src / "inf_voxels.nii", inf)
    (src / "enhanced").mkdir()
    philips_enhanced(src / "enhanced" / "IM_enhanced.dcm", frames=4, size=32)
    (src / "empty.nii.gz").write_bytes(b"")
    (src / "empty_dicom").write_bytes(b"")
    (src / "garbage.dcm").write_bytes(os.urandom(700))
    (src / "garbage.nii").write_bytes(os.urandom(700))
    whole = save_nifti(src / "whole.nii", head(seed=4)).read_bytes()
    (src / "whole.nii").unlink()
    (src / "truncated.nii").write_bytes(whole[: len(whole) // 2])
    (src / "truncated.nii.gz").write_bytes(gzip.compress(whole)[:300])
    save_nifti(src / "all_nan.nii.gz", np.full((20, 20, 4), np.nan, np.float32))
    save_nifti(src / "two_d.nii.gz", head()[:, :, 0])
    save_nifti(src / "memory_hog.nii.gz", head((MEMORY_HOG_WIDTH, 30, 10)))
    write_series(src / "ct", shape=(4, 20, 24), extra={"Modality": "CT"})
    dicom_file(src / "pet" / "PT0001.dcm", Modality="PT")
    dicom_file(src / "huge_dims" / "IM0001.dcm", Rows=40000, Columns=40000)
    no_decoder = dicom_file(src / "no_decoder" / "IM0001.dcm")
    ds = pydicom.dcmread(no_decoder)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2: no decoder in pydicom
    ds.PixelData = encapsulate([b"\x00\x00\x01\xb3" + bytes(96)])
    ds["PixelData"].VR, ds["PixelData"].is_undefined_length = "OB", True
    ds.save_as(no_decoder, enforce_file_format=False)
    (src / "truncated_dicom").mkdir()
    shutil.copy(get_testdata_file("MR_truncated.dcm"), src / "truncated_dicom" / "MR_truncated.dcm")
    dicom_file(src / "no_image" / "SR0001.dcm", Rows=None, Columns=None, PixelData=None)
    dicom_file(src / "colour" / "IM0001.dcm", PhotometricInterpretation="RGB", SamplesPerPixel=3)


def outcome_of(summary, src: Path) -> dict[str, tuple[str, str]]:
    """EXPECTED's keys -> (status, note or reason) from a Summary."""
    found: dict[str, tuple[str, str]] = {}
    for key in EXPECTED:
        for outcome in summary.done:
            if str(src / key) in outcome.job.label:
                found[key] = ("done", "; ".join(outcome.notes))
        for label, reason in summary.skipped:
            if (
                label == str(src / key)
                or label.startswith(str(src / key) + os.sep)
                or label.startswith(f"{src / key} (")
            ):
                found[key] = ("skipped", reason)
    return found


def test_every_junk_input_gets_its_outcome_and_no_original_changes(tmp_path):
    src, out = tmp_path / "INPUT", tmp_path / "OUT"
    build_junk(src)
    before = digest_tree(src)
    summary = deartifact_path(fake_model, src, out)  # raises nothing: the run goes on
    found = outcome_of(summary, src)
    for key, (status, text) in EXPECTED.items():
        assert key in found, f"{key}: no outcome"
        assert found[key][0] == status and text in found[key][1], (key, found[key])
        assert "\n" not in found[key][1] and "Traceback" not in found[key][1]
    assert len(summary.done) + len(summary.skipped) == len(EXPECTED)  # one outcome each, nothing else
    assert digest_tree(src) == before
    # NaN background: no finite input voxel comes out non-finite; the NaN ones come out finite.
    nan_in = nib.load(src / "nan_background.nii.gz").get_fdata()
    nan_out = nib.load(out / "nan_background.nii.gz").get_fdata()
    assert np.isfinite(nan_out).all()
    assert (nan_out[~np.isfinite(nan_in)] == np.nanmin(nan_in)).all()  # the volume's background
    assert np.abs(nan_out - nan_in)[np.isfinite(nan_in)].max() > 1  # and the rest went through the model
    assert np.isfinite(nib.load(out / "inf_voxels.nii").get_fdata()).all()
    assert nib.load(out / "four_d.nii.gz").shape == (24, 28, 6, 3)
    assert (out / "ünïcode dir" / "t1 with space.nii.gz").is_file()
    rows = (out / SKIPPED_FILE).read_text(encoding="utf-8").splitlines()
    assert rows[0] == "path,reason" and len(rows) == 1 + len(summary.skipped)
    assert not list(out.rglob("*.tmp*")) and not list(out.rglob("*.partial"))


@pytest.mark.slow
def test_cli_junk_tree_one_line_per_skip_no_traceback(tmp_path, tiny_run):
    src, out = tmp_path / "in put", tmp_path / "out"
    build_junk(src)
    (src / "memory_hog.nii.gz").unlink()  # (only the stand-in model runs out of memory)
    before = digest_tree(src)
    result = CliRunner().invoke(cli, ["deartifact", "--model", str(tiny_run), str(src), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    skip_lines = [line for line in result.output.splitlines() if line.startswith("skipped ")]
    assert len(skip_lines) == sum(1 for status, _ in EXPECTED.values() if status == "skipped") - 1
    assert "done: 7 volume(s)/series" in result.output
    assert digest_tree(src) == before
    quiet = CliRunner().invoke(cli, ["deartifact", "--model", str(tiny_run), str(src), "--out", str(out), "--quiet"])
    assert quiet.exit_code == 0 and "skipped " not in quiet.output and "7 finished earlier (kept)" in quiet.output


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    import keras

    from geco_tf.models.generators import UNetGenerator

    keras.utils.set_random_seed(0)
    generator = UNetGenerator(depth=1, base_filters=2)
    generator(np.zeros((1, 16, 16, 1), np.float32))
    path = tmp_path_factory.mktemp("run") / "run"
    path.mkdir()
    generator.save(path / "generator.keras")
    return path


# --------------------------------------------------------------------------------------------
# --out that overlaps the input: exit 2, one line, nothing written


def overlap_cases(tmp_path: Path) -> list[tuple[str, Path, Path, str]]:
    """(case, INPUT, --out, message) for every way an output can overlap the input."""
    src = tmp_path / "study"
    save_nifti(src / "t1.nii.gz", head())
    files = [Path(p) for p in write_series(src / "sub", shape=(4, 20, 24))["files"]]
    (tmp_path / "link_to_study").symlink_to(src, target_is_directory=True)
    return [
        ("same folder", src, src, "is the input directory"),
        ("out inside input (holding originals)", src, src / "sub", "is inside the input directory"),
        ("out inside input (new folder)", src, src / "new", "is inside the input directory"),
        ("input inside out", src, tmp_path, "contains the input directory"),
        ("symlink to the input", src, tmp_path / "link_to_study", "is the input directory"),
        ("DICOM file into its own folder", files[0], files[0].parent, "the input file's own folder"),
        ("DICOM file into a folder above it", files[0], src, "a folder that contains the input"),
        ("NIfTI file onto itself", src / "t1.nii.gz", src / "t1.nii.gz", "is the input file"),
        ("NIfTI file into its own folder", src / "t1.nii.gz", src, "the input file's own folder"),
    ]


def test_overlapping_out_exits_2_with_one_line_and_touches_nothing(tmp_path):
    cases = overlap_cases(tmp_path)
    before = digest_tree(tmp_path)
    for case, src, out, message in cases:
        result = CliRunner().invoke(
            cli, ["deartifact", "--model", str(tmp_path / "unused"), str(src), "--out", str(out)]
        )
        assert result.exit_code == 2, (case, result.output)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and message in lines[0] and "Traceback" not in result.output, (case, lines)
        with pytest.raises(UserError, match=message):
            plan(src, out)
    assert digest_tree(tmp_path) == before
    assert not (tmp_path / "study" / "new").exists()


def test_output_that_is_an_input_by_hard_link_is_refused(tmp_path):
    src = tmp_path / "in"
    save_nifti(src / "t1.nii.gz", head())
    (tmp_path / "out").mkdir()
    os.link(src / "t1.nii.gz", tmp_path / "out" / "t1.nii.gz")  # the output path *is* the input file
    before = digest_tree(src)
    with pytest.raises(UserError, match="is an input file"):
        deartifact_path(fake_model, src, tmp_path / "out", overwrite=True)
    assert digest_tree(src) == before


# --------------------------------------------------------------------------------------------
# reruns: completion markers, stale temporaries, --overwrite


def small_tree(src: Path) -> None:
    save_nifti(src / "a" / "t1.nii.gz", head())
    write_series(src / "b" / "series", shape=(5, 20, 24))


def test_rerun_keeps_finished_outputs_and_removes_stale_temporaries(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    small_tree(src)
    before = digest_tree(src)
    first = deartifact_path(fake_model, src, out)
    assert len(first.done) == 2
    written = digest_tree(out)
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    # Temporaries an interrupted run of ours would leave, and a hidden file that is not ours.
    series_file = sorted((out / "b" / "series").glob("*"))[-1]
    stale = [out / "a" / ".t1.nii.gz.k3j2x9.tmp.nii.gz", series_file.parent / f".{series_file.name}.q8w7e6.tmp"]
    for path in stale:
        path.write_bytes(b"half a file")
    (out / "a" / ".notes").write_text("mine")
    again = deartifact_path(fake_model, src, out)
    assert not again.done and len(again.finished_before) == 2 and not again.skipped
    assert all(o.notes == ["finished in an earlier run"] for o in again.finished_before)
    assert not any(p.exists() for p in stale)  # our own stale temporaries are gone
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # nothing rewritten
    assert digest_tree(src) == before
    # An unfinished job (its output lost) is redone; the others stay as they are.
    (out / "a" / ".t1.nii.gz.done").unlink()
    (out / "a" / "t1.nii.gz").unlink()
    third = deartifact_path(fake_model, src, out)
    assert len(third.done) == 1 and len(third.finished_before) == 1
    assert (out / "a" / ".notes").read_text() == "mine"
    assert digest_tree(out)["a/t1.nii.gz"] == written["a/t1.nii.gz"]


def test_existing_output_is_not_replaced_without_overwrite(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    small_tree(src)
    before = digest_tree(src)
    (out / "a").mkdir(parents=True)
    (out / "a" / "t1.nii.gz").write_bytes(b"somebody else's file")
    summary = deartifact_path(fake_model, src, out)
    assert len(summary.done) == 1  # the DICOM series
    (label, reason), *_ = summary.skipped
    assert label.endswith("t1.nii.gz") and "exists" in reason and "--overwrite" in reason
    assert (out / "a" / "t1.nii.gz").read_bytes() == b"somebody else's file"
    replaced = deartifact_path(fake_model, src, out, overwrite=True)
    assert len(replaced.done) == 2 and nib.load(out / "a" / "t1.nii.gz").shape == (24, 28, 6)
    assert digest_tree(src) == before


def test_interrupted_job_is_finished_on_rerun(tmp_path):
    """A run killed after the first DICOM file: the .partial marker says the files present are
    ours, so the rerun replaces them without --overwrite and writes the completion marker."""
    src, out = tmp_path / "in", tmp_path / "out"
    small_tree(src)
    jobs, _ = plan(src, out)
    series = next(job for job in jobs if job.kind == "dicom")
    series.partial_marker.parent.mkdir(parents=True)
    series.partial_marker.write_text("{}")
    series.outputs[0].write_bytes(b"half of the run")
    outcome = run_job(fake_model, series)
    assert outcome.status == "done" and series.marker.is_file() and not series.partial_marker.exists()
    assert pydicom.dcmread(series.outputs[0]).Rows == 20
    assert run_job(fake_model, series).status == "finished-before"


def test_memory_error_skips_one_input_not_the_run(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    small_tree(src)
    save_nifti(src / "big.nii.gz", head((MEMORY_HOG_WIDTH, 30, 10)))
    summary = deartifact_path(fake_model, src, out)
    assert len(summary.done) == 2
    assert summary.skipped == [
        (str(src / "big.nii.gz"), "out of memory (MemoryError); skipped, the rest of the run goes on")
    ]
    assert not (out / "big.nii.gz").exists() and not list(out.rglob("*.partial"))
    assert "big.nii.gz" in (out / SKIPPED_FILE).read_text()


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores file permissions")
def test_output_folder_without_write_permission(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    small_tree(src)
    out.mkdir()
    out.chmod(0o500)
    try:
        with pytest.raises(UserError, match="no permission to write"):
            deartifact_path(fake_model, src, out)
    finally:
        out.chmod(0o700)
