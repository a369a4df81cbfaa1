"""DICOM series in, axial 3-D volumes out (paper section 3.3).

Three steps, each kept apart so the memory of a run is one series per worker:

1. :func:`discover_series` walks a tree of any depth and any file names and groups files by
   Series Instance UID, reading only a few header tags per file (no pixels).
2. :func:`build_series_volume` reads the headers of one series with pydicom, checks it is a
   single, complete MR volume (see the checks below), orders the slices along the slice normal and
   reads the pixels with SimpleITK's ``ImageSeriesReader`` (ITK's GDCM decodes the compressed
   transfer syntaxes too). If SimpleITK cannot read the files, and always for enhanced
   multi-frame objects (whose per-frame geometry ITK ignores), the pixels are decoded by pydicom,
   whose pixel-data plugins (pylibjpeg: JPEG lossless, JPEG-LS, JPEG 2000, RLE) handle the
   compressed syntaxes, and the geometry comes from the headers.
3. The volume is reoriented with ``DICOMOrient`` to LPS: array axes [slice, row, column] run
   inferior->superior, anterior->posterior, right->left, i.e. axial slices in the radiological
   convention. Only axes are permuted and flipped -- no interpolation -- so the scanner's own
   pixel texture, the very thing GECO learns to remove, reaches the dataset untouched.

Why a series is refused (the reason goes to ``skipped.csv``): not MR, secondary capture, colour,
localiser, missing Manufacturer or MagneticFieldStrength, mixed orientations or
sizes, uneven slice spacing (missing slices), 4-D series with unequal volumes, unreadable pixel
data, or a reoriented volume too thin to give axial slices (a single sagittal slice). Duplicate
instances are dropped (each file listed) and the series goes on; a 4-D series keeps its first
volume (said in the dataset's report). Siemens mosaics (EPI, diffusion) are de-mosaicked with
nibabel's ``MosaicWrapper`` (tile count from the CSA header), as dcm2niix does.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from geco_tf.data import labels as L

#: Tags read per file during discovery (grouping and the identifiers to scrub from logs).
DISCOVERY_TAGS = (
    "SOPClassUID",
    "Modality",
    "SeriesInstanceUID",
    "StudyInstanceUID",
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "AccessionNumber",
    "OtherPatientIDs",
    "ImageType",
)
#: Tags read per slice of a classic (one frame per file) series.
GEOMETRY_TAGS = (
    "SOPInstanceUID",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
    "Rows",
    "Columns",
    "InstanceNumber",
    "NumberOfFrames",
    "SamplesPerPixel",
    "TemporalPositionIdentifier",
    "TriggerTime",
    "AcquisitionNumber",
    "EchoNumbers",
    "DiffusionBValue",
    "SliceThickness",
    "SpacingBetweenSlices",
)
#: Tags that size the pixel data (checked against the file before any decoding).
PIXEL_TAGS = ("PixelData", "BitsAllocated", "NumberOfFrames")
MR_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.4": "MR Image Storage",
    "1.2.840.10008.5.1.4.1.1.4.1": "Enhanced MR Image Storage",
    "1.2.840.10008.5.1.4.1.1.4.4": "Legacy Converted Enhanced MR Image Storage",
}
SECONDARY_CAPTURE_PREFIX = "1.2.840.10008.5.1.4.1.1.7"
DICOMDIR_CLASS = "1.2.840.10008.1.3.10"
#: Orientation the volumes are put in (letters: where each array axis x, y, z points to).
AXIAL_ORIENTATION = "LPS"
#: A reoriented volume narrower than this in the axial plane gives no usable axial slices.
MIN_AXIAL_SIDE = 16
#: Slice gaps may differ from their median by this fraction before a series counts as uneven.
SPACING_TOLERANCE = 0.1
_LOCALISER_WORDS = ("localizer", "localiser", "scout", "survey", "3-plane", "3 plane", "tri-pilot", "aahead")


class SeriesRejected(Exception):
    """A series that cannot become a volume; ``str(exc)`` is the one-line reason for skipped.csv."""

    def __init__(self, reason: str, file_skips: list[tuple[str, str]] | None = None) -> None:
        super().__init__(reason)
        self.file_skips = list(file_skips or [])


@dataclass
class SeriesFiles:
    """The files of one series found by discovery. ``uid`` stays in memory: it is never written."""

    uid: str
    patient: str  # PatientID, else name|birth date, else the study, else the series (never written)
    modality: str
    sop_class: str
    image_type: str
    files: list[str] = field(default_factory=list)
    patient_id: str = ""  # the PatientID as written (may be empty)
    study: str = ""  # StudyInstanceUID (never written)


@dataclass
class Discovery:
    """What a walk over an input tree found."""

    series: dict[str, SeriesFiles]
    skipped: list[tuple[str, str]]
    identifiers: set[str]
    n_files: int


@dataclass
class SeriesVolume:
    """One series as a reoriented (axial, LPS) float32 SimpleITK image plus its labels."""

    image: Any
    labels: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    file_skips: list[tuple[str, str]] = field(default_factory=list)
    decoder: str = "SimpleITK"


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence pydicom and ITK warnings: they quote header values and paths (UIDs, names)."""
    import SimpleITK as sitk

    logger = logging.getLogger("pydicom")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    display = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)
        sitk.ProcessObject.SetGlobalWarningDisplay(display)


