"""DICOM series in, de-artifacted derived series out (pydicom only, kept small on purpose).

What a reader of the new series can rely on:

* **Same geometry, same study.** Rows, Columns, Image Position/Orientation (Patient), Pixel
  Spacing, Slice Thickness, Frame of Reference UID, Study Instance UID, Rescale Slope/Intercept,
  window settings: all copied unchanged, so the series overlays the original.
* **A new series.** A fresh Series Instance UID, a fresh SOP Instance UID per image (file meta
  updated too), ImageType ``DERIVED\\SECONDARY\\...`` (values after the second kept), a
  Derivation Description, a Source Image Sequence pointing at the original image, and
  " GECO" appended to the Series Description so the two series can be told apart in a viewer.
* **Pixel data in the original representation**: Bits Allocated/Stored, High Bit, Pixel
  Representation and rescale unchanged; values rounded and clipped to the Bits Stored range;
  pixels equal to Pixel Padding Value left alone. Uncompressed files stay in their transfer
  syntax (big-endian too); a losslessly compressed file is re-encoded in its own syntax when an
  encoder is installed (RLE always is), else -- and always for a lossy original, which must not
  be compressed lossily twice -- written as Explicit VR Little Endian.
* ``strip_vendor_tags``: :func:`geco_tf.export.vendor_tags.strip_vendor_tags` -- no element
  from which manufacturer or field strength can be read (Manufacturer empty, model, station,
  coil, sequence names, MagneticFieldStrength, ImagingFrequency and all private groups gone),
  every non-standard UID replaced by a keyed map under one neutral root so the series of one
  study keep one StudyInstanceUID and FrameOfReferenceUID, and no SourceImageSequence pointing
  back at the original (its UID would carry the vendor's root). Output files whose names are
  UIDs are renamed ``IM00001.dcm``... (a UID name would carry the vendor's root too).
* Only MR images are processed: any other Modality (CT, PT, ...) is skipped with a reason,
  the generator knows nothing of it.

The generator sees stored values (MONOCHROME1 negated so that bright is tissue, as in
training). Per-image min/percentile normalisation is unchanged by the positive linear Rescale
Slope/Intercept, so working on stored values gives the same result as working in real units
and needs no conversion back.

A series that forms a stack (single-frame images of one orientation at distinct positions) is
put in the training layout (axial LPS) by :func:`geco_tf.export.deartifact.deartifact_volume`;
anything else (one image, multi-frame objects, mixed geometry) is processed image by image in
its own plane. A Siemens mosaic is cut into its tiles (one slice each), which are processed
and put back; a mosaic whose header does not fit its image size is processed as one image.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from geco_tf.export.slices import DEFAULT_BATCH, Deartifactor, InputSkipped, deartifact_volume, run_slices
from geco_tf.export.vendor_tags import (
    BLANKED,
    IMPLEMENTATION_VERSION,
    REMOVED,
    STANDARD_UID_ROOT,
    strip_vendor_tags,
    uid_mapper,
)
from geco_tf.io import atomic_path

#: Elements --strip-vendor-tags blanks or removes (besides private groups and UIDs).
VENDOR_TAGS = BLANKED + REMOVED
SERIES_SUFFIX = " GECO"
#: The modality the generator was trained on; other modalities are skipped.
MR_MODALITY = "MR"
_UID_IN_NAME = re.compile(r"[0-9]+(\.[0-9]+){3,}")


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("geco-tf")
    except Exception:
        return "unknown"


def group_series(paths: Iterable[Path]) -> tuple[dict[tuple[str, str], list[Path]], list[tuple[str, str]]]:
    """Group DICOM image files by (folder, Series Instance UID), reading headers only.

    Returns the groups (files sorted by name) and what was skipped with a reason: files that
    are not DICOM, DICOM without an image (structured reports, presentation states, DICOMDIR),
    and series of another modality than MR (one line per series, naming its folder).
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    groups: dict[tuple[str, str], list[Path]] = defaultdict(list)
    skipped: list[tuple[str, str]] = []
    others: dict[tuple[str, str], tuple[str, int]] = {}
    for path in paths:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except InvalidDicomError:
            skipped.append((str(path), "not a DICOM or NIfTI file"))
            continue
        except Exception as exc:
            skipped.append((str(path), f"unreadable DICOM header ({type(exc).__name__}: {exc})"))
            continue
        if "Rows" not in ds or "Columns" not in ds:
            skipped.append((str(path), f"DICOM without an image (SOP class {ds.get('SOPClassUID', 'unknown')})"))
            continue
        uid = str(ds.get("SeriesInstanceUID", "") or f"no-series-uid:{path.parent}")
        modality = str(ds.get("Modality", "") or "").strip().upper()
        if modality and modality != MR_MODALITY:
            others[(str(path.parent), uid)] = (modality, others.get((str(path.parent), uid), ("", 0))[1] + 1)
            continue
        groups[(str(path.parent), uid)].append(path)
    for (folder, _uid), (modality, count) in sorted(others.items()):
        skipped.append((f"{folder} ({count} images)", f"Modality {modality}, not MR: the generator was trained on MR"))
    return {key: sorted(files) for key, files in groups.items()}, skipped


