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
* ``strip_vendor_tags``: Manufacturer, ManufacturerModelName, DeviceSerialNumber,
  SoftwareVersions, StationName and InstitutionName are blanked and all private tags removed: an
  image cleaned of its scanner signature whose header still says "SIEMENS" leaks the label.

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

import os
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from geco_tf.export.deartifact import DEFAULT_BATCH, Deartifactor, InputSkipped, deartifact_volume, run_slices
from geco_tf.io import atomic_path

VENDOR_TAGS = (
    "Manufacturer",
    "ManufacturerModelName",
    "DeviceSerialNumber",
    "SoftwareVersions",
    "StationName",
    "InstitutionName",
)
SERIES_SUFFIX = " GECO"


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("geco-tf")
    except Exception:
        return "unknown"


def group_series(paths: Iterable[Path]) -> tuple[dict[tuple[str, str], list[Path]], list[tuple[str, str]]]:
    """Group DICOM image files by (folder, Series Instance UID), reading headers only.

    Returns the groups (files sorted by name) and the files skipped with a reason: not DICOM,
    or DICOM without an image (structured reports, presentation states, DICOMDIR).
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    groups: dict[tuple[str, str], list[Path]] = defaultdict(list)
    skipped: list[tuple[str, str]] = []
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
        groups[(str(path.parent), uid)].append(path)
    return {key: sorted(files) for key, files in groups.items()}, skipped


def _read(files: list[Path]) -> tuple[list[Any], list[np.ndarray]]:
    """Full datasets and their stored pixel values as float32 [frames, rows, columns]."""
    import pydicom

    datasets, arrays = [], []
    for path in files:
        try:
            ds = pydicom.dcmread(path)
        except Exception as exc:
            raise InputSkipped(f"{path.name}: unreadable DICOM ({type(exc).__name__}: {exc})") from None
        if "PixelData" not in ds:
            raise InputSkipped(f"{path.name}: no pixel data")
        photometric = str(ds.get("PhotometricInterpretation", ""))
        if int(ds.get("SamplesPerPixel", 1)) != 1 or photometric not in ("MONOCHROME1", "MONOCHROME2"):
            raise InputSkipped(f"{path.name}: not a greyscale image ({photometric or 'no PhotometricInterpretation'})")
        if int(ds.get("BitsAllocated", 0)) not in (8, 16, 32):
            raise InputSkipped(f"{path.name}: unsupported BitsAllocated {ds.get('BitsAllocated')}")
        try:
            pixels = np.asarray(ds.pixel_array)
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


def _derive_header(ds: Any, series_uid: str, model_name: str, strip_vendor_tags: bool) -> None:
    from pydicom.dataset import Dataset
    from pydicom.uid import generate_uid

    old_sop = ds.get("SOPInstanceUID")
    ds.SeriesInstanceUID = series_uid
    ds.SOPInstanceUID = generate_uid()
    if getattr(ds, "file_meta", None) is not None and "MediaStorageSOPInstanceUID" in ds.file_meta:
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    image_type = [str(v) for v in ds.get("ImageType", [])] if "ImageType" in ds else []
    image_type = (image_type + ["", ""])[: max(2, len(image_type))]
    image_type[:2] = ["DERIVED", "SECONDARY"]
    ds.ImageType = image_type
    ds.DerivationDescription = (
        f"GECO scanner-signature removal: every slice passed through a trained generator "
        f"(geco-tf {_version()}, model {model_name})"
    )[:1024]
    if old_sop and "SOPClassUID" in ds:
        source = Dataset()
        source.ReferencedSOPClassUID = ds.SOPClassUID
        source.ReferencedSOPInstanceUID = old_sop
        ds.SourceImageSequence = [source]
    description = str(ds.get("SeriesDescription", "") or "")
    ds.SeriesDescription = (description[: 64 - len(SERIES_SUFFIX)] + SERIES_SUFFIX).strip()
    if strip_vendor_tags:
        for keyword in VENDOR_TAGS:
            if keyword in ds:
                ds[keyword].value = ""
        ds.remove_private_tags()


def deartifact_series(
    fn: Deartifactor,
    files: list[Path],
    out_dir: str | os.PathLike,
    *,
    strip_vendor_tags: bool = False,
    model_name: str = "geco",
    batch_size: int = DEFAULT_BATCH,
) -> tuple[int, str, list[str]]:
    """Write the de-artifacted series of ``files`` into ``out_dir`` (same file names).

    Every image is computed before the first file is written, and each file is written
    atomically. Returns (images processed, mode "axial"/"native", notes). Raises
    :class:`InputSkipped` naming the file when any image of the series cannot be used.
    """
    from pydicom.uid import generate_uid

    datasets, arrays = _read(list(files))
    mosaics = [_mosaic(ds) for ds in datasets]
    is_mosaic = ["MOSAIC" in [str(v).upper() for v in ds.get("ImageType", [])] for ds in datasets]
    stack = None if any(is_mosaic) else _stack(datasets, arrays)
    results: list[np.ndarray] = [np.empty(0)] * len(arrays)
    notes: set[str] = set()
    if stack is not None:
        order, affine = stack
        volume = np.stack([arrays[i][0] for i in order])
        out, mode, _ = deartifact_volume(fn, volume, affine, native_axis=0, batch_size=batch_size)
        for k, i in enumerate(order):
            results[i] = out[k][None]
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
        _derive_header(ds, series_uid, model_name, strip_vendor_tags)
        for keyword, value in (("SmallestImagePixelValue", stored.min()), ("LargestImagePixelValue", stored.max())):
            if keyword in ds:
                ds[keyword].value = int(value)
        note = _set_pixels(ds, stored)
        if note:
            notes.add(note)
        encoded.append(ds)
    out_dir = Path(out_dir)
    for path, ds in zip(files, encoded):
        with atomic_path(out_dir / Path(path).name) as tmp:
            ds.save_as(tmp, enforce_file_format=False)
    frames = sum(a.shape[0] for a in arrays)
    return frames, mode, sorted(notes)
