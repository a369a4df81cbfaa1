"""``geco-tf deartifact``: run a trained generator over users' NIfTI volumes and DICOM series.

The work is three public stages with stable names, called in this order by the local loop
(:func:`deartifact_path`) and by a distributed runner alike (e.g. one Apache Beam DoFn calling
:func:`run_job` per job):

:func:`plan` ``(input_path, output, *, strip_vendor_tags, model_name, batch_size) -> (jobs, skipped)``
    Finds the NIfTI files and DICOM series (one :class:`Job` each, picklable, carrying every
    option a worker needs) and what cannot be used (``(path, reason)``: not DICOM, no image,
    not MR). Refuses with :class:`~geco_tf.errors.UserError` any ``output`` that overlaps the
    input tree in either direction (the same folder, ``output`` inside INPUT, INPUT inside
    ``output``, ``output`` equal to an input file or, for a file INPUT, its own folder) and any
    output path that is an input (symlinks and hard links included). Writes nothing except,
    with ``strip_vendor_tags``, the run's UID key ``OUTPUT/.geco-uid-key`` (kept so that a
    resumed run maps UIDs the same way).
:func:`run_job` ``(model_fn, job, overwrite=False) -> Outcome``
    De-artifacts one job and never raises for a bad input: an unreadable file, a MemoryError
    or an unwritable output gives ``Outcome.status == "skipped"`` with the reason. Outputs are
    written atomically (temporary name, then rename); a ``.partial`` marker is written before
    the first output and the job's **completion marker** (``.<name>.done`` beside a NIfTI
    output, ``.series-<hash>.done`` in a DICOM output folder) after the last. A job whose
    marker exists is not redone (``status == "finished-before"``); its own stale temporaries
    (``.<output name>.*.tmp*``) are removed first; an existing output that no unfinished run of
    ours left behind is never replaced unless ``overwrite``.
:func:`finish` ``(summary, input_path, output) -> Path | None``
    Writes ``OUTPUT/skipped.csv`` (path, reason) and raises :class:`UserError` when nothing at
    all was (or had been) de-artifacted.

The originals are only ever read. Slices go through the model in the training layout
(:mod:`geco_tf.export.slices`: axial LPS, non-finite voxels out as the background); NIfTI is
written by :mod:`geco_tf.export.nifti_writer`, DICOM by :mod:`geco_tf.export.dicom_writer`
(and :mod:`geco_tf.export.vendor_tags` for ``--strip-vendor-tags``).
"""

from __future__ import annotations

import csv
import glob
import hashlib
import io
import json
import os
import secrets
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tensorflow as tf

from geco_tf.errors import UserError
from geco_tf.export.dicom_writer import deartifact_series, group_series, output_names
from geco_tf.export.load import load_deartifactor
from geco_tf.export.nifti_writer import NIFTI_SUFFIXES, deartifact_nifti, is_nifti
from geco_tf.export.slices import (
    AXIAL_CODES,
    DEFAULT_BATCH,
    MIN_AXIAL_SIDE,
    Deartifactor,
    InputSkipped,
    deartifact_volume,
    run_slices,
    to_dtype,
)
from geco_tf.io import write_text_atomic
from geco_tf.progress import QUIET, Progress

__all__ = [
    "AXIAL_CODES", "DEFAULT_BATCH", "MIN_AXIAL_SIDE", "NIFTI_SUFFIXES", "Deartifactor", "InputSkipped", "Job",
    "Outcome", "Summary", "deartifact_nifti", "deartifact_path", "deartifact_volume", "finish", "is_nifti",
    "plan", "run_job", "run_jobs", "run_slices", "to_dtype",
]  # fmt: skip

#: Files never considered as inputs when walking a directory.
IGNORED_SUFFIXES = {
    ".txt", ".md", ".json", ".csv", ".tsv", ".html", ".xml", ".png", ".jpg", ".jpeg", ".gif",
    ".bval", ".bvec", ".py", ".zip", ".tar", ".gz", ".log", ".pdf",
}  # fmt: skip
SKIPPED_FILE = "skipped.csv"
UID_KEY_FILE = ".geco-uid-key"
DONE_SUFFIX = ".done"
PARTIAL_SUFFIX = ".partial"


