"""``geco-tf preprocess``: a DICOM tree (or NIfTI volumes with a labels CSV) to a dataset directory.

The run is three public stages, so that the local pool and a distributed runner (e.g. an Apache
Beam pipeline) call the same code:

1. **Discover** -- :func:`dicom_jobs` / :func:`nifti_jobs` return a :class:`Found`: the
   :class:`Job` list (one per series or volume, with its pseudonymous subject and a fingerprint
   of its input files' sizes and mtimes) plus ``skipped`` (path, reason) rows and warnings (e.g.
   PatientID shared across studies). Series are found by Series Instance UID
   (:func:`geco_tf.data.dicom.discover_series`) or from the rows of the labels CSV
   (:func:`geco_tf.data.nifti.read_labels_csv`). Subjects are told apart by ``subject_key``
   (patient, study or folder; see :func:`subject_values`).
2. **Convert** -- :func:`convert_job` ``(job, work_dir) -> record dict``, one series at a time:
   volume, reorientation to axial, the paper's informative-slice filter (section 3.3), non-finite
   voxels set to the background, scaling to [-1, 1]. The kept slices go to ``work_dir/<id>.npy``
   (written atomically); the record (labels, kept slice indices, status, reason, a hash of the
   slices) is returned. Locally, :func:`preprocess` runs it in ``--workers`` processes and writes
   each record (scrubbed with :func:`scrub_record`) to the work area *beside* the output
   (``.DATA.work/``), last, so a rerun resumes.
3. **Assemble** -- :func:`assemble_dataset` ``(out, records, skipped, seed=..., size=...)``: the
   split (:func:`geco_tf.data.splits.assign_splits`, a pure function of the records' subjects,
   labels, pixel hashes and the seed), the TFRecord shards, ``manifest.csv``, ``dataset.json`` and
   ``skipped.csv`` (via :class:`geco_tf.data.dataset.DatasetWriter`, which renames a complete
   directory into place), one series in memory at a time, padding (or centre-cropping, counted)
   to ``size``.

So the local path is discover -> convert in a pool -> assemble, and the work area is removed at
the end.

Resume: a work record is reused only when it carries the same input fingerprint (file sizes and
mtimes), subject and given labels as the job; series that failed with an internal error or ran
out of memory are converted again. A worker marks a series as started before converting it
(``<id>.started``, with a count); a series whose conversion was started twice without a record
(it killed its worker, e.g. for memory) is skipped with a reason instead of killing every rerun.

Privacy: subjects and series are keyed-hash pseudonyms (:mod:`geco_tf.data.privacy`); paths and
reasons in ``skipped.csv`` and every message are scrubbed of UIDs and of the names, ids, birth
dates and accession numbers seen in the headers. No header value other than the labels is written.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from functools import partial
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from geco_tf import __version__
from geco_tf.data import dicom as D
from geco_tf.data import privacy as P
from geco_tf.data.dataset import (
    FIELD_STRENGTHS,
    LESION,
    MANUFACTURERS,
    MODALITIES,
    DatasetWriter,
    SliceRecord,
)
from geco_tf.data.intensity import fill_non_finite, is_informative, pad_or_crop, scale_to_unit_range
from geco_tf.data.splits import SPLIT_FRACTIONS, SplitPlan, assign_splits, split_table
from geco_tf.errors import UserError
from geco_tf.io import atomic_path, write_json_atomic
from geco_tf.progress import QUIET, Progress

WORK_FORMAT = 2
DEFAULT_SIZE = 512
SUBJECT_KEYS = ("patient", "study", "folder")
#: A series whose conversion was started this many times without finishing is skipped.
MAX_ATTEMPTS = 2
KILLED_REASON = (
    "its conversion was killed twice (out of memory? try fewer --workers on a larger machine); "
    "remove the work area beside the dataset to try again"
)


@dataclass
class Job:
    """One series (or NIfTI volume) to convert. Holds paths, never written as they are."""

    id: str  # pseudonymous series id: work-area file stem and the manifest's source_volume
    subject: str  # pseudonymous subject id
    kind: str  # "dicom" or "nifti"
    files: list[str]
    where: str  # the path reported in skipped.csv (scrubbed before writing)
    given_labels: dict[str, Any] | None = None
    #: Hash of the input files' paths, sizes and mtimes: a changed input is converted again.
    inputs: str = ""


@dataclass
class Found:
    """What discovery found: the jobs, the inputs left out (path, reason) and warnings."""

    jobs: list[Job]
    skipped: list[tuple[str, str]]
    n_inputs: int
    subject_key: str = "patient"
    #: How many series fell back from PatientID to the study (shared or empty PatientID).
    subject_fallback_series: int = 0
    warnings: list[str] = field(default_factory=list)


@dataclass
class Assembly:
    """What :func:`assemble_dataset` wrote."""

    n_slices: int = 0
    n_series_ok: int = 0
    n_series_skipped: int = 0
    n_failed: int = 0
    n_files_skipped: int = 0
    n_cropped: int = 0
    notes: Counter = field(default_factory=Counter)
    plan: SplitPlan | None = None
    table: str = ""
    messages: list[str] = field(default_factory=list)


@dataclass
class Summary:
    """What a run did; the CLI prints it and tests check it."""

    out: str
    key_file: str
    key_created: bool
    n_inputs: int = 0
    n_series: int = 0
    n_resumed: int = 0
    n_converted: int = 0
    #: What was written: slices, series kept and skipped, notes, the split table.
    written: Assembly = field(default_factory=Assembly)
    #: Largest peak RSS of a process that converted series in this run (a worker, or this process).
    converter_peak_rss_mb: float = 0.0
    seconds: dict[str, float] = field(default_factory=dict)
    subject_key: str = "patient"
    #: The split's warnings and those of finding the inputs.
    warnings: list[str] = field(default_factory=list)


# --- converting one series (runs in a worker process) ----------------------------------------


def volume_slices(volume: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """Axial slices of ``volume`` [z, y, x] that pass the informative filter, scaled to [-1, 1].

    Non-finite voxels must already be replaced (:func:`geco_tf.data.intensity.fill_non_finite`).
    Returns float16 [n, y, x] (the dataset stores float16) and the kept slice indices.
    """
    kept: list[int] = []
    out = np.empty(volume.shape, dtype=np.float16)
    for k in range(volume.shape[0]):
        raw = volume[k]
        if is_informative(raw):
            out[len(kept)] = scale_to_unit_range(raw)
            kept.append(k)
    return out[: len(kept)], kept


def _started_path(work_dir: str | os.PathLike, job_id: str) -> Path:
    return Path(work_dir) / f"{job_id}.started"


def started_attempts(work_dir: str | os.PathLike, job_id: str) -> int:
    """How many times a conversion of ``job_id`` started without its record being kept."""
    try:
        return int(json.loads(_started_path(work_dir, job_id).read_text()).get("attempts", 0))
    except (OSError, ValueError, AttributeError):
        return 0


def mark_started(work_dir: str | os.PathLike, job_id: str) -> int:
    """Count one more start of ``job_id``'s conversion (``<id>.started``); return the count."""
    attempts = started_attempts(work_dir, job_id) + 1
    write_json_atomic(_started_path(work_dir, job_id), {"attempts": attempts})
    return attempts


