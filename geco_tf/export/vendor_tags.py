"""``--strip-vendor-tags``: a DICOM header that does not tell the scanner.

An image cleaned of its scanner signature whose header still says "SIEMENS", "3 T" or carries
a Siemens UID root leaks the very label the pixels were cleaned of. :func:`strip_vendor_tags`
removes every element from which manufacturer or field strength can be read, in the dataset,
in every nested sequence and in the file meta:

* **Manufacturer** (type 2) is kept but empty; model, station, serial number, software
  versions, institution, device and calibration elements, coil names, sequence and protocol
  names, scan options, MagneticFieldStrength, ImagingFrequency and their relatives
  (:data:`REMOVED`) are deleted, and so are **all private groups**.
* **UIDs** that are not DICOM's own (``1.2.840.10008.*``: SOP classes, transfer syntaxes) or
  HL7's (``2.16.840.1.113883.*``: coding schemes) are
  replaced by :func:`uid_mapper`'s UIDs under one neutral root (pydicom's,
  ``1.2.826.0.1.3680043.8.498``). The map is a keyed hash of the old UID: the same old UID
  gives the same new one everywhere in a run (and in a resumed run with the same key), so the
  series of one study keep one new StudyInstanceUID, share their new FrameOfReferenceUID (their
  geometry stays registered) and references between images (ReferencedSOPInstanceUID) stay
  consistent, while the old UID -- and its vendor root -- cannot be read back.
* **File meta**: ImplementationClassUID and ImplementationVersionName name this software
  (pydicom's root, ``GECO_TF``), the application entity titles and private information go.
* **A last sweep**: any remaining text value naming a vendor (:data:`VENDOR_WORDS`) or a field
  strength ("1.5T", "3 Tesla") is emptied; ImageType keeps only its standard values.

What the generator removed from the pixels is then nowhere in the file.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from typing import Any

#: Emptied, not deleted (type 2 in the General Equipment module).
BLANKED = ("Manufacturer",)
#: Deleted wherever they occur.
REMOVED = (
    # equipment
    "ManufacturerModelName", "ManufacturerModelVersion", "DeviceSerialNumber", "DeviceUID",
    "SoftwareVersions", "StationName", "StationAETitle", "GantryID", "DeviceDescription",
    "DateOfLastCalibration", "TimeOfLastCalibration", "DateOfManufacture", "DateOfInstallation",
    "UDISequence", "DeviceSequence", "ContributingEquipmentSequence", "SpatialResolution",
    "SecondaryCaptureDeviceManufacturer", "SecondaryCaptureDeviceManufacturerModelName",
    "SecondaryCaptureDeviceSoftwareVersions", "SecondaryCaptureDeviceID",
    "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName",
    "InstitutionCodeSequence", "InstitutionalDepartmentTypeCodeSequence",
    "PerformedStationName", "PerformedStationAETitle", "PerformedLocation",
    "ScheduledStationName", "ScheduledStationAETitle", "ScheduledStudyLocation",
    "ScheduledStudyLocationAETitle", "RetrieveAETitle", "StationAETitle",
    # coils
    "ReceiveCoilName", "TransmitCoilName", "ReceiveCoilManufacturerName",
    "TransmitCoilManufacturerName", "ReceiveCoilType", "TransmitCoilType", "QuadratureReceiveCoil",
    "MultiCoilDefinitionSequence", "MultiCoilConfiguration", "MultiCoilElementName",
    "MultiCoilElementUsed", "MRReceiveCoilSequence", "MRTransmitCoilSequence",
    # sequences and protocols
    "SequenceName", "PulseSequenceName", "ProtocolName", "ScanOptions", "AcquisitionProtocolName",
    "AcquisitionProtocolDescription", "PerformedProtocolCodeSequence",
    "ProtocolContextSequence", "PerformedProcedureStepDescription",
    # field strength and its relatives
    "MagneticFieldStrength", "ImagingFrequency", "TransmitterFrequency", "SpectrometerFrequency",
    "ResonantNucleus",
)  # fmt: skip
#: File-meta elements that name the writing equipment.
META_REMOVED = (
    "SourceApplicationEntityTitle",
    "SendingApplicationEntityTitle",
    "ReceivingApplicationEntityTitle",
    "PrivateInformationCreatorUID",
    "PrivateInformation",
)
#: Neutral root of every regenerated UID (pydicom's; documented in docs/serving.md).
UID_ROOT = "1.2.826.0.1.3680043.8.498."
IMPLEMENTATION_VERSION = "GECO_TF"
STANDARD_UID_ROOT = "1.2.840.10008."
#: UIDs kept as they are: DICOM's own (SOP classes, transfer syntaxes) and HL7's coding schemes.
KEPT_UID_ROOTS = (STANDARD_UID_ROOT, "2.16.840.1.113883.")
#: Vendor and product words that must not survive in any text value (matched as whole words).
VENDOR_WORDS = (
    "SIEMENS", "SIEMENS HEALTHINEERS", "GE", "GEMS", "GE MEDICAL SYSTEMS", "GE HEALTHCARE",
    "GENESIS", "SIGNA", "DISCOVERY", "OPTIMA", "BRAVO", "PHILIPS", "INGENIA", "ACHIEVA",
    "INTERA", "PANORAMA", "GYROSCAN", "TOSHIBA", "CANON", "VANTAGE", "TITAN", "ORIAN",
    "HITACHI", "FUJIFILM", "ECHELON", "OASIS", "AIRIS", "FONAR", "ESAOTE", "UIH",
    "UNITED IMAGING", "NEUSOFT", "MINDRAY", "MAGNETOM", "SKYRA", "PRISMA", "VERIO", "TRIO",
    "TRIOTIM", "AVANTO", "AERA", "ESPREE", "SYMPHONY", "SONATA", "ESSENZA", "VIDA", "SOLA",
    "SYNGO", "BIOGRAPH", "ALLEGRA", "SPECTRA", "CONNECTOM", "MEDSPEC", "BRUKER",
)  # fmt: skip
_VENDOR_RE = re.compile(r"(?<![A-Z0-9])(" + "|".join(sorted(map(re.escape, VENDOR_WORDS), key=len, reverse=True))
                        + r")(?![A-Z0-9])", re.IGNORECASE)  # fmt: skip
_FIELD_RE = re.compile(r"(?<![A-Z0-9.])(0?\.[0-9]+|[0-9]{1,2}(\.[0-9]+)?)\s?T(ESLA)?(?![A-Z0-9])", re.IGNORECASE)
_TEXT_VRS = {"LO", "SH", "ST", "LT", "UT", "UC", "CS", "AE", "PN", "UR"}
#: ImageType values 3+ kept (the rest, e.g. Siemens "NORM\\DIS2D" or Philips "FFE", name products).
STANDARD_IMAGE_TYPE = {"M", "P", "R", "I", "MAGNITUDE", "PHASE", "REAL", "IMAGINARY", "MIXED", "NONE", "OTHER"}
#: Vendor UID roots, for the checks in tests and docs (any non-standard UID is replaced anyway).
VENDOR_UID_ROOTS = {
    "1.3.12.2.1107": "Siemens",
    "1.2.840.113619": "GE",
    "1.2.840.113654": "GE",
    "1.2.840.113663": "GE",
    "1.3.46.670589": "Philips",
    "1.2.840.113704": "Philips",
    "1.2.392.200036.9116": "Toshiba/Canon",
    "1.2.392.200036.9123": "Hitachi",
    "1.2.392.200036.9125": "Fujifilm",
    "1.2.156.112605": "United Imaging",
}


def uid_mapper(key: str) -> Callable[[str], str]:
    """A map old UID -> new UID under :data:`UID_ROOT`, the same for the same ``key``.

    The new UID is a keyed SHA-256 of the old one, so it is stable across series, processes
    (Beam workers) and resumed runs that share ``key``, and the old UID cannot be read back.
    """

    def new_uid(old: str) -> str:
        digest = hashlib.sha256(f"{key}\x00{str(old).strip()}".encode()).digest()
        number = str(int.from_bytes(digest[:16], "big"))  # 128 bits: 39 digits at most
        return (UID_ROOT + number)[:64]

    return new_uid


def _is_text(element: Any) -> bool:
    return element.VR in _TEXT_VRS


def _scrub_text(value: Any) -> Any:
    """``value`` ('' for a leaking string; lists element-wise) with vendor words and field strengths gone."""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return [_scrub_text(v) for v in value]
    text = str(value) if value is not None else ""
    if _VENDOR_RE.search(text) or _FIELD_RE.search(text) or any(root + "." in text for root in VENDOR_UID_ROOTS):
        return ""
    return value


def strip_vendor_tags(ds: Any, map_uid: Callable[[str], str]) -> None:
    """Remove everything that tells manufacturer or field strength from ``ds`` (in place).

    See the module docstring for the list. ``map_uid`` is :func:`uid_mapper`'s map.
    """
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID

    ds.remove_private_tags()  # recursive (walks sequences)

    def sweep(dataset: Any, element: Any) -> None:
        keyword = element.keyword
        if keyword in REMOVED:
            del dataset[element.tag]
        elif keyword in BLANKED:
            element.value = ""
        elif element.VR == "UI" and element.value:
            values = element.value if element.VM > 1 else [element.value]
            mapped = [v if str(v).startswith(KEPT_UID_ROOTS) else map_uid(str(v)) for v in values]
            element.value = mapped if element.VM > 1 else mapped[0]
        elif _is_text(element) and element.value not in (None, ""):
            element.value = _scrub_text(element.value)

    ds.walk(sweep, recursive=True)
    for keyword in BLANKED:
        if keyword not in ds:
            setattr(ds, keyword, "")
    if "ImageType" in ds:
        values = [str(v) for v in ds.ImageType]
        ds.ImageType = values[:2] + [v for v in values[2:3] if v.upper() in STANDARD_IMAGE_TYPE]
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        for keyword in META_REMOVED:
            if keyword in meta:
                del meta[keyword]
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        meta.ImplementationVersionName = IMPLEMENTATION_VERSION
        if "SOPInstanceUID" in ds:
            meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        if "SOPClassUID" in ds:
            meta.MediaStorageSOPClassUID = ds.SOPClassUID


def leaks(ds: Any) -> list[str]:
    """What in ``ds`` (sequences and file meta included) still tells the scanner: private tags,
    elements of :data:`REMOVED`, a non-empty Manufacturer, a vendor UID root, a vendor word or a
    field strength in a text value. Empty when :func:`strip_vendor_tags` did its job."""
    found: list[str] = []

    def check(_dataset: Any, element: Any) -> None:
        name = element.keyword or str(element.tag)
        if element.tag.is_private:
            found.append(f"private tag {element.tag}")
        elif element.keyword in REMOVED:
            found.append(name)
        elif element.keyword in BLANKED and element.value:
            found.append(f"{name}={element.value}")
        elif element.VR == "UI" and element.value:
            values = element.value if element.VM > 1 else [element.value]
            for value in values:
                for root, vendor in VENDOR_UID_ROOTS.items():
                    if str(value).startswith(root + "."):
                        found.append(f"{name}: {vendor} UID root")
        elif _is_text(element) and element.value not in (None, ""):
            if _scrub_text(element.value) != element.value:
                found.append(f"{name}={element.value}")

    ds.walk(check, recursive=True)
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        meta.walk(check, recursive=True)
    return found