@dataclass
class Job:
    """One unit of work: a NIfTI file or one DICOM series, where it goes and how.

    ``output`` is the output file (NIfTI) or folder (DICOM); ``outputs`` every file written;
    ``marker`` the completion marker written after the last of them.
    """

    kind: str  # "nifti" or "dicom"
    inputs: list[Path]
    output: Path
    label: str
    outputs: list[Path] = field(default_factory=list)
    marker: Path | None = None
    strip_vendor_tags: bool = False
    model_name: str = "geco"
    batch_size: int = DEFAULT_BATCH
    uid_key: str | None = None

    def __post_init__(self) -> None:
        self.inputs = [Path(p) for p in self.inputs]
        self.output = Path(self.output)
        if not self.outputs:
            names = [self.output.name] if self.kind == "nifti" else output_names(self.inputs, self.strip_vendor_tags)
            self.outputs = [self.output] if self.kind == "nifti" else [self.output / n for n in names]
        if self.marker is None:
            if self.kind == "nifti":
                self.marker = self.output.parent / f".{self.output.name}{DONE_SUFFIX}"
            else:
                self.marker = _series_marker(self.output, [p.name for p in self.outputs])

    @property
    def partial_marker(self) -> Path:
        """Written before the first output: the outputs present are this tool's unfinished work."""
        assert self.marker is not None
        return self.marker.with_name(self.marker.name[: -len(DONE_SUFFIX)] + PARTIAL_SUFFIX)


@dataclass
class Outcome:
    """What happened to one job: ``status`` is "done", "finished-before" or "skipped" (``reason``)."""

    job: Job
    images: int
    mode: str
    seconds: float
    notes: list[str] = field(default_factory=list)
    status: str = "done"
    reason: str = ""


@dataclass
class Summary:
    """All jobs of one ``deartifact`` call."""

    done: list[Outcome] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    finished_before: list[Outcome] = field(default_factory=list)

    def add(self, outcome: Outcome) -> None:
        """File ``outcome`` under done, finished before, or skipped (label, reason)."""
        if outcome.status == "done":
            self.done.append(outcome)
        elif outcome.status == "finished-before":
            self.finished_before.append(outcome)
        else:
            self.skipped.append((outcome.job.label, outcome.reason))


# --------------------------------------------------------------------------------------------
# plan


def one_line(text: str, limit: int = 300) -> str:
    """A reason as one line (library messages such as nibabel's span several), at most ``limit`` chars."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _check_no_overlap(src: Path, out: Path) -> None:
    """Refuse an output that overlaps the input in either direction (paths resolved)."""
    s, o = src.resolve(), out.resolve()
    hint = "choose a folder outside the input so the originals stay untouched"
    if src.is_file():
        if o == s:
            raise UserError(f"--out: {out} is the input file; {hint}")
        if _inside(s, o):
            what = "the input file's own folder" if o == s.parent else f"a folder that contains the input {src}"
            raise UserError(f"--out: {out} is {what}; {hint}")
        return
    if o == s:
        raise UserError(f"--out: {out} is the input directory; {hint}")
    if _inside(o, s):
        raise UserError(f"--out: {out} is inside the input directory {src}; {hint}")
    if _inside(s, o):
        raise UserError(f"--out: {out} contains the input directory {src}; {hint}")


def _check_writable(out: Path) -> None:
    probe = out if out.exists() else next((p for p in out.parents if p.exists()), Path("."))
    if probe.is_dir() and not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"--out: {probe}: no permission to write here")


def _check_outputs_are_not_inputs(jobs: list[Job]) -> None:
    """No output (or marker) may be an input file: by resolved path or by inode (hard links)."""
    inputs = {p.resolve() for job in jobs for p in job.inputs}
    inodes = {(st.st_dev, st.st_ino) for st in (os.stat(p) for job in jobs for p in job.inputs)}
    for job in jobs:
        for path in [*job.outputs, job.marker, job.partial_marker]:
            if path is None:
                continue
            same = path.resolve() in inputs
            if not same and path.exists():
                st = os.stat(path)
                same = (st.st_dev, st.st_ino) in inodes
            if same:
                raise UserError(f"--out: the output {path} is an input file; choose another --out")


def _series_marker(out_dir: Path, names: list[str]) -> Path:
    digest = hashlib.sha256("\0".join(sorted(names)).encode()).hexdigest()[:16]
    return out_dir / f".series-{digest}{DONE_SUFFIX}"


def _dicom_job(files: list[Path], out_dir: Path, label: str, strip: bool) -> Job:
    return Job("dicom", files, out_dir, label, strip_vendor_tags=strip)


def _nifti_job(src: Path, dst: Path) -> Job:
    return Job("nifti", [src], dst, str(src))


def _uid_key(out: Path) -> str:
    """The run's key for the UID map: read from ``OUTPUT/.geco-uid-key`` or made and kept there."""
    path = out / UID_KEY_FILE
    if path.is_file():
        key = path.read_text().strip()
        if key:
            return key
    key = secrets.token_hex(32)
    write_text_atomic(path, key + "\n")
    path.chmod(0o600)
    return key