# --- discovery -----------------------------------------------------------------------------


def iter_files(root: str | os.PathLike, exclude: tuple[str | os.PathLike, ...] = ()) -> Iterator[str]:
    """Every regular file under ``root`` in a stable order; hidden files and folders are ignored.

    Symbolic links to folders are followed (archives are often assembled from links), each real
    folder once, so a link loop cannot make the walk endless. ``exclude`` lists paths never to
    enter (the output dataset and its key, when written inside the input tree).
    """
    root = Path(root)
    skip = {os.path.realpath(p) for p in exclude}
    if root.is_file():
        yield str(root)
        return
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen or real in skip:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith("."):
                path = os.path.join(dirpath, name)
                if os.path.isfile(path) and os.path.realpath(path) not in skip:
                    yield path


def _text(ds: Any, keyword: str) -> str:
    try:
        value = ds.get(keyword)
    except Exception:
        return ""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value).strip()


def discover_series(
    root: str | os.PathLike,
    progress: Callable[[int], None] | None = None,
    exclude: tuple[str | os.PathLike, ...] = (),
) -> Discovery:
    """Group every DICOM file under ``root`` by Series Instance UID, reading headers only.

    Files that are not DICOM, unreadable or carry no series UID are listed in ``skipped`` with a
    reason. ``identifiers`` collects patient names, ids, birth dates, accession numbers and study
    UIDs so that logs and ``skipped.csv`` can be scrubbed of them.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    series: dict[str, SeriesFiles] = {}
    skipped: list[tuple[str, str]] = []
    identifiers: set[str] = set()
    n_files = 0
    with quiet():
        for path in iter_files(root, exclude):
            n_files += 1
            if progress is not None:
                progress(1)
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=list(DISCOVERY_TAGS))
            except InvalidDicomError:
                skipped.append((path, "not a DICOM file"))
                continue
            except Exception as exc:  # truncated or corrupt header
                skipped.append((path, f"unreadable DICOM header ({type(exc).__name__})"))
                continue
            for keyword in ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber", "OtherPatientIDs"):
                value = _text(ds, keyword)
                if value:
                    identifiers.update(v for v in value.split("\\") if v)
            uid = _text(ds, "SeriesInstanceUID")
            if not uid:
                media_class = str(getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", "") or "")
                if media_class == DICOMDIR_CLASS:
                    skipped.append((path, "DICOMDIR (an index of the files, not an image)"))
                else:
                    skipped.append((path, "DICOM header without SeriesInstanceUID (truncated, corrupt or not an image)"))
                continue
            entry = series.get(uid)
            if entry is None:
                patient = (
                    _text(ds, "PatientID")
                    or "|".join(filter(None, (_text(ds, "PatientName"), _text(ds, "PatientBirthDate"))))
                    or _text(ds, "StudyInstanceUID")
                    or uid
                )
                entry = series[uid] = SeriesFiles(
                    uid=uid,
                    patient=patient,
                    modality=_text(ds, "Modality").upper(),
                    sop_class=_text(ds, "SOPClassUID"),
                    image_type=_text(ds, "ImageType").upper(),
                    patient_id=_text(ds, "PatientID"),
                    study=_text(ds, "StudyInstanceUID"),
                )
            entry.files.append(path)
    return Discovery(series=series, skipped=skipped, identifiers=identifiers, n_files=n_files)


def series_rejection(entry: SeriesFiles) -> str | None:
    """Reason to refuse a series from discovery alone (no further reading), else ``None``."""
    if entry.sop_class.startswith(SECONDARY_CAPTURE_PREFIX):
        return "secondary capture, not an acquired MR image"
    if entry.modality != "MR":
        return f"modality {entry.modality or 'missing'}, not MR"
    if entry.sop_class and entry.sop_class not in MR_SOP_CLASSES:
        return "not an MR image object (e.g. spectroscopy, report or presentation state)"
    if "LOCALIZER" in entry.image_type.split("\\"):
        return "localiser (scout) series"
    return None


# --- headers and labels --------------------------------------------------------------------


def series_labels(ds: Any) -> dict[str, Any]:
    """Labels of a series from its first header: canonical manufacturer, field strength, modality.

    Raises :class:`SeriesRejected` when Manufacturer or MagneticFieldStrength is missing.
    """
    manufacturer = L.normalise_manufacturer(_text(ds, "Manufacturer"))
    if manufacturer is None:
        raise SeriesRejected("missing Manufacturer (0008,0070)")
    raw_field = _text(ds, "MagneticFieldStrength")
    tesla = L.parse_field_strength(raw_field)
    if tesla is None:
        raise SeriesRejected("missing or unreadable MagneticFieldStrength (0018,0087)")
    return {
        "manufacturer": manufacturer,
        "field_strength": L.field_strength_label(tesla),
        "field_strength_tesla": round(tesla, 4),
        "modality": L.modality_from_header(ds),
    }


def _check_first_header(ds: Any) -> None:
    """Refusals that one header can decide."""
    modality = _text(ds, "Modality").upper()
    sop_class = _text(ds, "SOPClassUID")
    image_type = _text(ds, "ImageType").upper().split("\\")
    if sop_class.startswith(SECONDARY_CAPTURE_PREFIX):
        raise SeriesRejected("secondary capture, not an acquired MR image")
    if modality != "MR":
        raise SeriesRejected(f"modality {modality or 'missing'}, not MR")
    if "Rows" not in ds or "Columns" not in ds:
        raise SeriesRejected("no image in the object (no Rows/Columns)")
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    photometric = _text(ds, "PhotometricInterpretation").upper()
    if samples != 1 or (photometric and not photometric.startswith("MONOCHROME")):
        raise SeriesRejected(f"colour image ({photometric or 'SamplesPerPixel=' + str(samples)}), not a grey MR image")
    if "LOCALIZER" in image_type:
        raise SeriesRejected("localiser (scout) series")
    description = f"{_text(ds, 'SeriesDescription')} {_text(ds, 'ProtocolName')}".lower()
    if any(word in description for word in _LOCALISER_WORDS):
        raise SeriesRejected("localiser (scout) series")


# --- geometry ------------------------------------------------------------------------------


@dataclass
class _Slice:
    """What ordering needs to know about one 2-D image (a file or a frame)."""

    ref: Any  # file path (classic) or frame index (enhanced)
    position: np.ndarray
    orientation: np.ndarray
    spacing: tuple[float, float]
    shape: tuple[int, int]
    identity: tuple  # temporal/echo/acquisition key: equal for true duplicates
    number: float  # instance number or frame number: the tie-break for "first"
    rescale: tuple[float, float] = (1.0, 0.0)


def _floats(value: Any, n: int) -> np.ndarray | None:
    try:
        array = np.array([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return array if array.shape == (n,) and np.all(np.isfinite(array)) else None


def _sortable(value: Any) -> tuple:
    if value in (None, ""):
        return (0, 0.0, "")
    try:
        return (1, float(value), "")
    except (TypeError, ValueError):
        return (2, 0.0, str(value))


@dataclass
class _Stack:
    slices: list[_Slice]
    row_cosine: np.ndarray
    column_cosine: np.ndarray
    normal: np.ndarray
    spacing: tuple[float, float, float]  # x (along a row), y (along a column), z (between slices)
    notes: list[str]
    duplicates: list[Any]


#: Index groups of :attr:`_Slice.identity` (temporal position, trigger time, acquisition number,
#: echo, b-value) tried, after the whole key, to tell the volumes of a 4-D classic series apart:
#: temporal position first, because scanners that record slice timing give every image its own
#: trigger and acquisition time while the images of one phase share the temporal position.
_VOLUME_KEYS = ((0, 3, 4), (2, 3, 4), (1, 3, 4))


def _volume_key(slices: list[_Slice], groups: list[list[int]]) -> tuple[Callable[[int], tuple], list[tuple]] | None:
    """A key that splits the images at every position into the same set of volumes (and that
    set, sorted), or ``None`` when no header key does."""
    keys: list[Callable[[int], tuple]] = [lambda i: slices[i].identity]
    if all(len(s.identity) == 5 for s in slices):
        keys += [lambda i, idx=idx: tuple(slices[i].identity[j] for j in idx) for idx in _VOLUME_KEYS]
    for key in keys:
        sets = [{key(i) for i in g} for g in groups]
        if len(sets[0]) > 1 and all(s == sets[0] for s in sets):
            return key, sorted(sets[0])
    return None


def order_slices(slices: list[_Slice], fallback_gap: float | None = None) -> _Stack:
    """Order slices along the slice normal into one volume; refuse what is not one volume.

    Refuses mixed orientations or sizes, uneven spacing (a missing slice shows as a double gap),
    and 4-D data whose positions do not all have the same number of images. True duplicates (same
    position and same temporal/echo key) are dropped; a 4-D series keeps its first volume.
    """
    if not slices:
        raise SeriesRejected("no images in series")
    first = slices[0]
    if first.orientation is None or first.position is None:
        raise SeriesRejected("no ImagePositionPatient/ImageOrientationPatient: geometry unknown")
    for s in slices:
        if s.orientation is None or s.position is None:
            raise SeriesRejected("some images lack ImagePositionPatient/ImageOrientationPatient")
        if np.max(np.abs(s.orientation - first.orientation)) > 1e-3:
            raise SeriesRejected("mixed slice orientations in one series (localiser or several stacks)")
        if s.shape != first.shape:
            raise SeriesRejected(f"mixed image sizes in one series ({first.shape} and {s.shape})")
        if max(abs(a - b) for a, b in zip(s.spacing, first.spacing)) > 1e-3:
            raise SeriesRejected("mixed pixel spacings in one series")
    row = first.orientation[:3] / np.linalg.norm(first.orientation[:3])
    col = first.orientation[3:] / np.linalg.norm(first.orientation[3:])
    if abs(float(row @ col)) > 1e-2:
        raise SeriesRejected("ImageOrientationPatient row and column directions are not perpendicular")
    col = col - (row @ col) * row
    col /= np.linalg.norm(col)
    normal = np.cross(row, col)
    along = np.array([float(s.position @ normal) for s in slices])
    order = np.argsort(along, kind="stable")
    # group images at one position (within 0.01 mm)
    groups: list[list[int]] = []
    for i in order:
        if groups and abs(along[i] - along[groups[-1][0]]) < 1e-2:
            groups[-1].append(int(i))
        else:
            groups.append([int(i)])
    notes: list[str] = []
    duplicates: list[Any] = []
    chosen: list[int] = []
    sizes = {len(g) for g in groups}
    if sizes != {1}:
        identities = [{slices[i].identity for i in g} for g in groups]
        if all(len(ids) == 1 for ids in identities):
            # copies of one image -- or a 4-D series whose headers tell the volumes apart by
            # InstanceNumber only (GE fMRI): the same count at every position, distinct numbers
            numbered = len(sizes) == 1 and all(len({slices[i].number for i in g}) == len(g) for g in groups)
            for g in groups:
                g.sort(key=lambda i: (slices[i].number, i))
                chosen.append(g[0])
                if not numbered:
                    duplicates.extend(slices[i].ref for i in g[1:])
            if numbered:
                notes.append(f"4-D series: {len(groups[0])} volumes (told apart by InstanceNumber), the first kept")
        else:
            # 4-D: volumes are the distinct temporal/echo keys; keep the first one
            keyed = _volume_key(slices, groups)
            if keyed is not None:
                key, volumes = keyed
                first_volume = volumes[0]
                for g in groups:
                    same = sorted((i for i in g if key(i) == first_volume), key=lambda i: (slices[i].number, i))
                    chosen.append(same[0])
                    duplicates.extend(slices[i].ref for i in same[1:])
                notes.append(f"4-D series: {len(volumes)} volumes, the first kept")
            else:
                # no header key splits every position the same way (e.g. each image has its own
                # trigger time and no temporal position): match volumes by order at each position
                counts = [len(g) for g in groups]
                if len(set(counts)) != 1:
                    raise SeriesRejected(
                        f"4-D series with unequal volumes ({min(counts)} to {max(counts)} images per position): "
                        "missing slices?"
                    )
                for g in groups:
                    g.sort(key=lambda i: (slices[i].identity, slices[i].number, i))
                    chosen.append(g[0])
                notes.append(f"4-D series: {counts[0]} volumes (matched by order at each position), the first kept")
    else:
        chosen = [g[0] for g in groups]
    positions = along[chosen]
    gaps = np.diff(positions)
    if len(gaps):
        median = float(np.median(gaps))
        deviation = float(np.max(np.abs(gaps - median)))
        if deviation > max(SPACING_TOLERANCE * median, 1e-3):
            raise SeriesRejected(
                f"uneven slice spacing ({gaps.min():.3g} to {gaps.max():.3g} mm between slices): missing slices?"
            )
        gap = median
    else:
        gap = fallback_gap if fallback_gap and fallback_gap > 0 else 1.0
    ordered = [slices[i] for i in chosen]
    # the origin is the first slice; the slice axis is the normal (positions increase along it)
    spacing = (float(first.spacing[1]), float(first.spacing[0]), float(gap))
    return _Stack(ordered, row, col, normal, spacing, notes, duplicates)


def _make_image(volume: np.ndarray, stack: _Stack):
    """A SimpleITK image [z, y, x] with the stack's origin, spacing and direction."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(volume, isVector=False)
    _set_geometry(image, stack)
    return image


