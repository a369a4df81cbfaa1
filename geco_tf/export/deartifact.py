"""``geco-tf deartifact``: run a trained generator over users' NIfTI volumes and DICOM series.

Slices go through the generator in the layout it was trained on: the volume is permuted and
flipped (no interpolation) to axial LPS, array ``[slice, row, column]`` running
inferior->superior, anterior->posterior, right->left, exactly as ``geco_tf.data.nifti`` and
``geco_tf.data.dicom`` build the training slices; the result is put back in the file's own
orientation. A volume whose axial plane would be thinner than :data:`MIN_AXIAL_SIDE` pixels (a
single sagittal slice, a stack of a few coronal ones) cannot give axial slices; it is processed
in its own acquisition plane instead, and the result says so (``mode="native"``).

Outputs keep what the reader relies on: a NIfTI file keeps its affine, its header (byte for
byte, scaling included) and its on-disk data type, values rounded and clipped to that type's
range; DICOM is handled by :mod:`geco_tf.export.dicom_writer`. Every output file is written
atomically; inputs that cannot be read are reported and skipped, never fatal for a directory.
"""

from __future__ import annotations

import csv
import io
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from geco_tf.errors import UserError
from geco_tf.io import atomic_path, write_text_atomic

#: Training layout of slices (letters: where array axes x, y, z point to).
AXIAL_CODES = ("L", "P", "S")
#: Narrower axial planes than this give no usable axial slices (same rule as preprocessing).
MIN_AXIAL_SIDE = 16
NIFTI_SUFFIXES = (".nii", ".nii.gz")
#: Files never considered as inputs when walking a directory.
IGNORED_SUFFIXES = {
    ".txt", ".md", ".json", ".csv", ".tsv", ".html", ".xml", ".png", ".jpg", ".jpeg", ".gif",
    ".bval", ".bvec", ".py", ".zip", ".tar", ".gz", ".log", ".pdf",
}  # fmt: skip
DEFAULT_BATCH = 4
SKIPPED_FILE = "deartifact-skipped.csv"

Deartifactor = Callable[[np.ndarray], np.ndarray]


class InputSkipped(Exception):
    """An input that cannot be de-artifacted; ``str(exc)`` is the one-line reason."""


@dataclass
class Job:
    """One unit of work: a NIfTI file or one DICOM series (its files), and where it goes."""

    kind: str  # "nifti" or "dicom"
    inputs: list[Path]
    output: Path  # NIfTI: the output file; DICOM: the output directory
    label: str


@dataclass
class Outcome:
    """What happened to one job."""

    job: Job
    images: int
    mode: str
    seconds: float
    notes: list[str] = field(default_factory=list)


@dataclass
class Summary:
    """All jobs of one ``deartifact`` call."""

    done: list[Outcome] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# slices through the model


def run_slices(fn: Deartifactor, slices: np.ndarray, batch_size: int = DEFAULT_BATCH) -> np.ndarray:
    """``slices`` [N, H, W] raw -> [N, H, W] float32 raw, ``batch_size`` slices per call."""
    slices = np.asarray(slices, dtype=np.float32)
    out = np.empty_like(slices)
    for start in range(0, len(slices), batch_size):
        batch = slices[start : start + batch_size, :, :, None]
        out[start : start + batch_size] = np.asarray(fn(batch))[..., 0]
    return out


def deartifact_volume(
    fn: Deartifactor, data: np.ndarray, affine_ras: np.ndarray, native_axis: int = 2, batch_size: int = DEFAULT_BATCH
) -> tuple[np.ndarray, str, int]:
    """De-artifact a 3-D array whose voxel-to-RAS affine is ``affine_ras``.

    Returns the float32 result in ``data``'s own layout, the mode -- "axial" (slices taken in
    the training layout, axial LPS) or "native" (planes perpendicular to ``native_axis``, used
    when the axial plane is too thin to be an image) -- and the number of slices processed.
    """
    from nibabel.orientations import apply_orientation, axcodes2ornt, io_orientation, ornt_transform

    data = np.asarray(data, dtype=np.float32)
    source = io_orientation(affine_ras)
    target = axcodes2ornt(AXIAL_CODES)
    lps = apply_orientation(data, ornt_transform(source, target))  # [x(L), y(P), z(S)]
    if min(lps.shape[0], lps.shape[1]) >= MIN_AXIAL_SIDE:
        axial = np.ascontiguousarray(lps.transpose(2, 1, 0))  # [slice, row(P), column(L)]
        out = run_slices(fn, axial, batch_size).transpose(2, 1, 0)
        return apply_orientation(out, ornt_transform(target, source)).astype(np.float32), "axial", len(axial)
    moved = np.ascontiguousarray(np.moveaxis(data, native_axis, 0))
    out = run_slices(fn, moved, batch_size)
    return np.moveaxis(out, 0, native_axis).astype(np.float32), "native", len(moved)


