"""NIfTI volumes with a labels CSV: the second way real data comes in.

Volumes may be stored in any orientation; they are put in the same axial LPS layout as DICOM
series (:data:`geco_tf.data.dicom.AXIAL_ORIENTATION`: array [slice, row, column] running
inferior->superior, anterior->posterior, right->left) by permuting and flipping axes with
nibabel's orientation tools -- no interpolation, for the same reason as for DICOM: the scanner's
pixel texture must reach the dataset untouched. A 4-D file keeps its first volume.

The CSV has a header row with at least ``path, subject, manufacturer, field_strength, modality``;
relative paths are taken from the CSV's folder. Labels are normalised like header values
(:mod:`geco_tf.data.labels`).
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from geco_tf.data import labels as L
from geco_tf.data.dicom import MIN_AXIAL_SIDE, SeriesRejected
from geco_tf.errors import UserError

CSV_COLUMNS = ("path", "subject", "manufacturer", "field_strength", "modality")


@dataclass
class NiftiRow:
    """One usable CSV row: a volume and its normalised labels (``subject`` still the CSV value)."""

    line: int
    path: str
    given_path: str
    subject: str
    manufacturer: str
    field_strength: str | None
    field_strength_tesla: float
    modality: str | None


def _decode(csv_path: Path) -> str:
    """The CSV's text: UTF-8 (a BOM is dropped), else Latin-1 (every byte is a character)."""
    try:
        raw = csv_path.read_bytes()
    except OSError as exc:
        raise UserError(f"--nifti-csv {csv_path}: cannot read ({exc.strerror or exc})") from None
    if b"\0" in raw:
        raise UserError(f"--nifti-csv {csv_path}: not a text CSV (it holds binary data)")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
        return text[3:] if text.startswith("\u00ef\u00bb\u00bf") else text  # a UTF-8 BOM before Latin-1 text


def _rejoin_path(fields: list[str], n_columns: int, path_index: int, base: Path) -> list[str] | None:
    """A row with more fields than the header: the path held unquoted commas when joining the
    extra fields back into the path names an existing file; else ``None``."""
    extra = len(fields) - n_columns
    candidate = ",".join(fields[path_index : path_index + extra + 1]).strip()
    path = Path(candidate) if Path(candidate).is_absolute() else base / candidate
    if candidate and path.is_file():
        return fields[:path_index] + [candidate] + fields[path_index + extra + 1 :]
    return None