def plan(
    input_path: str | os.PathLike,
    output: str | os.PathLike,
    *,
    strip_vendor_tags: bool = False,
    model_name: str = "geco",
    batch_size: int = DEFAULT_BATCH,
) -> tuple[list[Job], list[tuple[str, str]]]:
    """Find the NIfTI files and DICOM series under ``input_path`` and where each result goes.

    A NIfTI file given directly may go to a ``.nii``/``.nii.gz`` path; anything else goes to
    the directory ``output``, mirroring the input tree (a DICOM series keeps its file names,
    except UID-like names under ``strip_vendor_tags``). Returns (jobs, skipped) with skipped as
    (path, reason). Raises :class:`UserError` for an output that overlaps the input.
    """
    src = Path(input_path)
    out = Path(output)
    if not src.exists():
        raise UserError(f"INPUT: {src}: no such file or directory")
    _check_no_overlap(src, out)
    jobs: list[Job] = []
    skipped: list[tuple[str, str]] = []
    if src.is_file():
        if is_nifti(src):
            dst = out if is_nifti(out) and not out.is_dir() else out / src.name
            jobs.append(_nifti_job(src, dst))
        else:
            if out.exists() and not out.is_dir():
                raise UserError(f"--out: {out} exists and is a file; DICOM output goes to a directory")
            series, skipped = group_series([src])
            jobs = [
                _dicom_job(files, out, f"{src} ({len(files)} images)", strip_vendor_tags) for files in series.values()
            ]
    else:
        if out.exists() and not out.is_dir():
            raise UserError(f"--out: {out} exists and is a file; a directory INPUT needs an output directory")
        candidates: list[Path] = []
        for path in sorted(src.rglob("*")):
            if not path.is_file() or path.name.startswith("."):
                continue
            if is_nifti(path):
                jobs.append(_nifti_job(path, out / path.relative_to(src)))
            elif path.suffix.lower() not in IGNORED_SUFFIXES and path.name.upper() != "DICOMDIR":
                candidates.append(path)
        series, skipped = group_series(candidates)
        for (_, _uid), files in sorted(series.items(), key=lambda kv: (str(kv[1][0]), kv[0][1])):
            rel = files[0].parent.relative_to(src)
            label = f"{files[0].parent} ({len(files)} images)"
            jobs.append(_dicom_job(files, out / rel, label, strip_vendor_tags))
    _check_outputs_are_not_inputs(jobs)
    if jobs:
        _check_writable(out if not (jobs[0].kind == "nifti" and jobs[0].output == out) else out.parent)
    key = _uid_key(out) if strip_vendor_tags and any(job.kind == "dicom" for job in jobs) else None
    for job in jobs:
        job.strip_vendor_tags, job.model_name, job.batch_size = strip_vendor_tags, model_name, batch_size
        job.uid_key = key
    return jobs, [(path, one_line(reason)) for path, reason in skipped]


# --------------------------------------------------------------------------------------------
# run one job


def _remove_stale_temporaries(job: Job) -> None:
    """Delete what an interrupted :func:`geco_tf.io.atomic_path` left for this job's outputs."""
    for path in [*job.outputs, job.marker, job.partial_marker]:
        if path is None or not path.parent.is_dir():
            continue
        for stale in glob.glob(str(path.parent / f".{glob.escape(path.name)}.*.tmp*")):
            stale_path = Path(stale)
            if stale_path.is_dir() and not stale_path.is_symlink():
                shutil.rmtree(stale_path, ignore_errors=True)
            else:
                stale_path.unlink(missing_ok=True)


def _write_marker(path: Path, job: Job) -> None:
    write_text_atomic(path, json.dumps({"outputs": [p.name for p in job.outputs]}) + "\n")