def _set_geometry(image: Any, stack: _Stack) -> None:
    direction = np.column_stack([stack.row_cosine, stack.column_cosine, stack.normal])
    image.SetOrigin(tuple(float(v) for v in stack.slices[0].position))
    image.SetSpacing(stack.spacing)
    image.SetDirection(tuple(float(v) for v in direction.ravel()))


def reorient_axial(image: Any) -> Any:
    """Permute and flip axes (no interpolation) so that array slices are axial (LPS)."""
    import SimpleITK as sitk

    return sitk.DICOMOrient(image, AXIAL_ORIENTATION)


# --- classic series ------------------------------------------------------------------------


def pixel_data_problem(ds: Any, path: str) -> str | None:
    """Why a file's pixel data cannot be whole, from its header alone, or ``None``.

    Catches files cut short in transfer (the declared length runs past the end of the file) and
    uncompressed pixel data shorter than Rows x Columns -- which some readers silently pad.
    """
    try:
        element = ds.get_item("PixelData", keep_deferred=True)
    except Exception:
        element = None
    if element is None:
        return "no pixel data"
    length = getattr(element, "length", None)
    offset = getattr(element, "value_tell", None)
    if length is None or offset is None or length == 0xFFFFFFFF:  # loaded already, or encapsulated
        return None
    size = os.path.getsize(path)
    if offset + length > size:
        return f"truncated file: pixel data cut short ({size - offset} of {length} bytes)"
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is not None and getattr(syntax, "is_encapsulated", False):
        return None
    try:
        expected = (
            int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1) or 1)
            * int(ds.get("NumberOfFrames", 1) or 1) * int(ds.BitsAllocated) // 8
        )
    except (AttributeError, TypeError, ValueError):
        return None
    if length < expected:
        return f"pixel data shorter than Rows x Columns ({length} of {expected} bytes)"
    return None


