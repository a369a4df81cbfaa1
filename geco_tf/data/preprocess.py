"""``geco-tf preprocess``: a DICOM tree (or NIfTI volumes with a labels CSV) to a dataset directory.

The run has three stages:

1. **Find** the inputs: series by Series Instance UID (:func:`geco_tf.data.dicom.discover_series`)
   or the rows of the labels CSV (:func:`geco_tf.data.nifti.read_labels_csv`).
2. **Convert** each series on its own, in ``--workers`` processes: volume, reorientation to axial,
   the paper's informative-slice filter (section 3.3), scaling to [-1, 1]. The kept slices go to a
   per-series file in a work area *beside* the output (``.DATA.work/``), written atomically, with a
   small JSON record written last. A worker holds one series at a time, so memory does not grow
   with the archive; a rerun after a kill finds the records and skips the finished series.
3. **Write** the dataset with :class:`geco_tf.data.dataset.DatasetWriter` (which itself only
   renames a complete directory into place), one series in memory at a time, padding (or
   centre-cropping, counted in ``dataset.json``) to ``--size``. The work area is then removed.

Privacy: subjects and series are keyed-hash pseudonyms (:mod:`geco_tf.data.privacy`); paths and
reasons in ``skipped.csv`` and every message are scrubbed of UIDs and of the names, ids, birth
dates and accession numbers seen in the headers. No header value other than the labels is written.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
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
    split_by_subject,
)
from geco_tf.data.intensity import is_informative, pad_or_crop, scale_to_unit_range
from geco_tf.errors import UserError
from geco_tf.io import atomic_path, write_json_atomic

WORK_FORMAT = 1
DEFAULT_SIZE = 512

#: ``progress(stage, advance, total)``: stage is "find", "convert" or "write".
Progress = Callable[[str, int, int], None]


@dataclass
class Job:
    """One series (or NIfTI volume) to convert. Holds paths, never written as they are."""

    id: str  # pseudonymous series id: work-area file stem and the manifest's source_volume
    subject: str  # pseudonymous subject id
    kind: str  # "dicom" or "nifti"
    files: list[str]
    where: str  # the path reported in skipped.csv (scrubbed before writing)
    given_labels: dict[str, Any] | None = None


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
    n_series_ok: int = 0
    n_series_skipped: int = 0
    n_files_skipped: int = 0
    n_slices: int = 0
    n_cropped: int = 0
    n_failed: int = 0
    #: Largest peak RSS of a process that converted series in this run (a worker, or this process).
    converter_peak_rss_mb: float = 0.0
    notes: Counter = field(default_factory=Counter)
    seconds: dict[str, float] = field(default_factory=dict)


# --- converting one series (runs in a worker process) ----------------------------------------


def volume_slices(volume: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """Axial slices of ``volume`` [z, y, x] that pass the informative filter, scaled to [-1, 1].

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