def run_job(model_fn: Deartifactor, job: Job, overwrite: bool = False) -> Outcome:
    """De-artifact one job (see the module docstring); never raises for a bad input."""
    start = time.perf_counter()

    def skipped(reason: str) -> Outcome:
        return Outcome(job, 0, "", time.perf_counter() - start, status="skipped", reason=one_line(reason))

    marker = job.marker
    assert marker is not None
    _remove_stale_temporaries(job)
    if marker.exists() and not overwrite:
        return Outcome(job, 0, "", 0.0, ["finished in an earlier run"], status="finished-before")
    ours = job.partial_marker.exists()
    for path in job.outputs:
        if path.is_dir():
            return skipped(f"output {path} is a directory")
        if path.exists() and not (ours or overwrite):
            return skipped(f"output {path} exists (not from an unfinished run of this tool); --overwrite replaces it")
    try:
        _write_marker(job.partial_marker, job)
        if job.kind == "nifti":
            images, mode, notes = deartifact_nifti(model_fn, job.inputs[0], job.output, job.batch_size)
        else:
            images, mode, notes = deartifact_series(
                model_fn,
                job.inputs,
                job.outputs,
                strip_vendor_tags=job.strip_vendor_tags,
                model_name=job.model_name,
                batch_size=job.batch_size,
                uid_key=job.uid_key,
            )
        _write_marker(marker, job)
        job.partial_marker.unlink(missing_ok=True)
    except InputSkipped as exc:
        outcome = skipped(str(exc))
    except (MemoryError, tf.errors.ResourceExhaustedError) as exc:
        outcome = skipped(f"out of memory ({type(exc).__name__}); skipped, the rest of the run goes on")
    except OSError as exc:
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        outcome = skipped(f"cannot write the output ({where}{exc.strerror or type(exc).__name__})")
    else:
        return Outcome(job, images, mode, time.perf_counter() - start, notes)
    if not any(p.exists() for p in job.outputs):
        job.partial_marker.unlink(missing_ok=True)  # nothing of ours left behind
    return outcome


def run_jobs(
    fn: Deartifactor,
    jobs: Iterable[Job],
    *,
    overwrite: bool = False,
    summary: Summary | None = None,
    progress: Progress = QUIET,
) -> Summary:
    """Run every job with a progress bar, collecting outcomes and skips (a bad input never
    stops the rest)."""
    summary = summary if summary is not None else Summary()
    jobs = list(jobs)
    for job in progress.track(jobs, total=len(jobs), desc="de-artifacting"):
        summary.add(run_job(fn, job, overwrite=overwrite))
    return summary


# --------------------------------------------------------------------------------------------
# finish


def write_skipped(summary: Summary, output: Path) -> Path | None:
    """``OUTPUT/skipped.csv`` (path, reason) when the output is a directory; returns its path
    (None when nothing was skipped: a stale list of an earlier run is then removed)."""
    if is_nifti(output) and not output.is_dir():
        return None
    path = output / SKIPPED_FILE
    if not summary.skipped:
        path.unlink(missing_ok=True)
        return None
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["path", "reason"])
    writer.writerows(summary.skipped)
    write_text_atomic(path, buffer.getvalue())
    return path


def finish(summary: Summary, input_path: str | os.PathLike, output: str | os.PathLike) -> Path | None:
    """Write the skipped list; raise :class:`UserError` when nothing at all was de-artifacted
    (in this run or an earlier one into the same output)."""
    if not summary.done and not summary.finished_before:
        if summary.skipped:
            path, reason = summary.skipped[0]
            more = f" (and {len(summary.skipped) - 1} more)" if len(summary.skipped) > 1 else ""
            raise UserError(f"{path}: {reason}{more}")
        raise UserError(f"INPUT: {input_path}: no NIfTI (.nii, .nii.gz) or DICOM files found")
    return write_skipped(summary, Path(output))


def _model_name(model: Any, description: str) -> str:
    """Only the model's name goes into DICOM headers, never a path from the user's machine."""
    return Path(model).name if isinstance(model, (str, os.PathLike)) else description.split(" ")[0]


def deartifact_path(
    model: Any,
    input_path: str | os.PathLike,
    output: str | os.PathLike,
    *,
    strip_vendor_tags: bool = False,
    batch_size: int = DEFAULT_BATCH,
    overwrite: bool = False,
    progress: Progress = QUIET,
) -> Summary:
    """Library entry point: de-artifact everything under ``input_path`` into ``output``.

    ``model`` is a run directory, a ``.keras`` file, an exported SavedModel, a Keras generator
    or a raw -> raw function. Raises :class:`UserError` for an overlapping output or when
    nothing could be processed.
    """
    jobs, skipped = plan(input_path, output, strip_vendor_tags=strip_vendor_tags, batch_size=batch_size)
    summary = Summary(skipped=list(skipped))
    if jobs:
        fn, description = load_deartifactor(model)
        progress.note(f"model: {description}")
        name = _model_name(model, description)
        for job in jobs:
            job.model_name = name
        run_jobs(fn, jobs, overwrite=overwrite, summary=summary, progress=progress)
    finish(summary, input_path, output)
    return summary