def _read(files: list[Path]) -> tuple[list[Any], list[np.ndarray]]:
    """Full datasets and their stored pixel values as float32 [frames, rows, columns]."""
    import pydicom

    datasets, arrays = [], []
    for path in files:
        try:
            ds = pydicom.dcmread(path)
        except MemoryError:
            raise
        except Exception as exc:
            raise InputSkipped(f"{path.name}: unreadable DICOM ({type(exc).__name__}: {exc})") from None
        modality = str(ds.get("Modality", "") or "").strip().upper()
        if modality and modality != MR_MODALITY:
            raise InputSkipped(f"{path.name}: Modality {modality}, not MR: the generator was trained on MR")
        if "PixelData" not in ds:
            raise InputSkipped(f"{path.name}: no pixel data")
        photometric = str(ds.get("PhotometricInterpretation", ""))
        if int(ds.get("SamplesPerPixel", 1)) != 1 or photometric not in ("MONOCHROME1", "MONOCHROME2"):
            raise InputSkipped(f"{path.name}: not a greyscale image ({photometric or 'no PhotometricInterpretation'})")
        if int(ds.get("BitsAllocated", 0)) not in (8, 16, 32):
            raise InputSkipped(f"{path.name}: unsupported BitsAllocated {ds.get('BitsAllocated')}")
        try:
            pixels = np.asarray(ds.pixel_array)
        except MemoryError:
            raise
        except Exception as exc:
            raise InputSkipped(f"{path.name}: unreadable pixel data ({type(exc).__name__}: {exc})") from None
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        pixels = pixels.reshape((frames, int(ds.Rows), int(ds.Columns)))
        values = pixels.astype(np.float32)
        if photometric == "MONOCHROME1":
            values = -values
        datasets.append(ds)
        arrays.append(values)
    return datasets, arrays


def _stack(datasets: list[Any], arrays: list[np.ndarray]) -> tuple[list[int], np.ndarray] | None:
    """If the images form a stack, their order along the slice normal and a voxel-to-RAS
    affine for the array [slice, row, column]; else None."""
    if len(datasets) < 2 or any(a.shape[0] != 1 for a in arrays) or len({a.shape for a in arrays}) != 1:
        return None
    try:
        orients = np.array([[float(v) for v in ds.ImageOrientationPatient] for ds in datasets])
        positions = np.array([[float(v) for v in ds.ImagePositionPatient] for ds in datasets])
    except (AttributeError, TypeError, ValueError):
        return None
    if orients.shape[1] != 6 or positions.shape[1] != 3 or np.abs(orients - orients[0]).max() > 1e-3:
        return None
    row, col = orients[0, :3], orients[0, 3:]
    normal = np.cross(row, col)
    if np.linalg.norm(normal) < 0.5:
        return None
    along = positions @ normal
    order = [int(i) for i in np.argsort(along, kind="stable")]
    gaps = np.diff(along[order])
    if np.any(gaps <= 1e-4):
        return None  # repeated positions: several stacks or time points, not one volume
    spacing = [float(v) for v in datasets[0].get("PixelSpacing", [1.0, 1.0])] or [1.0, 1.0]
    step = (positions[order[-1]] - positions[order[0]]) / (len(order) - 1)
    lps = np.column_stack([step, col * spacing[0], row * spacing[1]])
    affine = np.eye(4)
    affine[:3, :3] = np.diag([-1.0, -1.0, 1.0]) @ lps  # DICOM patient space is LPS; nibabel's is RAS
    affine[:3, 3] = np.diag([-1.0, -1.0, 1.0]) @ positions[order[0]]
    return order, affine


def _mosaic(ds: Any) -> tuple[int, int] | None:
    """A Siemens mosaic's (images, grid side) when its header is consistent with the image
    size, else None. Each tile is one slice, so tiles -- not the mosaic -- are the images."""
    if "MOSAIC" not in [str(v).upper() for v in ds.get("ImageType", [])]:
        return None
    try:
        element = ds.get_private_item(0x0019, 0x0A, "SIEMENS MR HEADER")
        value = element.value
        count = int.from_bytes(value[:2], "little") if isinstance(value, bytes) else int(value)
    except (KeyError, TypeError, ValueError):
        return None
    grid = int(np.ceil(np.sqrt(count))) if count > 0 else 0
    if grid < 1 or int(ds.Rows) % grid or int(ds.Columns) % grid:
        return None
    return count, grid


