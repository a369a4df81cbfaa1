"""Test and benchmark helper: multi-slice DICOM series written with pydicom from a real template.

The template is ``MR_small.dcm`` shipped inside pydicom (a real Toshiba MR file); each slice is a
copy with new pixels, geometry, labels, identifiers and UIDs, so the series are as close to a
scanner's output as a test can make them while staying small and known voxel for voxel.
"""

from __future__ import annotations

import copy
import gzip
import os
from pathlib import Path

import numpy as np
import pydicom
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

#: Row and column direction cosines of the test orientations.
ORIENTATIONS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "axial": ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0)),
    "sagittal": ((0.0, 1.0, 0.0), (0.0, 0.0, -1.0)),
    "coronal": ((1.0, 0.0, 0.0), (0.0, 0.0, -1.0)),
}


def _rotation(ax: float, ay: float, az: float) -> np.ndarray:
    ax, ay, az = np.radians([ax, ay, az])
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


_R = _rotation(20.0, 15.0, 10.0)
ORIENTATIONS["oblique"] = (tuple(_R @ [1.0, 0.0, 0.0]), tuple(_R @ [0.0, 1.0, 0.0]))


def template() -> pydicom.Dataset:
    """The real MR file every synthetic slice starts from."""
    import pydicom.data

    return pydicom.dcmread(pydicom.data.get_testdata_file("MR_small.dcm"))


def phantom(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """An int16 head-like volume [slices, rows, columns]: a textured ellipsoid on black.

    Random texture makes every voxel distinguishable, so a flipped or shifted axis cannot pass a
    voxel-for-voxel comparison.
    """
    n, rows, cols = shape
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(
        np.linspace(-1, 1, n), np.linspace(-1, 1, rows), np.linspace(-1, 1, cols), indexing="ij"
    )
    inside = (x / 0.85) ** 2 + (y / 0.9) ** 2 + (z / 0.95) ** 2 < 1.0  # the end slices are black
    volume = rng.integers(200, 1200, size=shape).astype(np.int16)
    volume[~inside] = 0
    return volume


def write_series(
    folder: str | os.PathLike,
    orientation: str = "axial",
    shape: tuple[int, int, int] = (20, 40, 48),
    spacing: tuple[float, float, float] = (0.9, 1.1, 2.5),
    volume: np.ndarray | None = None,
    seed: int = 0,
    origin: tuple[float, float, float] = (-30.0, -25.0, -20.0),
    patient_id: str = "PID-0001",
    patient_name: str = "Doe^Jane",
    birth_date: str = "19700101",
    accession: str = "ACC12345",
    manufacturer: str | None = "SIEMENS",
    field_strength: float | str | None = 3.0,
    description: str = "t1_mprage",
    study_uid: str | None = None,
    nested: bool = False,
    extra: dict | None = None,
    per_slice: list[dict] | None = None,
    skip_slices: tuple[int, ...] = (),
) -> dict:
    """Write one series (one file per slice) into ``folder``; return its UIDs, files and volume.

    ``shape`` is (slices, rows, columns); ``spacing`` is (row spacing, column spacing, slice gap) in
    mm. Files get UID names in shuffled order, under per-slice subfolders when ``nested``, so
    nothing but the headers tells the order. ``per_slice[k]`` adds header values to slice ``k``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    volume = phantom(shape, seed) if volume is None else volume
    row, col = (np.array(v, dtype=float) for v in ORIENTATIONS[orientation])
    normal = np.cross(row, col)
    base = template()
    for tag in ("SmallestImagePixelValue", "LargestImagePixelValue", "DataSetTrailingPadding"):
        if tag in base:
            del base[tag]
    base.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
    base.PatientID = patient_id
    base.PatientName = patient_name
    base.PatientBirthDate = birth_date
    base.AccessionNumber = accession
    if manufacturer is None:
        del base.Manufacturer
    else:
        base.Manufacturer = manufacturer
    if field_strength is not None:
        base.MagneticFieldStrength = field_strength
    base.SeriesDescription = description
    base.ProtocolName = description
    base.StudyInstanceUID = study_uid or generate_uid()
    base.SeriesInstanceUID = generate_uid()
    base.FrameOfReferenceUID = generate_uid()
    base.Rows, base.Columns = int(volume.shape[1]), int(volume.shape[2])
    base.PixelSpacing = [f"{spacing[0]:g}", f"{spacing[1]:g}"]
    base.SliceThickness = f"{spacing[2]:g}"
    base.ImageOrientationPatient = [f"{v:.8f}" for v in (*row, *col)]
    base.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    for key, value in (extra or {}).items():
        setattr(base, key, value)
    rng = np.random.default_rng(seed + 1)
    order = rng.permutation(volume.shape[0])
    files = []
    for k in order:
        if k in skip_slices:
            continue
        ds = copy.deepcopy(base)
        position = np.array(origin) + k * spacing[2] * normal
        ds.ImagePositionPatient = [f"{v:.6f}" for v in position]
        ds.SliceLocation = f"{float(position @ normal):.6f}"
        ds.InstanceNumber = int(k) + 1
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        for key, value in ((per_slice or [{}] * volume.shape[0])[k] or {}).items():
            setattr(ds, key, value)
        ds.PixelData = np.ascontiguousarray(volume[k], dtype="<i2").tobytes()
        target = folder / (f"{k:03d}" if nested else "") / ds.SOPInstanceUID
        target.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(target, enforce_file_format=True)
        files.append(str(target))
    return {
        "series_uid": base.SeriesInstanceUID,
        "study_uid": base.StudyInstanceUID,
        "files": files,
        "volume": volume,
        "row": row,
        "col": col,
        "normal": normal,
    }


def nibabel_data(name: str) -> str:
    """Path of a DICOM test file shipped inside nibabel (``tests/data`` or ``nicom/tests/data``)."""
    import nibabel

    root = Path(nibabel.__file__).parent
    for sub in ("tests/data", "nicom/tests/data"):
        if (root / sub / name).exists():
            return str(root / sub / name)
    raise FileNotFoundError(name)


def philips_enhanced(path: str | os.PathLike, frames: int = 40, size: int = 96, seed: int = 0) -> np.ndarray:
    """Write a real Philips Achieva enhanced multi-frame header (nibabel's ``philips_mprage``) with
    known pixels: the first ``frames`` frames cropped to ``size`` x ``size``. Returns the pixels.

    The file in nibabel carries all-zero pixels; its per-frame geometry is real, which is what a
    geometry test needs. Cropping rows/columns at the far end keeps every frame's position valid.
    """
    ds = pydicom.dcmread(gzip.open(nibabel_data("philips_mprage.dcm.gz")))
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 4000, size=(frames, size, size)).astype(np.uint16)
    ds.PerFrameFunctionalGroupsSequence = ds.PerFrameFunctionalGroupsSequence[:frames]
    ds.NumberOfFrames = frames
    if (0x2001, 0x1018) in ds:  # Philips private "number of slices", which dcm2niix trusts
        ds[0x2001, 0x1018].value = frames
    ds.Rows = ds.Columns = size
    ds.PixelData = pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return pixels
