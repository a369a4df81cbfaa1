"""``geco-tf preprocess --runner beam`` against the local pool on one small pydicom archive: the
same manifest rows, split, slice bytes and skipped reasons; a rerun after a failed element
finishes the rest; and without Apache Beam, one line and exit 2."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from dicom_series import write_series
from without_beam import MISSING_BEAM, run_without_beam  # noqa: E402

from geco_tf.data.dataset import open_dataset
from geco_tf.data.preprocess import preprocess, work_dir_for

SIZE = 32
#: (manufacturer, field strength) per subject, cycled: every class has several subjects.
SCANNERS = (("SIEMENS", 3.0), ("GE MEDICAL SYSTEMS", 1.5), ("Philips Healthcare", 3.0), ("SIEMENS", 1.5))


def build_archive(root: Path, n_subjects: int = 8) -> None:
    """One T1 series per subject (axial or sagittal), a second series for every third subject,
    a thin coronal slab that cannot give axial slices, a text file and a truncated DICOM file;
    names, birth dates and accession numbers planted in the headers."""
    for i in range(n_subjects):
        maker, tesla = SCANNERS[i % len(SCANNERS)]
        ids = {"patient_id": f"MRN{i:04d}", "patient_name": f"Testperson^Number{i}", "accession": f"ACC{i:05d}",
               "study_uid": f"1.2.826.0.1.3680043.8.498.{i + 1}"}
        plane, shape = ("axial", (10, 24, 28)) if i % 2 else ("sagittal", (18, 20, 24))
        write_series(root / f"p{i}" / "t1", plane, shape=shape, seed=i, manufacturer=maker, field_strength=tesla,
                     description="t1_mprage", **ids)  # fmt: skip
        if i % 3 == 0:
            write_series(root / f"p{i}" / "t2", "axial", shape=(8, 24, 24), seed=100 + i, manufacturer=maker,
                         field_strength=tesla, description="t2_tse", **ids)  # fmt: skip
    write_series(root / "p1" / "slab", "coronal", shape=(6, 24, 24), seed=50, patient_id="MRN0001",
                 study_uid="1.2.826.0.1.3680043.8.498.2")
    (root / "notes.txt").write_text("not a DICOM file\n")
    first = sorted((root / "p0" / "t1").iterdir())[0]
    (root / "truncated.dcm").write_bytes(first.read_bytes()[:600])


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("archive") / "dicom"
    build_archive(root)
    return root


@pytest.fixture(scope="module")
def local(archive, tmp_path_factory) -> Path:
    """The local path's dataset, the reference."""
    out = tmp_path_factory.mktemp("local") / "data"
    preprocess(out, dicom_dir=archive, size=SIZE, workers=1, key_file=out.parent / "site.key")
    return out


def rows(path: Path, name: str) -> list[tuple]:
    with open(path / name, newline="") as f:
        return sorted(tuple(sorted(r.items())) for r in csv.DictReader(f))


def assert_same_dataset(a: Path, b: Path) -> None:
    """Same manifest rows (order aside), split, skipped reasons, shard bytes and dataset.json
    (its creation time aside)."""
    assert rows(a, "manifest.csv") == rows(b, "manifest.csv")
    assert rows(a, "skipped.csv") == rows(b, "skipped.csv")
    shards = sorted(p.name for p in (a / "slices").iterdir())
    assert shards == sorted(p.name for p in (b / "slices").iterdir())
    for name in shards:
        assert (a / "slices" / name).read_bytes() == (b / "slices" / name).read_bytes(), name
    info_a, info_b = (json.loads((d / "dataset.json").read_text()) for d in (a, b))
    info_a.pop("created"), info_b.pop("created")
    assert info_a == info_b


#: Beam in this process, one element at a time (fast, and a failure stops the run where it is).
IN_PROCESS = "--direct_running_mode=in_memory --direct_num_workers=1"


def run_beam(archive: Path, out: Path, key: Path, options: str = IN_PROCESS) -> object:
    from geco_tf.data.beam_preprocess import preprocess_beam

    return preprocess_beam(out, beam_options=options, dicom_dir=archive, size=SIZE, key_file=key)