def _run_mosaic(fn: Deartifactor, image: np.ndarray, count: int, grid: int, batch_size: int) -> np.ndarray:
    """De-artifact the ``count`` tiles of a mosaic [rows, cols]; empty tiles stay as they are."""
    rows, cols = image.shape[0] // grid, image.shape[1] // grid
    tiles = image.reshape(grid, rows, grid, cols).transpose(0, 2, 1, 3).reshape(grid * grid, rows, cols).copy()
    tiles[:count] = run_slices(fn, tiles[:count], batch_size)
    return tiles.reshape(grid, grid, rows, cols).transpose(0, 2, 1, 3).reshape(image.shape)


def _stored_range(ds: Any) -> tuple[int, int, np.dtype]:
    bits_alloc = int(ds.BitsAllocated)
    bits = int(ds.get("BitsStored", bits_alloc))
    signed = int(ds.get("PixelRepresentation", 0)) == 1
    dtype = np.dtype(f"{'i' if signed else 'u'}{bits_alloc // 8}")
    if signed:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1, dtype
    return 0, (1 << bits) - 1, dtype


LOSSLESS = {
    "1.2.840.10008.1.2.5",  # RLE Lossless
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.201",  # HTJ2K Lossless
    "1.2.840.10008.1.2.4.202",  # HTJ2K Lossless RPCL
}


def _set_pixels(ds: Any, stored: np.ndarray) -> str | None:
    """Put ``stored`` ([frames, rows, cols] of the dataset's own dtype) into ``ds`` in the
    original representation; returns a note when the transfer syntax had to change."""
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian

    frames = stored if stored.shape[0] > 1 else stored[0]
    file_meta = getattr(ds, "file_meta", None)
    syntax = file_meta.get("TransferSyntaxUID") if file_meta is not None else None
    if syntax is not None and syntax.is_compressed:
        if str(syntax) in LOSSLESS:
            try:
                ds.compress(syntax, np.ascontiguousarray(frames), generate_instance_uid=False)
                return None
            except Exception as exc:
                reason = f"no encoder for {syntax.name} ({type(exc).__name__})"
        else:
            reason = f"the original {syntax.name} is lossy and is not compressed again"
        data = np.ascontiguousarray(frames.astype(frames.dtype.newbyteorder("<")))
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        _raw_pixel_element(ds, data.tobytes())
        return f"written as Explicit VR Little Endian: {reason}"
    big = syntax == ExplicitVRBigEndian or (syntax is None and not getattr(ds, "is_little_endian", True))
    data = np.ascontiguousarray(frames.astype(frames.dtype.newbyteorder(">" if big else "<")))
    _raw_pixel_element(ds, data.tobytes())
    return None


def _raw_pixel_element(ds: Any, raw: bytes) -> None:
    if len(raw) % 2:
        raw += b"\x00"
    ds.PixelData = raw
    element = ds["PixelData"]
    element.VR = "OB" if int(ds.BitsAllocated) == 8 else "OW"
    element.is_undefined_length = False


def _derive_header(ds: Any, series_uid: str, model_name: str, map_uid: Callable[[str], str] | None) -> None:
    """Make ``ds`` a derived image of a new series; with ``map_uid``, also strip vendor tags."""
    from pydicom.dataset import Dataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, generate_uid

    old_sop = ds.get("SOPInstanceUID")
    if map_uid is None:
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = generate_uid()
        if old_sop and "SOPClassUID" in ds:
            source = Dataset()
            source.ReferencedSOPClassUID = ds.SOPClassUID
            source.ReferencedSOPInstanceUID = old_sop
            ds.SourceImageSequence = [source]
    elif not old_sop:
        ds.SOPInstanceUID = generate_uid()  # nothing to map: a fresh one under pydicom's root
    if getattr(ds, "file_meta", None) is not None:
        if "MediaStorageSOPInstanceUID" in ds.file_meta:
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        # The file is written by this software, not by the scanner that wrote the original.
        ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds.file_meta.ImplementationVersionName = IMPLEMENTATION_VERSION
    image_type = [str(v) for v in ds.get("ImageType", [])] if "ImageType" in ds else []
    image_type = (image_type + ["", ""])[: max(2, len(image_type))]
    image_type[:2] = ["DERIVED", "SECONDARY"]
    ds.ImageType = image_type
    ds.DerivationDescription = (
        f"GECO scanner-signature removal: every slice passed through a trained generator "
        f"(geco-tf {_version()}, model {model_name})"
    )[:1024]
    description = str(ds.get("SeriesDescription", "") or "")
    ds.SeriesDescription = (description[: 64 - len(SERIES_SUFFIX)] + SERIES_SUFFIX).strip()
    if map_uid is not None:
        # Old SOP, Series, Study and Frame of Reference UIDs all go through the same keyed map.
        strip_vendor_tags(ds, map_uid)
        if not ds.get("SeriesDescription"):
            ds.SeriesDescription = SERIES_SUFFIX.strip()
        if not ds.get("DerivationDescription"):
            ds.DerivationDescription = "GECO scanner-signature removal"