def read_labels_csv(csv_path: str | os.PathLike) -> tuple[list[NiftiRow], list[tuple[str, str]]]:
    """Rows of the labels CSV, plus (path, reason) for rows that cannot be used.

    A missing, binary or malformed file or a missing column is a :class:`UserError` (the whole
    run cannot go on); a bad row is skipped with its reason, like a bad DICOM series. UTF-8 (with
    or without a BOM) and Latin-1 text are read; a path with an unquoted comma is put back
    together when the result names an existing file.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise UserError(f"--nifti-csv {csv_path}: file not found")
    base = csv_path.resolve().parent
    rows: list[NiftiRow] = []
    skipped: list[tuple[str, str]] = []
    text = _decode(csv_path)
    try:
        table = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as exc:
        raise UserError(f"--nifti-csv {csv_path}: not a readable CSV ({exc})") from None
    header = [h.strip().lower() for h in (table[0] if table else [])]
    missing = [c for c in CSV_COLUMNS if c not in header]
    if missing:
        raise UserError(
            f"--nifti-csv {csv_path}: missing column(s) {', '.join(missing)} "
            f"(need a header row with {', '.join(CSV_COLUMNS)})"
        )
    path_index = header.index("path")
    for line, fields in enumerate(table[1:], start=2):
        if not any(f.strip() for f in fields):
            continue  # a blank line
        if len(fields) > len(header):
            fixed = _rejoin_path(fields, len(header), path_index, base)
            if fixed is None:
                skipped.append((
                    f"{csv_path.name}:{line}",
                    f"{len(fields)} fields where the header has {len(header)} "
                    "(an unquoted comma? put the path in double quotes)",
                ))
                continue
            fields = fixed
        fields = fields + [""] * (len(header) - len(fields))
        row = {name: value.strip() for name, value in zip(header, fields)}
        given = row["path"]
        if not given:
            skipped.append((f"{csv_path.name}:{line}", "empty path"))
            continue
        path = Path(given) if Path(given).is_absolute() else base / given
        if not path.is_file():
            skipped.append((given, f"file not found (line {line})"))
            continue
        if not row["subject"]:
            skipped.append((given, f"empty subject (line {line})"))
            continue
        manufacturer = L.normalise_manufacturer(row["manufacturer"])
        if manufacturer is None:
            skipped.append((given, f"missing manufacturer (line {line})"))
            continue
        tesla = L.parse_field_strength(row["field_strength"])
        if tesla is None:
            skipped.append((given, f"missing or unreadable field_strength {row['field_strength']!r} (line {line})"))
            continue
        rows.append(
            NiftiRow(
                line=line,
                path=str(path),
                given_path=given,
                subject=row["subject"],
                manufacturer=manufacturer,
                field_strength=L.field_strength_label(tesla),
                field_strength_tesla=round(tesla, 4),
                modality=L.normalise_modality(row["modality"]),
            )
        )
    return rows, skipped


def _short_data(image, path: str | os.PathLike) -> str | None:
    """Why an uncompressed file cannot hold the voxels its header declares, or ``None``
    (checked before reading, so a header declaring a huge volume over a few bytes allocates nothing)."""
    if not str(path).lower().endswith(".nii"):  # compressed, or a header/image pair: not sized here
        return None
    try:
        header = image.header
        needed = int(header.get_data_offset()) + int(np.prod(image.shape, dtype=np.int64)) * header.get_data_dtype().itemsize
        size = os.path.getsize(path)
    except Exception:
        return None
    if size < needed:
        dims = "x".join(str(int(s)) for s in image.shape)
        return f"truncated NIfTI: the header declares {dims} voxels ({needed} bytes), the file holds {size}"
    return None


def load_axial(path: str | os.PathLike) -> tuple[np.ndarray, list[str]]:
    """A NIfTI volume as float32 [slice, row, column] in axial LPS order, plus notes.

    Only the first volume of a 4-D file is read from disk. Raises :class:`SeriesRejected` for
    unreadable files and for data that is not 3-D or 4-D.
    """
    import nibabel as nib
    from nibabel.orientations import apply_orientation, axcodes2ornt, io_orientation, ornt_transform

    notes: list[str] = []
    try:
        image = nib.load(str(path))
    except Exception as exc:
        raise SeriesRejected(f"unreadable NIfTI ({type(exc).__name__})") from None
    shape = image.shape
    if len(shape) < 3 or min(shape[:3]) < 1:
        raise SeriesRejected(f"not a 3-D volume (shape {shape})")
    short = _short_data(image, path)
    if short:
        raise SeriesRejected(short)
    try:
        if len(shape) == 3:
            data = np.asarray(image.dataobj, dtype=np.float32)
        elif all(s == 1 for s in shape[4:]):
            data = np.asarray(image.dataobj[(slice(None),) * 3 + (0,) * (len(shape) - 3)], dtype=np.float32)
            if shape[3] > 1:
                notes.append(f"4-D volume: {shape[3]} volumes, the first kept")
        else:
            raise SeriesRejected(f"{len(shape)}-D data with more than one volume per time point (shape {shape})")
    except SeriesRejected:
        raise
    except Exception as exc:
        raise SeriesRejected(f"unreadable NIfTI data ({type(exc).__name__})") from None
    if data.ndim != 3:
        raise SeriesRejected(f"not a 3-D volume (shape {data.shape})")
    transform = ornt_transform(io_orientation(image.affine), axcodes2ornt(("L", "P", "S")))
    data = np.ascontiguousarray(apply_orientation(data, transform).transpose(2, 1, 0))
    _, y, x = data.shape
    if min(x, y) < MIN_AXIAL_SIDE:  # the same rule as for DICOM series
        raise SeriesRejected(
            f"after reorientation to axial the slices are {y}x{x} voxels: too thin "
            "(a single non-axial slice or a thin slab)"
        )
    return data, notes