@pytest.mark.slow
def test_direct_runner_gives_the_local_dataset(archive, local, tmp_path):
    pytest.importorskip("apache_beam")
    out = tmp_path / "data"
    summary = run_beam(archive, out, local.parent / "site.key")
    assert_same_dataset(local, out)
    data = open_dataset(out)
    assert {r["split"] for r in data.manifest} == {"train", "val", "test"}
    reasons = {r["reason"] for r in csv.DictReader(open(out / "skipped.csv"))}
    assert "not a DICOM file" in reasons
    assert any("too thin" in r for r in reasons)  # the coronal slab
    assert summary.written.n_series_ok == 11 and summary.written.n_series_skipped == 1
    assert not work_dir_for(out).exists()  # the work area is removed, as locally
    text = "".join(p.read_text(errors="replace") for p in out.glob("*.csv")) + (out / "dataset.json").read_text()
    assert "Testperson" not in text and "MRN0" not in text and "ACC0" not in text


@pytest.mark.slow
def test_rerun_after_a_failed_element_finishes_the_rest(archive, local, tmp_path, monkeypatch):
    pytest.importorskip("apache_beam")
    from geco_tf.data.beam_runner import FAIL_ENV
    from geco_tf.errors import UserError

    out = tmp_path / "data"
    key = local.parent / "site.key"
    monkeypatch.setenv(FAIL_ENV, "p5/t1")  # this series' worker dies after converting it
    with pytest.raises(UserError, match="simulated worker failure.*run the same command again"):
        run_beam(archive, out, key)
    work = work_dir_for(out)
    records = [json.loads(p.read_text()) for p in work.glob("*.json") if p.name != "state.json"]
    assert not out.exists()
    assert "p5/t1" not in [r["where"] for r in records]  # the failed series left no completion record

    monkeypatch.delenv(FAIL_ENV)
    summary = run_beam(archive, out, key)
    assert summary.n_resumed == len(records)  # what the failed run finished is not redone
    assert summary.n_converted == 12 - len(records)
    assert_same_dataset(local, out)


@pytest.mark.slow
def test_cli_runner_beam_multi_processing(archive, local, tmp_path):
    """The CLI with the default Beam options: DirectRunner, multi-processing, two workers."""
    pytest.importorskip("apache_beam")
    from geco_tf_cli.main import cli

    out = tmp_path / "data"
    result = CliRunner().invoke(
        cli, ["preprocess", str(archive), "--out", str(out), "--size", str(SIZE), "--key-file",
              str(local.parent / "site.key"), "--runner", "beam", "--quiet"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert_same_dataset(local, out)


def test_without_beam_runner_beam_is_one_line_and_exit_2(archive, tmp_path):
    """Apache Beam made unimportable in a fresh process: exit 2, one line naming the install."""
    proc, lines = run_without_beam(["preprocess", str(archive), "--out", str(tmp_path / "data"), "--runner", "beam"])
    assert proc.returncode == 2, proc.stderr
    assert lines[-1].endswith(MISSING_BEAM), proc.stderr
    assert not (tmp_path / "data").exists()


def test_beam_options_default_to_two_direct_processes_and_bad_ones_are_one_line():
    pytest.importorskip("apache_beam")
    from geco_tf.data.beam_runner import pipeline_options
    from geco_tf.errors import UserError

    default = pipeline_options(None).get_all_options()
    assert (default["runner"], default["direct_running_mode"], default["direct_num_workers"]) == (
        "DirectRunner", "multi_processing", 2,
    )
    flink = pipeline_options("--runner=FlinkRunner --flink_master=host:8081 --direct_num_workers=8").get_all_options()
    assert (flink["runner"], flink["flink_master"], flink["direct_num_workers"]) == ("FlinkRunner", "host:8081", 8)
    with pytest.raises(UserError, match="invalid int value: 'many'"):
        pipeline_options("--direct_num_workers=many")
    with pytest.raises(UserError, match="is not a flag"):
        pipeline_options("runner=FlinkRunner")
    with pytest.raises(UserError, match="cannot split"):
        pipeline_options('--job_name="unclosed')