def convert_job(job: Job, work_dir: str, mark: bool = True) -> dict[str, Any]:
    """Convert one series into ``work_dir/<id>.npy``; return its record (labels, slices, reasons).

    Every expected failure becomes ``status: skipped`` with a one-line reason; an unexpected one
    becomes ``status: failed`` (counted separately, so a bug does not hide among bad inputs).
    Failed and out-of-memory records carry ``retry: True`` (a rerun converts them again).
    ``mark``: first write ``<id>.started`` (a start count), so that a series that kills its
    process can be recognised on the next try.
    """
    started = time.perf_counter()
    record: dict[str, Any] = {
        "id": job.id,
        "subject": job.subject,
        "kind": job.kind,
        "where": job.where,
        "n_files": len(job.files),
        "inputs": job.inputs,
        "given_labels": job.given_labels,
        "file_skips": [],
    }
    if mark:
        record["attempts"] = mark_started(work_dir, job.id)
    try:
        if job.kind == "dicom":
            import SimpleITK as sitk

            series = D.build_series_volume(job.files)
            volume = sitk.GetArrayViewFromImage(series.image)
            labels, notes = series.labels, list(series.notes)
            record["file_skips"] = series.file_skips
            record["decoder"] = series.decoder
        else:
            from geco_tf.data.nifti import load_axial

            volume, notes = load_axial(job.files[0])
            labels = dict(job.given_labels or {})
        volume, n_bad = fill_non_finite(volume)
        if n_bad:
            notes.append("non-finite voxels (NaN or infinity) set to the volume's background")
            record["non_finite_voxels"] = n_bad
        slices, kept = volume_slices(volume)
        record.update(labels=labels, notes=notes, n_axial=int(volume.shape[0]), kept=kept)
        del volume
        if not kept:
            raise D.SeriesRejected("no informative axial slice (every slice is 90% or more pure black or white)")
        record["shape"] = [int(slices.shape[1]), int(slices.shape[2])]
        record["pixels"] = hashlib.sha256(np.ascontiguousarray(slices).tobytes()).hexdigest()[:16]
        with atomic_path(Path(work_dir) / f"{job.id}.npy", suffix=".npy") as tmp:
            np.save(tmp, slices)
        record["status"] = "ok"
    except D.SeriesRejected as exc:
        record.update(status="skipped", reason=str(exc))
        record["file_skips"] = record["file_skips"] or exc.file_skips
    except MemoryError:
        record.update(status="skipped", reason="series too large for this machine's memory", retry=True)
    except Exception as exc:  # a bug or an input nobody foresaw: keep going, but say so
        record.update(status="failed", reason=f"internal error ({type(exc).__name__}: {D.first_line(exc)})",
                      retry=True)
    record["file_skips"] = [list(pair) for pair in record["file_skips"]]
    record["seconds"] = round(time.perf_counter() - started, 4)
    record["peak_rss_mb"] = round(peak_rss_mb(), 1)
    return record