def _classic_slice(path: str, ds: Any) -> _Slice:
    position = _floats(ds.get("ImagePositionPatient"), 3) if "ImagePositionPatient" in ds else None
    orientation = _floats(ds.get("ImageOrientationPatient"), 6) if "ImageOrientationPatient" in ds else None
    spacing = _floats(ds.get("PixelSpacing"), 2) if "PixelSpacing" in ds else None
    identity = tuple(
        _sortable(ds.get(k)) for k in ("TemporalPositionIdentifier", "TriggerTime", "AcquisitionNumber", "EchoNumbers")
    ) + (_sortable(ds.get("DiffusionBValue")),)
    return _Slice(
        ref=path,
        position=position,
        orientation=orientation,
        spacing=tuple(spacing) if spacing is not None else (1.0, 1.0),
        shape=(int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)),
        identity=identity,
        number=_sortable(ds.get("InstanceNumber"))[1],
    )


def _fallback_gap(ds: Any) -> float | None:
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        try:
            value = float(ds.get(keyword))
        except (TypeError, ValueError):
            continue
        if value > 0:
            return value
    return None


NO_DECODER = "no decoder for the transfer syntax"


def read_pixels_pydicom(paths: list[str], shape: tuple[int, int]) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """Decode each file with pydicom (its plugins handle compressed syntaxes) and rescale."""
    import pydicom
    from pydicom.pixels import apply_rescale

    volume = np.empty((len(paths), *shape), dtype=np.float32)
    failed: list[tuple[str, str]] = []
    for k, path in enumerate(paths):
        ds = None
        try:
            ds = pydicom.dcmread(path)
            pixels = ds.pixel_array
            if pixels.shape != shape:
                raise ValueError(f"pixel array {pixels.shape} != Rows x Columns {shape}")
            volume[k] = apply_rescale(pixels, ds)
        except NotImplementedError:
            syntax = getattr(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None), "name", "unknown")
            failed.append((path, f"{NO_DECODER}: {syntax}"))
        except Exception as exc:
            failed.append((path, f"unreadable pixel data ({type(exc).__name__}: {first_line(exc)})"))
    return volume, failed