def output_names(files: list[Path], strip_vendor_tags: bool) -> list[str]:
    """Output file names for a series: the input names, except that with ``strip_vendor_tags``
    a series whose file names hold UIDs (which may carry a vendor's root) gets
    ``IM_<8 hex>_<00001>.dcm`` names, stable for the same input names."""
    names = [Path(f).name for f in files]
    if not strip_vendor_tags or not any(_UID_IN_NAME.search(name) for name in names):
        return names
    digest = hashlib.sha256("\0".join(sorted(names)).encode()).hexdigest()[:8]
    return [f"IM_{digest}_{k + 1:05d}.dcm" for k in range(len(names))]


def deartifact_series(
    fn: Deartifactor,
    files: list[Path],
    out: str | os.PathLike | list[Path],
    *,
    strip_vendor_tags: bool = False,
    model_name: str = "geco",
    batch_size: int = DEFAULT_BATCH,
    uid_key: str | None = None,
) -> tuple[int, str, list[str]]:
    """Write the de-artifacted series of ``files``: into the directory ``out`` (names from
    :func:`output_names`) or, when ``out`` is a list, to those paths (one per file).

    Every image is computed before the first file is written, and each file is written
    atomically. ``uid_key`` keys the UID map of ``strip_vendor_tags`` (a random key when None:
    then UIDs are consistent only within this call). Returns (images processed, mode
    "axial"/"native", notes). Raises :class:`InputSkipped` naming the file when any image of
    the series cannot be used.
    """
    from pydicom.uid import generate_uid

    files = [Path(f) for f in files]
    if isinstance(out, (list, tuple)):
        outputs = [Path(p) for p in out]
    else:
        outputs = [Path(out) / name for name in output_names(files, strip_vendor_tags)]
    if len(outputs) != len(files):
        raise ValueError(f"{len(files)} files but {len(outputs)} output paths")
    datasets, arrays = _read(files)
    map_uid = None
    if strip_vendor_tags:
        for path, ds in zip(files, datasets):
            sop_class = str(ds.get("SOPClassUID", ""))
            if sop_class and not sop_class.startswith(STANDARD_UID_ROOT):
                raise InputSkipped(f"{path.name}: private SOP class; its UID would name the vendor")
        map_uid = uid_mapper(uid_key if uid_key is not None else secrets.token_hex(16))
    mosaics = [_mosaic(ds) for ds in datasets]
    is_mosaic = ["MOSAIC" in [str(v).upper() for v in ds.get("ImageType", [])] for ds in datasets]
    stack = None if any(is_mosaic) else _stack(datasets, arrays)
    results: list[np.ndarray] = [np.empty(0)] * len(arrays)
    notes: set[str] = set()
    if stack is not None:
        order, affine = stack
        volume = np.stack([arrays[i][0] for i in order])
        out_volume, mode, _ = deartifact_volume(fn, volume, affine, native_axis=0, batch_size=batch_size)
        for k, i in enumerate(order):
            results[i] = out_volume[k][None]
    else:
        mode = "native"
        for i, values in enumerate(arrays):
            if mosaics[i] is not None and values.shape[0] == 1:
                results[i] = _run_mosaic(fn, values[0], *mosaics[i], batch_size)[None]
                notes.add("Siemens mosaic: each tile processed as a slice")
            else:
                if is_mosaic[i]:
                    notes.add("mosaic header does not match the image size: processed as one image")
                results[i] = run_slices(fn, values, batch_size)
    series_uid = generate_uid()
    encoded = []
    for ds, original, values in zip(datasets, arrays, results):
        low, high, dtype = _stored_range(ds)
        if str(ds.PhotometricInterpretation) == "MONOCHROME1":
            values, original = -values, -original
        stored = np.clip(np.rint(values), low, high)
        if "PixelPaddingValue" in ds:
            stored = np.where(original == float(ds.PixelPaddingValue), original, stored)
        stored = stored.astype(dtype)
        _derive_header(ds, series_uid, model_name, map_uid)
        for keyword, value in (("SmallestImagePixelValue", stored.min()), ("LargestImagePixelValue", stored.max())):
            if keyword in ds:
                ds[keyword].value = int(value)
        note = _set_pixels(ds, stored)
        if note:
            notes.add(note)
        encoded.append(ds)
    for path, ds in zip(outputs, encoded):
        with atomic_path(path) as tmp:
            ds.save_as(tmp, enforce_file_format=False)
    frames = sum(a.shape[0] for a in arrays)
    return frames, mode, sorted(notes)