def to_dtype(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Cast float results to an on-disk type: rounded and clipped to an integer type's range."""
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(dtype)
    if dtype.kind == "f":
        info = np.finfo(dtype)
        return np.clip(values, info.min, info.max).astype(dtype)
    raise InputSkipped(f"unsupported data type {dtype}")


# --------------------------------------------------------------------------------------------
# NIfTI


def is_nifti(path: Path) -> bool:
    """True for ``.nii`` and ``.nii.gz`` names."""
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def deartifact_nifti(
    fn: Deartifactor, src: Path, dst: Path, batch_size: int = DEFAULT_BATCH
) -> tuple[int, str, list[str]]:
    """Write ``dst``: ``src`` with every axial slice through the generator.

    Works in the file's real units (after ``scl_slope``/``scl_inter``) and stores the result
    back through the same scaling, so the header is unchanged byte for byte. 4-D (and higher)
    files are processed volume by volume. Returns (slices processed, mode, notes).
    """
    import nibabel as nib

    try:
        image = nib.load(str(src))
        if not isinstance(image, (nib.Nifti1Image, nib.Nifti2Image)):
            raise InputSkipped(f"not a single-file NIfTI image ({type(image).__name__})")
        raw = np.asanyarray(image.dataobj.get_unscaled())
    except InputSkipped:
        raise
    except Exception as exc:
        raise InputSkipped(f"unreadable NIfTI ({type(exc).__name__}: {exc})") from None
    shape = raw.shape
    if raw.ndim < 3 or min(shape[:3]) < 1:
        raise InputSkipped(f"not a 3-D volume (shape {shape})")
    disk_dtype = image.get_data_dtype()
    if disk_dtype.kind not in "iuf":
        raise InputSkipped(f"unsupported NIfTI data type {disk_dtype}")
    slope, inter = image.dataobj.slope, image.dataobj.inter
    scaled = raw.astype(np.float64) * slope + inter if (slope, inter) != (1.0, 0.0) else raw
    volumes = np.asarray(scaled, dtype=np.float32).reshape(shape[:3] + (-1,))
    results = np.empty(volumes.shape, dtype=np.float32)
    modes, count = set(), 0
    for t in range(volumes.shape[3]):
        native_axis = int(np.argmin(shape[:3]))
        results[..., t], mode, n = deartifact_volume(fn, volumes[..., t], image.affine, native_axis, batch_size)
        modes.add(mode)
        count += n
    results = results.reshape(shape)
    stored = (results.astype(np.float64) - inter) / slope if (slope, inter) != (1.0, 0.0) else results
    stored = to_dtype(stored, disk_dtype)
    out = image.__class__(stored, None, image.header)
    if (slope, inter) != (1.0, 0.0):
        out.header.set_slope_inter(slope, inter)  # the constructor resets scaling; put it back
    suffix = ".nii.gz" if dst.name.lower().endswith(".gz") else ".nii"
    with atomic_path(dst, suffix=suffix) as tmp:
        nib.save(out, str(tmp))
    notes = [f"{volumes.shape[3]} volumes"] if volumes.shape[3] > 1 else []
    mode = "axial" if modes == {"axial"} else "native"
    if mode == "native":
        notes.append("axial plane too thin: processed in the acquisition plane")
    return count, mode, notes


# --------------------------------------------------------------------------------------------
# finding the inputs


def _nifti_output(src: Path, output: Path, single: bool) -> Path:
    if single and is_nifti(output):
        return output
    return output / src.name


def plan(input_path: str | os.PathLike, output: str | os.PathLike) -> tuple[list[Job], list[tuple[str, str]]]:
    """Find the NIfTI files and DICOM series under ``input_path`` and where each result goes.

    A NIfTI file given directly may go to a ``.nii``/``.nii.gz`` path; anything else goes to
    the directory ``output``, mirroring the input tree (a DICOM series keeps its file names).
    Returns (jobs, skipped) with skipped as (path, reason).
    """
    from geco_tf.export.dicom_writer import group_series

    src = Path(input_path)
    out = Path(output)
    if not src.exists():
        raise UserError(f"INPUT: {src}: no such file or directory")
    if src.is_file():
        if is_nifti(src):
            dst = _nifti_output(src, out, single=True)
            _refuse_overwrite(src, dst)
            return [Job("nifti", [src], dst, str(src))], []
        if out.exists() and not out.is_dir():
            raise UserError(f"--out: {out} exists and is a file; DICOM output goes to a directory")
        series, skipped = group_series([src])
        jobs = [Job("dicom", files, out, f"{src} ({len(files)} images)") for files in series.values()]
        return jobs, skipped
    if out.exists() and not out.is_dir():
        raise UserError(f"--out: {out} exists and is a file; a directory INPUT needs an output directory")
    if out.resolve() == src.resolve():
        raise UserError(f"--out: {out} is the input directory; choose another so the originals stay untouched")
    out_resolved = out.resolve()
    jobs: list[Job] = []
    candidates: list[Path] = []
    for path in sorted(src.rglob("*")):
        if not path.is_file() or path.name.startswith("."):
            continue
        if out_resolved == path.resolve().parent or out_resolved in path.resolve().parents:
            continue  # our own earlier outputs inside the input tree
        if is_nifti(path):
            jobs.append(Job("nifti", [path], out / path.relative_to(src), str(path)))
        elif path.suffix.lower() not in IGNORED_SUFFIXES and path.name.upper() != "DICOMDIR":
            candidates.append(path)
    series, skipped = group_series(candidates)
    for (_, _uid), files in sorted(series.items(), key=lambda kv: (str(kv[1][0]), kv[0][1])):
        rel = files[0].parent.relative_to(src)
        jobs.append(Job("dicom", files, out / rel, f"{files[0].parent} ({len(files)} images)"))
    return jobs, skipped


def _refuse_overwrite(src: Path, dst: Path) -> None:
    if dst.exists() and dst.resolve() == src.resolve():
        raise UserError(f"--out: {dst} is the input file; choose another name so the original stays untouched")


# --------------------------------------------------------------------------------------------
# running


def run_job(
    fn: Deartifactor,
    job: Job,
    *,
    strip_vendor_tags: bool = False,
    model_name: str = "geco",
    batch_size: int = DEFAULT_BATCH,
) -> Outcome:
    """De-artifact one job; raises :class:`InputSkipped` when its input cannot be used."""
    start = time.perf_counter()
    if job.kind == "nifti":
        images, mode, notes = deartifact_nifti(fn, job.inputs[0], job.output, batch_size)
    else:
        from geco_tf.export.dicom_writer import deartifact_series

        images, mode, notes = deartifact_series(
            fn,
            job.inputs,
            job.output,
            strip_vendor_tags=strip_vendor_tags,
            model_name=model_name,
            batch_size=batch_size,
        )
    return Outcome(job, images, mode, time.perf_counter() - start, notes)


def run_jobs(
    fn: Deartifactor,
    jobs: Iterable[Job],
    *,
    strip_vendor_tags: bool = False,
    model_name: str = "geco",
    batch_size: int = DEFAULT_BATCH,
    summary: Summary | None = None,
) -> Summary:
    """Run every job, collecting outcomes and skips (an unreadable input never stops the rest)."""
    summary = summary if summary is not None else Summary()
    for job in jobs:
        try:
            summary.done.append(
                run_job(fn, job, strip_vendor_tags=strip_vendor_tags, model_name=model_name, batch_size=batch_size)
            )
        except InputSkipped as exc:
            summary.skipped.append((job.label, str(exc)))
    return summary


def write_skipped(summary: Summary, output: Path) -> Path | None:
    """``OUTPUT/deartifact-skipped.csv`` (path, reason) when something was skipped and the output
    is a directory; returns its path or None."""
    if not summary.skipped or is_nifti(output):
        return None
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["path", "reason"])
    writer.writerows(summary.skipped)
    path = output / SKIPPED_FILE
    write_text_atomic(path, buffer.getvalue())
    return path