def first_line(exc: BaseException, limit: int = 160) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return text[:limit]


def _classic_volume(paths: list[str], first: Any, decoder: str) -> SeriesVolume:
    import pydicom
    import SimpleITK as sitk

    slices: list[_Slice] = []
    file_skips: list[tuple[str, str]] = []
    seen: dict[str, str] = {}
    for path in paths:
        try:
            ds = pydicom.dcmread(path, defer_size=1024, specific_tags=list(GEOMETRY_TAGS + PIXEL_TAGS))
        except Exception as exc:
            file_skips.append((path, f"unreadable DICOM header ({type(exc).__name__})"))
            continue
        problem = pixel_data_problem(ds, path)
        if problem:
            file_skips.append((path, problem))
            continue
        sop = _text(ds, "SOPInstanceUID")
        if sop and sop in seen:
            file_skips.append((path, "duplicate instance (same SOPInstanceUID as another file of the series)"))
            continue
        seen[sop] = path
        if int(ds.get("NumberOfFrames", 1) or 1) > 1:
            raise SeriesRejected("classic series mixing multi-frame and single-frame files", file_skips)
        slices.append(_classic_slice(path, ds))
    if not slices and file_skips:
        raise SeriesRejected(f"no usable image: {len(file_skips)} file(s) unreadable", file_skips)
    try:
        stack = order_slices(slices, _fallback_gap(first))
    except SeriesRejected as exc:
        raise SeriesRejected(str(exc), file_skips) from None
    file_skips.extend((ref, "duplicate image (same position and timing as another file)") for ref in stack.duplicates)
    ordered = [s.ref for s in stack.slices]
    image = None
    used = "SimpleITK"
    if decoder in ("auto", "sitk"):
        try:
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames(ordered)
            reader.SetOutputPixelType(sitk.sitkFloat32)
            image = reader.Execute()
            if image.GetDimension() != 3 or image.GetSize() != (stack.slices[0].shape[1], stack.slices[0].shape[0], len(ordered)):
                image = None
            else:
                _set_geometry(image, stack)
        except (RuntimeError, TypeError, UnicodeError):  # TypeError: a file name that is not valid UTF-8
            image = None
        if image is None and decoder == "sitk":
            raise SeriesRejected("SimpleITK could not read the series", file_skips)
    if image is None:
        used = "pydicom"
        volume, failed = read_pixels_pydicom(ordered, stack.slices[0].shape)
        if failed:
            file_skips.extend(failed)
            reasons = {reason for _, reason in failed}
            why = next(iter(reasons)) if len(reasons) == 1 and NO_DECODER in next(iter(reasons)) else "truncated or corrupt"
            raise SeriesRejected(f"pixel data unreadable in {len(failed)} of {len(ordered)} files ({why})", file_skips)
        image = _make_image(volume, stack)
    return SeriesVolume(image=image, labels={}, notes=stack.notes, file_skips=file_skips, decoder=used)


