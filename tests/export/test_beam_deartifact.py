"""``geco-tf deartifact --runner beam`` against the local loop on a folder of NIfTI volumes and
DICOM series: the same output files, voxels, headers and skipped list; a rerun after a failed
element finishes the rest; without Apache Beam, one line and exit 2."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")
pydicom = pytest.importorskip("pydicom")
nib = pytest.importorskip("nibabel")

from click.testing import CliRunner  # noqa: E402
from dicom_series import write_series  # noqa: E402
from fake_run import make_random_run  # noqa: E402
from without_beam import MISSING_BEAM, run_without_beam  # noqa: E402

from geco_tf.export.deartifact import deartifact_path  # noqa: E402

#: Beam in this process, one element at a time (fast, and a failure stops the run where it is).
IN_PROCESS = "--direct_running_mode=in_memory --direct_num_workers=1"
#: Header values a run makes afresh (UIDs, dates and times of creation): not compared.
FRESH_VRS = {"UI", "DA", "TM", "DT"}


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """A fake run directory holding a small random U-Net (``fake_run.make_random_run``)."""
    return make_random_run(tmp_path_factory.mktemp("run") / "run")


def write_nifti(path: Path, seed: int, shape=(24, 20, 12)) -> None:
    rng = np.random.default_rng(seed)
    data = np.rint(100 + rng.gamma(2.0, 40.0, shape)).astype(np.int16)
    affine = np.array([[0.0, 0.0, 1.1, -20.0], [-0.9, 0.0, 0.0, 30.0], [0.0, -1.2, 0.0, 25.0], [0, 0, 0, 1]])
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), path)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """Two NIfTI volumes, two DICOM series (axial and sagittal) and a file that is neither."""
    root = tmp_path_factory.mktemp("inputs") / "study"
    write_nifti(root / "nifti" / "a.nii.gz", seed=1)
    write_nifti(root / "nifti" / "deep" / "b.nii", seed=2, shape=(20, 24, 16))
    write_series(root / "dicom" / "ax", "axial", shape=(6, 24, 20), seed=3)
    write_series(root / "dicom" / "sag", "sagittal", shape=(16, 20, 20), seed=4)
    (root / "dicom" / "junk.dat").write_bytes(b"\x00not dicom at all" * 20)
    return root


@pytest.fixture(scope="module")
def local(model, inputs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("local") / "out"
    deartifact_path(model, inputs, out)
    return out


def files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def dicom_view(path: Path) -> tuple[np.ndarray, dict]:
    ds = pydicom.dcmread(path)
    return ds.pixel_array, {
        e.keyword or str(e.tag): str(e.value) for e in ds if e.VR not in FRESH_VRS and e.tag != 0x7FE00010
    }


def assert_same_outputs(a: Path, b: Path) -> None:
    """The same files (markers and skipped.csv included); NIfTI header and voxels equal; DICOM
    pixels and every header value but fresh UIDs/dates equal."""
    assert files(a) == files(b)
    n_nifti = n_dicom = 0
    for name in files(a):
        pa, pb = a / name, b / name
        if name.endswith((".nii", ".nii.gz")):
            ia, ib = nib.load(pa), nib.load(pb)
            assert ia.header.binaryblock == ib.header.binaryblock, name
            assert np.array_equal(np.asanyarray(ia.dataobj), np.asanyarray(ib.dataobj)), name
            n_nifti += 1
        elif name.startswith("dicom/") and not Path(name).name.startswith("."):
            (xa, ha), (xb, hb) = dicom_view(pa), dicom_view(pb)
            assert np.array_equal(xa, xb), name
            assert ha == hb, name
            n_dicom += 1
        elif name == "skipped.csv":
            assert list(csv.reader(open(pa))) == list(csv.reader(open(pb)))
    assert n_nifti == 2 and n_dicom == 6 + 16


@pytest.mark.slow
def test_direct_runner_gives_the_local_outputs(model, inputs, local, tmp_path):
    pytest.importorskip("apache_beam")
    from geco_tf.export.beam_deartifact import deartifact_beam

    out = tmp_path / "out"
    summary = deartifact_beam(model, inputs, out, beam_options=IN_PROCESS)
    assert len(summary.done) == 4 and len(summary.skipped) == 1
    assert_same_outputs(local, out)
    assert not list(out.glob(".geco-beam-*"))  # the scratch folder is gone

    again = deartifact_beam(model, inputs, out, beam_options=IN_PROCESS)
    assert len(again.done) == 0 and len(again.finished_before) == 4  # a rerun skips finished outputs
    assert_same_outputs(local, out)


@pytest.mark.slow
def test_rerun_after_a_failed_element_finishes_the_rest(model, inputs, local, tmp_path, monkeypatch):
    pytest.importorskip("apache_beam")
    from geco_tf.data.beam_runner import FAIL_ENV
    from geco_tf.errors import UserError
    from geco_tf.export.beam_deartifact import deartifact_beam

    out = tmp_path / "out"
    monkeypatch.setenv(FAIL_ENV, "deep")  # the worker given nifti/deep/b.nii dies
    with pytest.raises(UserError, match="simulated worker failure.*run the same command again"):
        deartifact_beam(model, inputs, out, beam_options=IN_PROCESS)
    assert not (out / "nifti" / "deep" / "b.nii").exists()
    finished = len(list(out.rglob(".*.done")))
    assert finished < 4

    monkeypatch.delenv(FAIL_ENV)
    summary = deartifact_beam(model, inputs, out, beam_options=IN_PROCESS)
    assert len(summary.finished_before) == finished  # not redone
    assert len(summary.done) == 4 - finished
    assert "deep" in " ".join(str(o.job.output) for o in summary.done)
    assert_same_outputs(local, out)


@pytest.mark.slow
def test_cli_runner_beam_with_beam_options(model, inputs, local, tmp_path):
    """The CLI's --runner beam --beam-options (in-process here; tests/data/test_beam_preprocess.py
    runs the default multi-processing DirectRunner)."""
    pytest.importorskip("apache_beam")
    from geco_tf_cli.main import cli

    out = tmp_path / "out"
    result = CliRunner().invoke(
        cli, ["deartifact", "--model", str(model), str(inputs), "--out", str(out), "--runner", "beam",
              "--beam-options", IN_PROCESS, "--quiet"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "done: 4 volume(s)/series" in result.output
    assert_same_outputs(local, out)


def test_without_beam_runner_beam_is_one_line_and_exit_2(inputs, tmp_path):
    proc, lines = run_without_beam(
        ["deartifact", "--model", str(tmp_path / "model.keras"), str(inputs), "--out", str(tmp_path / "out"), "--runner", "beam"]
    )
    assert proc.returncode == 2, proc.stderr
    assert lines[-1].endswith(MISSING_BEAM), proc.stderr
    assert not (tmp_path / "out").exists()