def convert_job(job: Job, work_dir: str) -> dict[str, Any]:
    """Convert one series into ``work_dir/<id>.npy``; return its record (labels, slices, reasons).

    Every expected failure becomes ``status: skipped`` with a one-line reason; an unexpected one
    becomes ``status: failed`` (counted separately, so a bug does not hide among bad inputs).
    """
    started = time.perf_counter()
    record: dict[str, Any] = {"id": job.id, "subject": job.subject, "n_files": len(job.files), "file_skips": []}
    try:
        if job.kind == "dicom":
            import SimpleITK as sitk

            series = D.build_series_volume(job.files)
            volume = sitk.GetArrayViewFromImage(series.image)
            labels, notes = series.labels, series.notes
            record["file_skips"] = series.file_skips
            record["decoder"] = series.decoder
        else:
            from geco_tf.data.nifti import load_axial

            volume, notes = load_axial(job.files[0])
            labels = dict(job.given_labels or {})
        slices, kept = volume_slices(volume)
        record.update(labels=labels, notes=notes, n_axial=int(volume.shape[0]), kept=kept)
        del volume
        if not kept:
            raise D.SeriesRejected("no informative axial slice (every slice is 90% or more pure black or white)")
        record["shape"] = [int(slices.shape[1]), int(slices.shape[2])]
        with atomic_path(Path(work_dir) / f"{job.id}.npy", suffix=".npy") as tmp:
            np.save(tmp, slices)
        record["status"] = "ok"
    except D.SeriesRejected as exc:
        record.update(status="skipped", reason=str(exc))
        record["file_skips"] = record["file_skips"] or exc.file_skips
    except MemoryError:
        record.update(status="skipped", reason="series too large for this machine's memory")
    except Exception as exc:  # a bug or an input nobody foresaw: keep going, but say so
        record.update(status="failed", reason=f"internal error ({type(exc).__name__}: {D._first_line(exc)})")
    record["seconds"] = round(time.perf_counter() - started, 4)
    record["peak_rss_mb"] = round(peak_rss_mb(), 1)
    return record


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB (what bounds a worker's footprint)."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024**2 if sys.platform == "darwin" else peak / 1024


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
    work.mkdir(parents=True)
    write_json_atomic(state_file, state)
    return work


def _load_record(work: Path, job: Job) -> dict[str, Any] | None:
    try:
        record = json.loads((work / f"{job.id}.json").read_text())
    except (OSError, ValueError):
        return None
    if record.get("n_files") != len(job.files):
        return None  # the series changed since: convert again
    if record.get("status") == "ok" and not (work / f"{job.id}.npy").is_file():
        return None
    return record


# --- the run ---------------------------------------------------------------------------------


def _check_output(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is a file, not a directory")
    if out.is_dir() and any(out.iterdir()) and not (out / "dataset.json").exists():
        raise UserError(f"--out {out}: directory is not empty and is not a dataset")


def _common_folder(files: list[str]) -> str:
    if len(files) == 1:
        return files[0]
    try:
        return os.path.commonpath(files)
    except ValueError:
        return files[0]


def dicom_jobs(
    root: Path,
    key: bytes,
    scrubber: P.Scrubber,
    progress: Progress | None = None,
    exclude: tuple[str | os.PathLike, ...] = (),
) -> tuple[list[Job], list[tuple[str, str]], int]:
    """Discover the series under ``root``; return jobs, (path, reason) skips and the file count.

    ``exclude``: paths not to read (our own output, when it lies inside the input tree).
    """
    total = sum(1 for _ in D.iter_files(root, exclude))
    found = D.discover_series(
        root, progress=(lambda n: progress("find", n, total)) if progress else None, exclude=exclude
    )
    scrubber.add(found.identifiers)
    jobs: list[Job] = []
    skipped = list(found.skipped)
    for uid, entry in found.series.items():
        where = _common_folder(entry.files)
        reason = D.series_rejection(entry)
        if reason is not None:
            skipped.append((where, f"series of {len(entry.files)} file(s): {reason}"))
            continue
        jobs.append(
            Job(
                id=P.pseudonym(key, uid, "ser"),
                subject=P.pseudonym(key, entry.patient, "sub"),
                kind="dicom",
                files=sorted(entry.files),
                where=where,
            )
        )
    return jobs, skipped, found.n_files


def nifti_jobs(csv_path: Path, key: bytes, scrubber: P.Scrubber) -> tuple[list[Job], list[tuple[str, str]], int]:
    """One job per usable row of the labels CSV."""
    from geco_tf.data.nifti import read_labels_csv

    rows, skipped = read_labels_csv(csv_path)
    scrubber.add(row.subject for row in rows)
    jobs: list[Job] = []
    seen: set[str] = set()
    for row in rows:
        job_id = P.pseudonym(key, str(Path(row.path).resolve()), "vol")
        if job_id in seen:
            skipped.append((row.given_path, f"listed twice in the CSV (line {row.line})"))
            continue
        seen.add(job_id)
        labels = {
            "manufacturer": row.manufacturer,
            "field_strength": row.field_strength,
            "field_strength_tesla": row.field_strength_tesla,
            "modality": row.modality,
        }
        jobs.append(
            Job(
                id=job_id,
                subject=P.pseudonym(key, row.subject, "sub"),
                kind="nifti",
                files=[row.path],
                where=row.given_path,
                given_labels=labels,
            )
        )
    return jobs, skipped, len(rows) + len(skipped)


def _convert_all(
    jobs: list[Job], work: Path, workers: int, progress: Progress | None, on_record: Callable[[Job, dict], None]
) -> None:
    total = len(jobs)
    if workers <= 1 or total <= 1:
        for job in jobs:
            on_record(job, convert_job(job, str(work)))
            if progress:
                progress("convert", 1, total)
        return
    # spawn, not fork: the parent may hold TensorFlow's threads; a worker needs only numpy/ITK/pydicom
    try:
        _convert_in_pool(jobs, work, workers, progress, on_record)
    except BrokenProcessPool:
        raise RuntimeError(
            "a worker process died (killed, or out of memory: try fewer --workers); "
            "run the same command again to resume, converted series are kept"
        ) from None


def _convert_in_pool(
    jobs: list[Job], work: Path, workers: int, progress: Progress | None, on_record: Callable[[Job, dict], None]
) -> None:
    total = len(jobs)
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        pending = {}
        queue = iter(jobs)
        for job in queue:  # keep at most 2 x workers jobs in flight: a small, flat parent
            pending[pool.submit(convert_job, job, str(work))] = job
            if len(pending) >= 2 * workers:
                break
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                job = pending.pop(future)
                on_record(job, future.result())
                if progress:
                    progress("convert", 1, total)
                nxt = next(queue, None)
                if nxt is not None:
                    pending[pool.submit(convert_job, nxt, str(work))] = nxt


def preprocess(
    out: str | os.PathLike,
    dicom_dir: str | os.PathLike | None = None,
    nifti_csv: str | os.PathLike | None = None,
    size: int = DEFAULT_SIZE,
    workers: int = 1,
    key_file: str | os.PathLike | None = None,
    seed: int = 0,
    keep_work: bool = False,
    progress: Progress | None = None,
    log: Callable[[str], None] | None = None,
) -> Summary:
    """Turn a DICOM tree or a NIfTI labels CSV into a dataset directory at ``out``.

    Give exactly one of ``dicom_dir`` and ``nifti_csv``. ``log`` receives scrubbed one-line
    messages. Raises :class:`UserError` for bad options or when no slice at all is usable (the
    dataset directory, with its ``skipped.csv``, is still written so the reasons can be read).
    """
    if (dicom_dir is None) == (nifti_csv is None):
        raise UserError("give a DICOM_DIR or --nifti-csv FILE (exactly one)")
    if size < 16:
        raise UserError(f"--size {size}: must be at least 16")
    if workers < 1:
        raise UserError(f"--workers {workers}: must be at least 1")
    out = Path(out)
    _check_output(out)
    source = Path(dicom_dir if dicom_dir is not None else nifti_csv)
    if dicom_dir is not None and not source.is_dir():
        raise UserError(f"{source}: DICOM_DIR is not a directory" if source.exists() else f"{source}: DICOM_DIR does not exist")
    key_path = Path(key_file) if key_file is not None else P.default_key_path(out)
    key, created = P.load_or_create_key(key_path, out, write=False)
    scrubber = P.Scrubber(source if dicom_dir is not None else source.resolve().parent)
    say = (lambda msg: log(scrubber.scrub(msg, parts=False))) if log else (lambda msg: None)
    summary = Summary(out=str(out), key_file=str(key_path), key_created=created)

    t0 = time.perf_counter()
    if dicom_dir is not None:
        jobs, skipped, summary.n_inputs = dicom_jobs(source, key, scrubber, progress, exclude=(out, key_path))
        kind = "dicom"
    else:
        jobs, skipped, summary.n_inputs = nifti_jobs(source, key, scrubber)
        kind = "nifti"
    summary.seconds["find"] = round(time.perf_counter() - t0, 3)
    summary.n_series = len(jobs)
    if not jobs and not skipped:
        what = "no DICOM file" if kind == "dicom" else "no row"
        raise UserError(f"{source}: {what} found ({summary.n_inputs} file(s) looked at)")
    if created:
        P.save_key(key_path, key)
    say(f"found {len(jobs)} series in {summary.n_inputs} input(s); {len(skipped)} left out before conversion")

    work = _open_work_area(out, key, kind)
    records: dict[str, dict] = {}
    todo: list[Job] = []
    for job in jobs:
        record = _load_record(work, job)
        if record is None:
            todo.append(job)
        else:
            records[job.id] = record
    summary.n_resumed = len(records)
    if records:
        say(f"resuming: {len(records)} series already converted, {len(todo)} to go")
    if progress and records:
        progress("convert", len(records), len(jobs))

    def keep(job: Job, record: dict) -> None:
        record["where"] = scrubber.scrub(job.where)
        record["file_skips"] = [
            [scrubber.scrub(p), scrubber.scrub(r, parts=False)] for p, r in record.get("file_skips", [])
        ]
        if "reason" in record:
            record["reason"] = scrubber.scrub(record["reason"], parts=False)
        write_json_atomic(work / f"{job.id}.json", record)  # last: marks the series as done
        records[job.id] = record

    t0 = time.perf_counter()
    _convert_all(todo, work, workers, progress, keep)
    summary.n_converted = len(todo)
    summary.converter_peak_rss_mb = max((records[j.id].get("peak_rss_mb", 0.0) for j in todo), default=0.0)
    summary.seconds["convert"] = round(time.perf_counter() - t0, 3)

    t0 = time.perf_counter()
    skip_rows = [(scrubber.scrub(p), scrubber.scrub(r, parts=False)) for p, r in skipped]
    ok: list[tuple[Job, dict]] = []
    for job in jobs:
        record = records[job.id]
        skip_rows.extend((p, r) for p, r in record.get("file_skips", []))
        if record["status"] == "ok":
            ok.append((job, record))
            summary.notes.update(record.get("notes", []))
        else:
            summary.n_series_skipped += 1
            summary.n_failed += record["status"] == "failed"
            skip_rows.append((record["where"], f"series of {record['n_files']} file(s): {record['reason']}"))
    summary.n_series_ok = len(ok)
    summary.n_files_skipped = sum(len(r.get("file_skips", [])) for r in records.values())
    ok.sort(key=lambda item: (item[0].subject, item[0].id))

    strata: dict[str, str] = {}
    other_manufacturers: set[str] = set()
    unbucketed: Counter = Counter()
    cropped_series = 0
    for job, record in ok:
        labels = record["labels"]
        strata.setdefault(job.subject, f"{labels['manufacturer']}|{labels['field_strength']}")
        if labels["manufacturer"] not in MANUFACTURERS:
            other_manufacturers.add(labels["manufacturer"])
        if labels["field_strength"] is None:
            unbucketed[f"{labels['field_strength_tesla']:g}T"] += len(record["kept"])
        if max(record["shape"]) > size:
            cropped_series += 1
            summary.n_cropped += len(record["kept"])
    assignment = split_by_subject(strata, seed=seed)
    classes = {
        "manufacturer": list(MANUFACTURERS) + sorted(other_manufacturers),
        "field_strength": list(FIELD_STRENGTHS),
        "modality": list(MODALITIES),
        "lesion": list(LESION),
    }
    made_by = {
        "command": "geco-tf preprocess",
        "version": __version__,
        "source": "DICOM series" if kind == "dicom" else "NIfTI volumes with a labels CSV",
        "size": size,
        "orientation": "axial, LPS: slices inferior->superior, rows anterior->posterior, columns right->left; "
        "axes permuted and flipped only, never resampled",
        "slice_filter": "kept when fewer than 90% of values are the slice's pure black or pure white (paper 3.3)",
        "split": {"by": "subject (pseudonymous)", "fractions": [0.7, 0.2, 0.1], "seed": seed},
        "series": {"converted": len(ok), "skipped": summary.n_series_skipped, "files_skipped": summary.n_files_skipped},
        "cropped": summary.n_cropped > 0,
        "cropped_slices": summary.n_cropped,
        "cropped_series": cropped_series,
        "four_d_first_volume_series": sum(n for note, n in summary.notes.items() if note.startswith("4-D")),
        "field_strength_excluded": dict(sorted(unbucketed.items())),
        "pseudonyms": {"scheme": "HMAC-SHA256, first 12 hex digits", "key_fingerprint": P.key_fingerprint(key)},
    }
    n_slices = sum(len(record["kept"]) for _, record in ok)
    with DatasetWriter(out, image_size=size, classes=classes, splits=assignment, made_by=made_by) as writer:
        for path, reason in skip_rows:
            writer.skip(path, reason)
        for job, record in ok:
            slices = np.load(work / f"{job.id}.npy", mmap_mode="r")
            labels = record["labels"]
            for i, index in enumerate(record["kept"]):
                image, _ = pad_or_crop(np.asarray(slices[i], dtype=np.float32), size)
                writer.add(
                    SliceRecord(
                        image=image,
                        subject=job.subject,
                        manufacturer=labels["manufacturer"],
                        field_strength=labels["field_strength"],
                        modality=labels["modality"],
                        source_volume=job.id,
                        slice_index=int(index),
                    )
                )
            del slices
            if progress:
                progress("write", 1, len(ok))
    summary.n_slices = n_slices
    summary.seconds["write"] = round(time.perf_counter() - t0, 3)
    if not keep_work:
        shutil.rmtree(work, ignore_errors=True)
    for note, n in sorted(summary.notes.items()):
        say(f"note: {note} ({n} series)")
    if summary.n_failed:
        say(f"{summary.n_failed} series failed with an internal error: see skipped.csv")
    if n_slices == 0:
        raise UserError(
            f"{out}: no usable slice ({summary.n_series_skipped} series and {len(skipped)} input(s) skipped); "
            f"reasons in {out / 'skipped.csv'}"
        )
    return summary