# --- enhanced multi-frame ------------------------------------------------------------------


def _group_item(ds: Any, frame: Any, sequence: str) -> Any:
    """The functional-group item ``sequence`` for a frame: per-frame first, then shared."""
    for groups in (frame, (ds.get("SharedFunctionalGroupsSequence") or [None])[0]):
        if groups is None:
            continue
        seq = groups.get(sequence)
        if seq:
            return seq[0]
    return None


def enhanced_frames(ds: Any) -> list[_Slice]:
    """Per-frame geometry, timing and rescale of an enhanced multi-frame object."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    if not per_frame or len(per_frame) != n_frames:
        raise SeriesRejected("enhanced multi-frame object without per-frame functional groups (no geometry)")
    rows, cols = int(ds.Rows), int(ds.Columns)
    out: list[_Slice] = []
    for index, frame in enumerate(per_frame):
        plane = _group_item(ds, frame, "PlanePositionSequence")
        orient = _group_item(ds, frame, "PlaneOrientationSequence")
        measures = _group_item(ds, frame, "PixelMeasuresSequence")
        content = _group_item(ds, frame, "FrameContentSequence")
        transform = _group_item(ds, frame, "PixelValueTransformationSequence")
        position = _floats(plane.get("ImagePositionPatient"), 3) if plane is not None else None
        orientation = _floats(orient.get("ImageOrientationPatient"), 6) if orient is not None else None
        spacing = _floats(measures.get("PixelSpacing"), 2) if measures is not None else None
        identity = (
            _sortable(content.get("TemporalPositionIndex")) if content is not None else _sortable(None),
            _sortable(content.get("StackID")) if content is not None else _sortable(None),
        )
        slope, intercept = 1.0, 0.0
        if transform is not None:
            slope = float(transform.get("RescaleSlope", 1.0) or 1.0)
            intercept = float(transform.get("RescaleIntercept", 0.0) or 0.0)
        out.append(
            _Slice(
                ref=index,
                position=position,
                orientation=orientation,
                spacing=tuple(spacing) if spacing is not None else (1.0, 1.0),
                shape=(rows, cols),
                identity=identity,
                number=float(index),
                rescale=(slope, intercept),
            )
        )
    return out


def decode_frames(ds: Any) -> np.ndarray:
    """All frames of a dataset as [frames, rows, columns] (pydicom and its pixel-data plugins)."""
    pixels = ds.pixel_array
    if pixels.ndim == 2:
        pixels = pixels[None]
    if pixels.ndim != 3:
        raise SeriesRejected(f"unexpected pixel array shape {pixels.shape} (colour or volume-per-frame data)")
    return pixels


def _enhanced_volume(path: str) -> SeriesVolume:
    import pydicom

    ds = pydicom.dcmread(path)
    stack = order_slices(enhanced_frames(ds), _fallback_gap(ds))
    try:
        pixels = decode_frames(ds)
    except SeriesRejected:
        raise
    except Exception as exc:
        raise SeriesRejected(f"unreadable pixel data ({type(exc).__name__}: {first_line(exc)})") from None
    volume = np.empty((len(stack.slices), *stack.slices[0].shape), dtype=np.float32)
    for k, s in enumerate(stack.slices):
        slope, intercept = s.rescale
        volume[k] = pixels[s.ref] * np.float32(slope) + np.float32(intercept)
    del pixels
    notes = list(stack.notes)
    if stack.duplicates:
        notes.append(f"{len(stack.duplicates)} duplicate frames dropped")
    return SeriesVolume(image=_make_image(volume, stack), labels={}, notes=notes, decoder="pydicom")


# --- Siemens mosaic ------------------------------------------------------------------------


def _mosaic_volume(files: list[str]) -> SeriesVolume:
    """A Siemens mosaic series (EPI, diffusion: each file tiles the slices of one volume).

    De-mosaicked as dcm2niix does, with nibabel's ``MosaicWrapper``: the tile count from the CSA
    header (NumberOfImagesInMosaic), the slice positions from the CSA slice normal and the
    mosaic's corrected ImagePositionPatient. The first volume (lowest AcquisitionNumber, then
    InstanceNumber) is kept.
    """
    import pydicom
    from nibabel.nicom import dicomwrappers

    headers = []
    file_skips: list[tuple[str, str]] = []
    for path in files:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception as exc:
            file_skips.append((path, f"unreadable DICOM header ({type(exc).__name__})"))
            continue
        key = (_sortable(ds.get("AcquisitionNumber")), _sortable(ds.get("InstanceNumber")), path)
        headers.append(key)
    if not headers:
        raise SeriesRejected(f"no usable image: {len(file_skips)} file(s) unreadable", file_skips)
    first = min(headers)[2]
    try:
        wrapper = dicomwrappers.wrapper_from_data(pydicom.dcmread(first))
        if not getattr(wrapper, "is_mosaic", False):
            raise ValueError("not a mosaic")
        data = np.asarray(wrapper.get_data(), dtype=np.float32)
        affine = np.asarray(wrapper.affine, dtype=np.float64)
    except Exception as exc:
        raise SeriesRejected(
            "Siemens mosaic (EPI/diffusion) series that cannot be de-mosaicked "
            f"(CSA header or pixel data: {type(exc).__name__}: {first_line(exc, 100)})",
            file_skips,
        ) from None
    if data.ndim != 3:
        raise SeriesRejected(f"Siemens mosaic with unexpected data shape {data.shape}", file_skips)
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(data.transpose(2, 1, 0)), isVector=False)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    image.SetSpacing(tuple(float(v) for v in spacing))
    image.SetDirection(tuple(float(v) for v in (affine[:3, :3] / spacing).ravel()))
    image.SetOrigin(tuple(float(v) for v in affine[:3, 3]))
    notes = [f"Siemens mosaic de-mosaicked ({data.shape[2]} slices)"]
    if len(headers) > 1:
        notes.append(f"4-D series: {len(headers)} volumes, the first kept")
    return SeriesVolume(image=image, labels={}, notes=notes, file_skips=file_skips, decoder="nibabel (mosaic)")


# --- one series ----------------------------------------------------------------------------


def build_series_volume(files: list[str], decoder: str = "auto", require_labels: bool = True) -> SeriesVolume:
    """Read one series into an axial (LPS) float32 volume with its labels.

    ``decoder``: "auto" (SimpleITK, pydicom when SimpleITK fails), "sitk" or "pydicom" (the
    last two for tests and benchmarks). ``require_labels=False`` lets a series without
    Manufacturer/MagneticFieldStrength through (labels then ``None``), for inspection tools.
    Raises :class:`SeriesRejected` with a one-line reason.
    """
    import pydicom

    if not files:
        raise SeriesRejected("no files")
    files = sorted(files)
    with quiet():
        try:
            first = pydicom.dcmread(files[0], stop_before_pixels=True)
        except Exception as exc:
            raise SeriesRejected(f"unreadable DICOM header ({type(exc).__name__})") from None
        _check_first_header(first)
        if require_labels:
            labels = series_labels(first)
        else:
            try:
                labels = series_labels(first)
            except SeriesRejected:
                labels = {"manufacturer": None, "field_strength": None, "field_strength_tesla": None,
                          "modality": L.modality_from_header(first)}
        enhanced = int(first.get("NumberOfFrames", 1) or 1) > 1 or "PerFrameFunctionalGroupsSequence" in first
        if "MOSAIC" in _text(first, "ImageType").upper().split("\\"):
            volume = _mosaic_volume(files)
        elif enhanced:
            extra = [(f, "another multi-frame object of a series already taken from its first file") for f in files[1:]]
            volume = _enhanced_volume(files[0])
            volume.file_skips.extend(extra)
        else:
            volume = _classic_volume(files, first, decoder)
        volume.labels = labels
        volume.image = reorient_axial(volume.image)
        x, y, _ = volume.image.GetSize()
        if min(x, y) < MIN_AXIAL_SIDE:
            raise SeriesRejected(
                f"after reorientation to axial the slices are {y}x{x} voxels: too thin "
                "(a single non-axial slice or a thin slab)",
                volume.file_skips,
            )
    return volume