def deartifact_path(
    model: object,
    input_path: str | os.PathLike,
    output: str | os.PathLike,
    *,
    strip_vendor_tags: bool = False,
    batch_size: int = DEFAULT_BATCH,
) -> Summary:
    """Library entry point: de-artifact everything under ``input_path`` into ``output``.

    ``model`` is a run directory, a ``.keras`` file, an exported SavedModel or a Keras
    generator. Raises :class:`UserError` when nothing could be processed.
    """
    from geco_tf.export.load import load_deartifactor

    jobs, skipped = plan(input_path, output)
    fn, description = load_deartifactor(model)
    summary = Summary(skipped=list(skipped))
    # Only the model's name goes into DICOM headers, never a path from the user's machine.
    model_name = Path(model).name if isinstance(model, (str, os.PathLike)) else description.split(" ")[0]
    run_jobs(
        fn, jobs, strip_vendor_tags=strip_vendor_tags, model_name=model_name, batch_size=batch_size, summary=summary
    )
    finish(summary, input_path, output)
    return summary


def finish(summary: Summary, input_path: str | os.PathLike, output: str | os.PathLike) -> Path | None:
    """Write the skipped list; raise :class:`UserError` when nothing at all was de-artifacted."""
    skipped_csv = write_skipped(summary, Path(output)) if summary.done else None
    if not summary.done:
        if summary.skipped:
            path, reason = summary.skipped[0]
            more = f" (and {len(summary.skipped) - 1} more)" if len(summary.skipped) > 1 else ""
            raise UserError(f"{path}: {reason}{more}")
        raise UserError(f"INPUT: {input_path}: no NIfTI (.nii, .nii.gz) or DICOM files found")
    return skipped_csv