def killed_record(job: Job) -> dict[str, Any]:
    """The record of a series whose conversion killed its process :data:`MAX_ATTEMPTS` times."""
    return {
        "id": job.id, "subject": job.subject, "kind": job.kind, "where": job.where, "n_files": len(job.files),
        "inputs": job.inputs, "given_labels": job.given_labels, "file_skips": [], "status": "skipped",
        "reason": KILLED_REASON,
    }


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB (what bounds a worker's footprint)."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024**2 if sys.platform == "darwin" else peak / 1024


def scrub_record(record: dict[str, Any], scrubber: P.Scrubber) -> dict[str, Any]:
    """The record with its path, reasons and file skips scrubbed of identifiers (before it is
    stored or assembled)."""
    record = dict(record)
    record["where"] = scrubber.scrub(record.get("where", ""))
    record["file_skips"] = [[scrubber.scrub(p), scrubber.scrub(r, parts=False)] for p, r in record.get("file_skips", [])]
    if "reason" in record:
        record["reason"] = scrubber.scrub(record["reason"], parts=False)
    return record


# --- the work area ---------------------------------------------------------------------------


def work_dir_for(out: Path) -> Path:
    """The per-run work area: beside the output, hidden, named after it."""
    return out.parent / f".{out.name}.work"


def _open_work_area(out: Path, key: bytes, kind: str) -> Path:
    work = work_dir_for(out)
    state = {"format": WORK_FORMAT, "key": P.key_fingerprint(key), "kind": kind}
    state_file = work / "state.json"
    if work.is_dir():
        try:
            if json.loads(state_file.read_text()) == state:
                return work
        except (OSError, ValueError):
            pass
        shutil.rmtree(work)  # made with another key or format: its ids would not match
    try:
        work.mkdir(parents=True)
        write_json_atomic(state_file, state)
    except OSError as exc:
        raise UserError(f"--out {out}: cannot write the work area beside it ({exc.strerror or exc})") from None
    return work


def load_record(work: Path, job: Job) -> dict[str, Any] | None:
    """The stored record of ``job`` if it is still right, else ``None`` (convert again).

    A record is stale when the inputs' fingerprint, the subject or the given labels differ from
    the job's, when its slices file is missing, or when it asks to be retried (an internal error
    or an out-of-memory skip).
    """
    try:
        record = json.loads((work / f"{job.id}.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict):
        return None
    if (
        record.get("n_files") != len(job.files)
        or record.get("inputs") != job.inputs
        or record.get("subject") != job.subject
        or record.get("given_labels") != job.given_labels
    ):
        return None
    if record.get("retry") or record.get("status") not in ("ok", "skipped"):
        return None
    if record.get("status") == "ok" and not (work / f"{job.id}.npy").is_file():
        return None
    return record


# --- discovery -------------------------------------------------------------------------------


def _check_output(out: Path) -> None:
    for parent in [out, *out.parents]:
        if parent.exists():
            if not parent.is_dir():
                what = "exists and is a file" if parent == out else f"lies under {parent}, which is a file"
                raise UserError(f"--out {out}: {what}, not a directory")
            break
    if out.is_dir() and any(out.iterdir()) and not (out / "dataset.json").exists():
        raise UserError(f"--out {out}: directory is not empty and is not a dataset")
    if not os.access(next(p for p in [out, *out.parents] if p.exists()), os.W_OK):
        raise UserError(f"--out {out}: no permission to write there")


def _common_folder(files: list[str]) -> str:
    if len(files) == 1:
        return files[0]
    try:
        return os.path.commonpath(files)
    except ValueError:
        return files[0]


def input_fingerprint(files: Iterable[str]) -> str:
    """A hash of the files' paths, sizes and modification times (what a resume compares)."""
    digest = hashlib.sha256()
    for path in sorted(files):
        try:
            st = os.stat(path)
            digest.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
        except OSError:
            digest.update(f"{path}\0missing\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()[:32]


def _top_folder(root: Path, files: list[str]) -> str:
    folder = os.path.dirname(_common_folder(files)) if len(files) == 1 else _common_folder(files)
    try:
        rel = Path(os.path.relpath(folder, root))
    except ValueError:
        return folder
    return rel.parts[0] if rel.parts and rel.parts[0] not in (".", "..") else "."


def subject_values(
    series: Mapping[str, D.SeriesFiles], subject_key: str, root: Path
) -> tuple[dict[str, str], int, list[str]]:
    """The raw subject value of each series (never written), the series that fell back to the
    study, and warnings.

    ``patient``: the PatientID, except where it is empty or where one PatientID covers several
    studies (de-identified exports often write one value for everyone): those series fall back to
    the study, with a warning that gives the count. ``study``: the StudyInstanceUID. ``folder``:
    the first folder under ``root`` (one folder per person).
    """
    if subject_key not in SUBJECT_KEYS:
        raise UserError(f"--subject-key {subject_key}: choose one of {', '.join(SUBJECT_KEYS)}")
    values: dict[str, str] = {}
    warnings: list[str] = []
    if subject_key == "study":
        return {uid: "study:" + (e.study or uid) for uid, e in series.items()}, 0, warnings
    if subject_key == "folder":
        return {uid: "folder:" + _top_folder(root, e.files) for uid, e in series.items()}, 0, warnings
    studies: dict[str, set[str]] = defaultdict(set)
    for e in series.values():
        if e.patient_id:
            studies[e.patient_id].add(e.study)
    shared = {pid for pid, s in studies.items() if len(s) > 1}
    n_empty = n_shared = 0
    for uid, e in series.items():
        if not e.patient_id:
            values[uid] = "study:" + (e.study or e.patient or uid)
            n_empty += 1
        elif e.patient_id in shared:
            values[uid] = "study:" + (e.study or uid)
            n_shared += 1
        else:
            values[uid] = e.patient  # == PatientID: the pseudonyms of earlier versions stay the same
    if shared:
        n_studies = sum(len(studies[pid]) for pid in shared)
        everyone = " (every series of the archive)" if n_shared == len(series) else ""
        warnings.append(
            f"warning: PatientID: {len(shared)} value(s) each cover several studies ({n_shared} series in "
            f"{n_studies} studies{everyone}); these series are told apart by study (StudyInstanceUID) instead. "
            "If they are repeat visits of one person, use --subject-key folder with one folder per person"
        )
    if not shared and len(series) > 1 and len(studies) == 1 and not n_empty:
        warnings.append(
            f"warning: PatientID: one value for all {len(series)} series (one study): the whole archive is one "
            "subject, so it can only go to one split"
        )
    if n_empty:
        warnings.append(
            f"warning: PatientID: empty in {n_empty} series; these series are told apart by study "
            "(StudyInstanceUID) instead"
        )
    return values, n_empty + n_shared, warnings


def dicom_jobs(
    root: Path,
    key: bytes,
    scrubber: P.Scrubber,
    progress: Progress = QUIET,
    exclude: tuple[str | os.PathLike, ...] = (),
    subject_key: str = "patient",
) -> Found:
    """Discover the series under ``root``: jobs, (path, reason) skips, file count and warnings.

    ``exclude``: paths not to read (our own output, when it lies inside the input tree).
    """
    root = Path(root)
    if subject_key not in SUBJECT_KEYS:
        raise UserError(f"--subject-key {subject_key}: choose one of {', '.join(SUBJECT_KEYS)}")
    total = sum(1 for _ in D.iter_files(root, exclude))
    with progress.bar(total=total, desc="reading headers") as bar:
        found = D.discover_series(root, progress=bar.update, exclude=exclude)
    scrubber.add(found.identifiers)
    jobs: list[Job] = []
    skipped = list(found.skipped)
    usable: dict[str, D.SeriesFiles] = {}
    for uid, entry in found.series.items():
        reason = D.series_rejection(entry)
        if reason is not None:
            skipped.append((_common_folder(entry.files), f"series of {len(entry.files)} file(s): {reason}"))
        else:
            usable[uid] = entry
    values, fallback, warnings = subject_values(usable, subject_key, root)
    for uid, entry in usable.items():
        files = sorted(entry.files)
        jobs.append(
            Job(
                id=P.pseudonym(key, uid, "ser"),
                subject=P.pseudonym(key, values[uid], "sub"),
                kind="dicom",
                files=files,
                where=_common_folder(entry.files),
                inputs=input_fingerprint(files),
            )
        )
    return Found(jobs=jobs, skipped=skipped, n_inputs=found.n_files, subject_key=subject_key,
                 subject_fallback_series=fallback, warnings=warnings)


def nifti_jobs(csv_path: Path, key: bytes, scrubber: P.Scrubber, subject_key: str = "patient") -> Found:
    """One job per usable row of the labels CSV.

    ``subject_key``: ``patient`` uses the CSV's subject column, ``folder`` the volume's folder;
    ``study`` needs DICOM headers and is refused.
    """
    from geco_tf.data.nifti import read_labels_csv

    if subject_key not in SUBJECT_KEYS:
        raise UserError(f"--subject-key {subject_key}: choose one of {', '.join(SUBJECT_KEYS)}")
    if subject_key == "study":
        raise UserError("--subject-key study: NIfTI volumes carry no study; use patient (the CSV's subject column) or folder")
    rows, skipped = read_labels_csv(csv_path)
    scrubber.add(row.subject for row in rows)
    jobs: list[Job] = []
    seen: dict[str, int] = {}
    for row in rows:
        job_id = P.pseudonym(key, str(Path(row.path).resolve()), "vol")
        if job_id in seen:
            skipped.append((row.given_path, f"listed twice in the CSV (line {row.line}, first on line {seen[job_id]}): "
                                            "the first row is used"))
            continue
        seen[job_id] = row.line
        labels = {
            "manufacturer": row.manufacturer,
            "field_strength": row.field_strength,
            "field_strength_tesla": row.field_strength_tesla,
            "modality": row.modality,
        }
        subject = row.subject if subject_key == "patient" else "folder:" + str(Path(row.path).resolve().parent)
        jobs.append(
            Job(
                id=job_id,
                subject=P.pseudonym(key, subject, "sub"),
                kind="nifti",
                files=[row.path],
                where=row.given_path,
                given_labels=labels,
                inputs=input_fingerprint([row.path]),
            )
        )
    return Found(jobs=jobs, skipped=skipped, n_inputs=len(rows) + len(skipped), subject_key=subject_key)


# --- converting in a pool --------------------------------------------------------------------


def _convert_in_pool(
    jobs: list[Job], work: Path, workers: int, on_record: Callable[[Job, dict], None], bar: Any,
    convert: Callable[[Job, str], dict],
) -> None:
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        pending = {}
        queue = iter(jobs)
        for job in queue:  # keep at most 2 x workers jobs in flight: a small, flat parent
            pending[pool.submit(convert, job, str(work))] = job
            if len(pending) >= 2 * workers:
                break
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                job = pending.pop(future)
                on_record(job, future.result())
                bar.update(1)
                nxt = next(queue, None)
                if nxt is not None:
                    pending[pool.submit(convert, nxt, str(work))] = nxt


def convert_jobs(
    jobs: list[Job], work: Path, workers: int, on_record: Callable[[Job, dict], None], bar: Any,
    convert: Callable[[Job, str], dict] = convert_job,
) -> None:
    """Convert ``jobs`` (in a spawn pool when ``workers`` > 1), handing each record to ``on_record``.

    A worker that dies (killed, out of memory) breaks the pool: the series it was converting are
    then tried again one at a time, so a second death names the series, which gets
    :func:`killed_record` instead of ending the run. ``convert``: :func:`convert_job` (a
    module-level function, as the spawned workers import it by name; tests pass another).
    """
    done: set[str] = set()

    def keep(job: Job, record: dict) -> None:
        done.add(job.id)
        on_record(job, record)

    todo = [j for j in jobs if j.id not in done]
    if workers <= 1 or len(todo) <= 1:
        for job in todo:
            keep(job, convert(job, str(work)))
            bar.update(1)
        return
    # spawn, not fork: the parent may hold TensorFlow's threads; a worker needs only numpy/ITK/pydicom
    while todo:
        try:
            _convert_in_pool(todo, work, workers, keep, bar, convert)
        except BrokenProcessPool:
            pass
        remaining = [j for j in todo if j.id not in done]
        suspects = [j for j in remaining if started_attempts(work, j.id) >= 1]
        if remaining and not suspects:
            raise UserError(
                "a conversion process died before it started a series (killed?); run the same command "
                "again to resume, converted series are kept"
            )
        for job in suspects:  # alone, so that a second death names the series
            if started_attempts(work, job.id) < MAX_ATTEMPTS:
                try:
                    _convert_in_pool([job], work, 1, keep, bar, convert)
                except BrokenProcessPool:
                    pass
            if job.id not in done and started_attempts(work, job.id) >= MAX_ATTEMPTS:
                keep(job, killed_record(job))
                bar.update(1)
        todo = [j for j in remaining if j.id not in done]


# --- assembly --------------------------------------------------------------------------------


def _load_work_slices(work: Path) -> Callable[[dict], np.ndarray]:
    return lambda record: np.load(work / f"{record['id']}.npy", mmap_mode="r")


def split_subjects(records: Iterable[dict[str, Any]], seed: int = 0) -> SplitPlan:
    """The split of the subjects of the ``ok`` records (coverage before fractions), a pure
    function of their labels, their pixel hashes and ``seed``."""
    labels: dict[str, dict[str, set]] = defaultdict(lambda: {"manufacturer": set(), "field_strength": set()})
    order: dict[str, str] = {}
    for record in records:
        if record.get("status") != "ok":
            continue
        subject = record["subject"]
        for target in ("manufacturer", "field_strength"):
            value = record["labels"].get(target)
            if value is not None:
                labels[subject][target].add(value)
        pixels = str(record.get("pixels", record["id"]))
        order[subject] = min(order.get(subject, pixels), pixels)
    return assign_splits(labels, seed=seed, order=order)


def assemble_dataset(
    out: str | os.PathLike,
    records: Iterable[dict[str, Any]],
    skipped: Iterable[tuple[str, str]],
    *,
    seed: int = 0,
    size: int = DEFAULT_SIZE,
    load_slices: Callable[[dict], np.ndarray] | None = None,
    work_dir: str | os.PathLike | None = None,
    made_by: Mapping[str, Any] | None = None,
    progress: Progress = QUIET,
) -> Assembly:
    """Write the dataset directory from the conversion records: split, shards, manifest, dataset.json,
    skipped.csv.

    ``records``: the (scrubbed, :func:`scrub_record`) records of :func:`convert_job`, in any
    order (they are sorted by subject and id). ``skipped``: (path, reason) rows from discovery,
    already scrubbed. ``load_slices(record)`` returns a record's kept slices [n, y, x] (default:
    ``work_dir/<id>.npy``). ``made_by`` adds provenance to ``dataset.json``.
    """
    out = Path(out)
    if load_slices is None:
        if work_dir is None:
            raise ValueError("assemble_dataset needs load_slices or work_dir")
        load_slices = _load_work_slices(Path(work_dir))
    records = sorted(records, key=lambda r: (r["subject"], r["id"]))
    result = Assembly()
    skip_rows = [tuple(row) for row in skipped]
    ok: list[dict] = []
    for record in records:
        skip_rows.extend(tuple(pair) for pair in record.get("file_skips", []))
        result.n_files_skipped += len(record.get("file_skips", []))
        if record["status"] == "ok":
            ok.append(record)
            result.notes.update(record.get("notes", []))
        else:
            result.n_series_skipped += 1
            result.n_failed += record["status"] == "failed"
            skip_rows.append((record["where"], f"series of {record['n_files']} file(s): {record['reason']}"))
    result.n_series_ok = len(ok)
    plan = split_subjects(ok, seed=seed)
    result.plan = plan

    other_manufacturers: set[str] = set()
    unbucketed: Counter = Counter()
    cropped_series = 0
    for record in ok:
        labels = record["labels"]
        if labels["manufacturer"] not in MANUFACTURERS:
            other_manufacturers.add(labels["manufacturer"])
        if labels["field_strength"] is None and labels.get("field_strength_tesla") is not None:
            unbucketed[f"{labels['field_strength_tesla']:g}T"] += len(record["kept"])
        if max(record["shape"]) > size:
            cropped_series += 1
            result.n_cropped += len(record["kept"])
    classes = {
        "manufacturer": list(MANUFACTURERS) + sorted(other_manufacturers),
        "field_strength": list(FIELD_STRENGTHS),
        "modality": list(MODALITIES),
        "lesion": list(LESION),
    }
    info = {
        **dict(made_by or {}),
        "size": size,
        "split": {
            "by": "subject (pseudonymous)",
            "rule": "every manufacturer and field strength with >= 3 subjects in every split, then the fractions",
            "fractions": list(SPLIT_FRACTIONS),
            "seed": seed,
            "coverage_overrode_fractions": {s: {"subjects": g, "fraction_asked": a} for s, (g, a) in plan.overridden.items()},
            "missing_classes": [list(m) for m in plan.missing],
            "classes_too_small_for_every_split": [list(m) for m in plan.too_few],
        },
        "series": {"converted": len(ok), "skipped": result.n_series_skipped, "files_skipped": result.n_files_skipped},
        "cropped": result.n_cropped > 0,
        "cropped_slices": result.n_cropped,
        "cropped_series": cropped_series,
        "four_d_first_volume_series": sum(n for note, n in result.notes.items() if note.startswith("4-D")),
        "non_finite_series": sum(1 for r in ok if r.get("non_finite_voxels")),
        "field_strength_excluded": dict(sorted(unbucketed.items())),
    }
    table_rows: list[dict] = []
    with DatasetWriter(out, image_size=size, classes=classes, splits=plan.assignment, made_by=info) as writer:
        for path, reason in skip_rows:
            writer.skip(path, reason)
        for record in progress.track(ok, total=len(ok), desc="writing dataset"):
            slices = load_slices(record)
            labels = record["labels"]
            split = plan.assignment[record["subject"]]
            for i, index in enumerate(record["kept"]):
                image, _ = pad_or_crop(np.asarray(slices[i], dtype=np.float32), size)
                writer.add(
                    SliceRecord(
                        image=image,
                        subject=record["subject"],
                        manufacturer=labels["manufacturer"],
                        field_strength=labels["field_strength"],
                        modality=labels["modality"],
                        source_volume=record["id"],
                        slice_index=int(index),
                    )
                )
                table_rows.append({"subject": record["subject"], "split": split,
                                   "manufacturer": labels["manufacturer"], "field_strength": labels["field_strength"]})
            del slices
    result.n_slices = len(table_rows)
    result.table = split_table(table_rows) if table_rows else ""
    result.messages = plan.messages()
    return result


# --- the run ---------------------------------------------------------------------------------


def preprocess(
    out: str | os.PathLike,
    dicom_dir: str | os.PathLike | None = None,
    nifti_csv: str | os.PathLike | None = None,
    size: int = DEFAULT_SIZE,
    workers: int = 1,
    key_file: str | os.PathLike | None = None,
    seed: int = 0,
    keep_work: bool = False,
    subject_key: str = "patient",
    progress: Progress = QUIET,
    log: Callable[[str], None] | None = None,
    pipeline: Callable[..., Assembly] | None = None,
) -> Summary:
    """Turn a DICOM tree or a NIfTI labels CSV into a dataset directory at ``out``.

    Give exactly one of ``dicom_dir`` and ``nifti_csv``. ``log`` receives scrubbed one-line
    messages and warnings (always shown); ``progress`` shows the steps, bars and, at the end, the
    table of subjects and slices per split and class. Raises :class:`UserError` for bad options
    or when no slice at all is usable (the dataset directory, with its ``skipped.csv``, is still
    written so the reasons can be read). ``pipeline``: instead of the local pool and
    :func:`assemble_dataset`, a callable with :func:`assemble_dataset`'s arguments plus ``jobs``
    (the series to convert) and ``scrubber`` that converts and assembles elsewhere
    (:class:`geco_tf.data.beam_preprocess.BeamPipeline`, ``--runner beam``).
    """
    if (dicom_dir is None) == (nifti_csv is None):
        raise UserError("give a DICOM_DIR or --nifti-csv FILE (exactly one)")
    if size < 16:
        raise UserError(f"--size {size}: must be at least 16")
    if workers < 1:
        raise UserError(f"--workers {workers}: must be at least 1")
    if subject_key not in SUBJECT_KEYS:
        raise UserError(f"--subject-key {subject_key}: choose one of {', '.join(SUBJECT_KEYS)}")
    progress = progress or QUIET
    out = Path(out)
    _check_output(out)
    source = Path(dicom_dir if dicom_dir is not None else nifti_csv)
    if dicom_dir is not None and not source.is_dir():
        raise UserError(f"{source}: DICOM_DIR is not a directory" if source.exists() else f"{source}: DICOM_DIR does not exist")
    key_path = Path(key_file) if key_file is not None else P.default_key_path(out)
    key, created = P.load_or_create_key(key_path, out, write=False)
    scrubber = P.Scrubber(source if dicom_dir is not None else source.resolve().parent)
    say = (lambda msg: log(scrubber.scrub(msg, parts=False))) if log else (lambda msg: None)
    summary = Summary(out=str(out), key_file=str(key_path), key_created=created, subject_key=subject_key)

    t0 = time.perf_counter()
    progress.step("finding the inputs")
    if dicom_dir is not None:
        found = dicom_jobs(source, key, scrubber, progress, exclude=(out, key_path), subject_key=subject_key)
        kind = "dicom"
    else:
        found = nifti_jobs(source, key, scrubber, subject_key=subject_key)
        kind = "nifti"
    jobs, skipped = found.jobs, found.skipped
    summary.n_inputs = found.n_inputs
    summary.seconds["find"] = round(time.perf_counter() - t0, 3)
    summary.n_series = len(jobs)
    if not jobs and not skipped:
        what = "no DICOM file" if kind == "dicom" else "no row"
        raise UserError(f"{source}: {what} found ({summary.n_inputs} file(s) looked at)")
    if created:
        P.save_key(key_path, key)
    for warning in found.warnings:
        say(warning)
        summary.warnings.append(scrubber.scrub(warning, parts=False))
    say(f"found {len(jobs)} series in {summary.n_inputs} input(s); {len(skipped)} left out before conversion")

    work = _open_work_area(out, key, kind)
    records: dict[str, dict] = {}

    def keep(job: Job, record: dict) -> None:
        record = scrub_record(record, scrubber)
        write_json_atomic(work / f"{job.id}.json", record)  # last: marks the series as done
        _started_path(work, job.id).unlink(missing_ok=True)
        records[job.id] = record

    todo: list[Job] = []
    for job in jobs:
        record = load_record(work, job)
        if record is not None:
            records[job.id] = record
        elif started_attempts(work, job.id) >= MAX_ATTEMPTS:
            keep(job, killed_record(job))
        else:
            todo.append(job)
    summary.n_resumed = len(records)
    if records:
        say(f"resuming: {len(records)} series already done, {len(todo)} to go")

    t0 = time.perf_counter()
    progress.step(f"converting {len(todo)} series ({workers} worker(s))")
    with progress.bar(total=len(jobs), desc="converting series") as bar:
        bar.update(len(records))
        if pipeline is None:  # else the pipeline converts them, below
            convert_jobs(todo, work, workers, keep, bar)
    summary.n_converted = len(todo)
    summary.converter_peak_rss_mb = max((records.get(j.id, {}).get("peak_rss_mb", 0.0) for j in todo), default=0.0)
    summary.seconds["convert"] = round(time.perf_counter() - t0, 3)

    t0 = time.perf_counter()
    progress.step("writing the dataset")
    skip_rows = [(scrubber.scrub(p), scrubber.scrub(r, parts=False)) for p, r in skipped]
    made_by = {
        "command": "geco-tf preprocess",
        "version": __version__,
        "source": "DICOM series" if kind == "dicom" else "NIfTI volumes with a labels CSV",
        "orientation": "axial, LPS: slices inferior->superior, rows anterior->posterior, columns right->left; "
        "axes permuted and flipped only, never resampled",
        "slice_filter": "kept when fewer than 90% of values are the slice's pure black or pure white (paper 3.3)",
        "non_finite": "NaN and infinite voxels are set to the volume's lowest finite value (its background) "
        "before scaling",
        "subjects": {"key": found.subject_key, "fell_back_to_study_series": found.subject_fallback_series},
        "pseudonyms": {"scheme": "HMAC-SHA256, first 12 hex digits", "key_fingerprint": P.key_fingerprint(key)},
    }
    assemble = assemble_dataset if pipeline is None else partial(pipeline, jobs=todo, scrubber=scrubber)
    result = assemble(
        out, [records[j.id] for j in jobs if j.id in records], skip_rows, seed=seed, size=size, work_dir=work,
        made_by=made_by, progress=progress,
    )
    summary.written = result
    summary.seconds["write"] = round(time.perf_counter() - t0, 3)
    if not keep_work:
        shutil.rmtree(work, ignore_errors=True)
    for note, n in sorted(result.notes.items()):
        say(f"note: {note} ({n} series)")
    if result.n_failed:
        say(f"{result.n_failed} series failed with an internal error: see skipped.csv")
    if result.table:
        progress.note("subjects/slices per split and class:\n" + result.table)
    for message in result.messages:
        say(message)
        summary.warnings.append(message)
    if result.n_slices == 0:
        raise UserError(
            f"{out}: no usable slice ({result.n_series_skipped} series and {len(skipped)} input(s) skipped); "
            f"reasons in {out / 'skipped.csv'}"
        )
    return summary
