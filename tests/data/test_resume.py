"""Resuming preprocess is right: changed inputs and labels are converted again, failed and
out-of-memory series are retried, a series that kills its worker twice is skipped with a reason
(and does not kill the run), and a MemoryError skips one series, not the run."""

from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from geco_tf.data import nifti as N
from geco_tf.data import privacy as P
from geco_tf.data.preprocess import (
    KILLED_REASON,
    MAX_ATTEMPTS,
    convert_jobs,
    nifti_jobs,
    preprocess,
    started_attempts,
    work_dir_for,
)
from geco_tf.progress import QUIET

VENDORS = ("GE", "Siemens", "Philips")


def _volumes(root: Path, names=("a", "b", "c", "d")) -> Path:
    """Small float NIfTI volumes and a labels CSV; returns the CSV path."""
    root.mkdir(parents=True, exist_ok=True)
    rows = ["path,subject,manufacturer,field_strength,modality"]
    for i, name in enumerate(names):
        data = np.zeros((24, 24, 6), dtype=np.float32)
        data[3:21, 3:21, :] = np.random.default_rng(i).uniform(100, 900, size=(18, 18, 6))
        nib.save(nib.Nifti1Image(data, np.eye(4)), root / f"{name}.nii")
        rows.append(f"{name}.nii,subj-{name},{VENDORS[i % 3]},3,T1")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root / "labels.csv"


def _manifest(out: Path) -> list[dict]:
    with open(out / "manifest.csv", newline="") as f:
        return list(csv.DictReader(f))


def _skipped(out: Path) -> list[dict]:
    with open(out / "skipped.csv", newline="") as f:
        return list(csv.DictReader(f))


def _run(csv_path: Path, out: Path, **kwargs):
    return preprocess(out, nifti_csv=csv_path, size=32, workers=1, keep_work=True, key_file=out.parent / "k.key",
                      **kwargs)


def test_changed_labels_and_files_are_converted_again(tmp_path):
    labels = _volumes(tmp_path / "in")
    out = tmp_path / "out"
    first = _run(labels, out)
    assert first.n_converted == 4 and first.n_resumed == 0
    again = _run(labels, out)
    assert again.n_converted == 0 and again.n_resumed == 4
    # a label corrected in the CSV after the run: that volume is converted again, with the new label
    labels.write_text(labels.read_text().replace("b.nii,subj-b,Siemens", "b.nii,subj-b,Philips"))
    fixed = _run(labels, out)
    assert fixed.n_converted == 1 and fixed.n_resumed == 3
    assert {r["manufacturer"] for r in _manifest(out) if r["subject"] == _subject(tmp_path, "subj-b")} == {"Philips"}
    # a file replaced (new size and mtime): converted again
    path = tmp_path / "in" / "c.nii"
    nib.save(nib.Nifti1Image(np.asarray(nib.load(path).dataobj)[:, :, :5].copy(), np.eye(4)), path)
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    changed = _run(labels, out)
    assert changed.n_converted == 1 and changed.n_resumed == 3


def _subject(tmp_path: Path, name: str) -> str:
    key = bytes.fromhex((tmp_path / "k.key").read_text().strip())
    return P.pseudonym(key, name, "sub")


def test_memory_error_skips_one_series_and_is_retried(tmp_path, monkeypatch):
    labels = _volumes(tmp_path / "in")
    out = tmp_path / "out"
    real = N.load_axial

    def short_of_memory(path):
        if str(path).endswith("b.nii"):
            raise MemoryError
        return real(path)

    monkeypatch.setattr(N, "load_axial", short_of_memory)
    summary = _run(labels, out)
    assert summary.written.n_series_ok == 3 and summary.written.n_series_skipped == 1
    assert [r["reason"] for r in _skipped(out)] == ["series of 1 file(s): series too large for this machine's memory"]
    monkeypatch.setattr(N, "load_axial", real)
    rerun = _run(labels, out)
    assert rerun.n_converted == 1 and rerun.written.n_series_ok == 4 and _skipped(out) == []


def test_failed_series_are_retried(tmp_path, monkeypatch):
    labels = _volumes(tmp_path / "in")
    out = tmp_path / "out"
    real = N.load_axial
    monkeypatch.setattr(N, "load_axial", lambda p: (_ for _ in ()).throw(RuntimeError("bug")) if "a.nii" in str(p) else real(p))
    summary = _run(labels, out)
    assert summary.written.n_failed == 1
    assert any("internal error (RuntimeError: bug)" in r["reason"] for r in _skipped(out))
    monkeypatch.setattr(N, "load_axial", real)
    rerun = _run(labels, out)
    assert rerun.n_converted == 1 and rerun.written.n_failed == 0 and rerun.written.n_series_ok == 4


def test_a_series_started_twice_without_a_record_is_skipped(tmp_path):
    labels = _volumes(tmp_path / "in")
    out = tmp_path / "out"
    _run(labels, out)
    work = work_dir_for(out)
    records = {json.loads(p.read_text())["where"]: p for p in work.glob("vol-*.json")}
    # as a run killed twice while converting b.nii leaves it: no record, a start count of 2
    records["b.nii"].unlink()
    (work / f"{records['b.nii'].stem}.started").write_text(json.dumps({"attempts": MAX_ATTEMPTS}))
    # and one killed once while converting c.nii: tried again
    records["c.nii"].unlink()
    (work / f"{records['c.nii'].stem}.started").write_text(json.dumps({"attempts": 1}))
    summary = _run(labels, out)
    assert summary.written.n_series_ok == 3 and summary.n_converted == 1
    assert [(r["path"], r["reason"]) for r in _skipped(out)] == [("b.nii", f"series of 1 file(s): {KILLED_REASON}")]
    assert not (work / f"{records['c.nii'].stem}.started").exists()


@pytest.mark.slow  # spawns worker processes: about 10 s
def test_a_series_that_kills_its_worker_twice_does_not_kill_the_run(tmp_path):
    labels = _volumes(tmp_path / "in", names=("a", "crash", "c", "d", "e"))
    work = tmp_path / "work"
    work.mkdir()
    found = nifti_jobs(labels, b"k" * 32, P.Scrubber(tmp_path))
    records: dict[str, dict] = {}
    with QUIET.bar(total=len(found.jobs)) as bar:
        convert_jobs(found.jobs, work, 2, lambda job, record: records.__setitem__(job.where, record), bar,
                     convert=_crashing_converter())
    assert sorted(records) == ["a.nii", "c.nii", "crash.nii", "d.nii", "e.nii"]
    assert records["crash.nii"]["status"] == "skipped" and records["crash.nii"]["reason"] == KILLED_REASON
    assert all(records[n]["status"] == "ok" for n in ("a.nii", "c.nii", "d.nii", "e.nii"))
    crash = next(j for j in found.jobs if j.where == "crash.nii")
    assert started_attempts(work, crash.id) == MAX_ATTEMPTS


def _crashing_converter():
    from crash_convert import convert

    return convert
