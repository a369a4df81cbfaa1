"""Labels and pseudonyms: normalisation tables, real headers from pydicom and nibabel, scrubbing."""

from __future__ import annotations

import gzip

import pydicom
import pydicom.data
import pytest
from dicom_series import nibabel_data

from geco_tf.data import labels as L
from geco_tf.data import privacy as P
from geco_tf.data.dicom import SeriesRejected, series_labels
from geco_tf.errors import UserError


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("SIEMENS", "Siemens"),
        ("Siemens Healthineers", "Siemens"),
        ("SIEMENS AG ", "Siemens"),
        ("GE MEDICAL SYSTEMS", "GE Medical Systems"),
        ("GE Healthcare", "GE Medical Systems"),
        ("GE_MEDICAL_SYSTEMS", "GE Medical Systems"),
        ("Philips Medical Systems", "Philips"),
        ("Philips Healthcare", "Philips"),
        ("PHILIPS", "Philips"),
        ("IMAGING BIOMETRICS", "Imaging Biometrics"),
        ("Imaging Biometrics, LLC", "Imaging Biometrics"),
        ("TOSHIBA_MEC", "Toshiba MEC"),
        ("  Canon   Medical Systems ", "Canon Medical Systems"),
        ("", None),
        (None, None),
    ],
)
def test_manufacturer_normalisation(raw, expected):
    assert L.normalise_manufacturer(raw) == expected


@pytest.mark.parametrize(
    "raw, expected",
    [(1.494, "1.5T"), ("1.5", "1.5T"), (1.6, "1.5T"), ("3", "3T"), ("2.89", "3T"), ("3T", "3T"), (15000, "1.5T"),
     (30000, "3T"), (1.0, None), (0.35, None), (7, None), ("", None), (None, None), ("abc", None)],
)
def test_field_strength_buckets(raw, expected):
    assert L.field_strength_label(raw) == expected


@pytest.mark.parametrize(
    "description, expected",
    [
        ("AX T1 PRE", "T1 PRE"),
        ("t1_mprage_sag", "T1 PRE"),
        ("AX T1 POST GD", "T1 POST"),
        ("T1+C AX", "T1 POST"),
        ("t1_se_tra_KM post", "T1 POST"),
        ("T2 AX FSE", "T2"),
        ("t2_tse_tra", "T2"),
        ("AX FLAIR", "FLAIR"),
        ("T2 FLAIR", "T2 FLAIR"),
        ("t2_tirm_tra_dark-fluid", "T2 FLAIR"),
        ("ep2d_diff_3scan_trace", "OTHER"),
        ("ADC", "OTHER"),
        ("perfusion DSC", "OTHER"),
        ("TOF_3D_multi-slab", "OTHER"),
    ],
)
def test_modality_from_description(description, expected):
    assert L.classify_modality(description=description) == expected


def test_modality_falls_back_to_contrast_agent_and_timing():
    assert L.classify_modality(description="AX 3D", contrast_agent="Gadovist", repetition_time=8, echo_time=3) == "T1 POST"
    assert L.classify_modality(description="AX 3D", repetition_time=500, echo_time=12) == "T1 PRE"
    assert L.classify_modality(description="AX", repetition_time=4000, echo_time=100) == "T2"
    assert L.classify_modality(description="AX", repetition_time=9000, echo_time=120, inversion_time=2500) == "FLAIR"
    assert L.classify_modality(acquisition_contrast="T1") == "T1 PRE"
    assert L.classify_modality() == "OTHER"


def _pydicom_file(name: str) -> pydicom.Dataset:
    return pydicom.dcmread(pydicom.data.get_testdata_file(name), stop_before_pixels=True)


def test_labels_of_real_scanner_headers():
    """Files no one here wrote: Siemens Avanto 1.5T (stored 1.494), Siemens TrioTim and Prisma 3T,
    Philips Achieva 3T (enhanced MR), Philips T5 1.5T, Toshiba (no field strength)."""
    avanto = series_labels(_pydicom_file("MR-SIEMENS-DICOM-WithOverlays.dcm"))
    assert avanto["manufacturer"] == "Siemens" and avanto["field_strength"] == "1.5T"
    assert avanto["field_strength_tesla"] == pytest.approx(1.494, abs=1e-3)
    trio = series_labels(pydicom.dcmread(nibabel_data("0.dcm"), stop_before_pixels=True))
    assert (trio["manufacturer"], trio["field_strength"], trio["modality"]) == ("Siemens", "3T", "OTHER")  # DTI b0
    prisma = series_labels(pydicom.dcmread(nibabel_data("slicethickness_empty_string.dcm"), stop_before_pixels=True))
    assert (prisma["manufacturer"], prisma["field_strength"], prisma["modality"]) == ("Siemens", "3T", "OTHER")  # TOF
    achieva = series_labels(pydicom.dcmread(gzip.open(nibabel_data("philips_mprage.dcm.gz")), stop_before_pixels=True))
    assert (achieva["manufacturer"], achieva["field_strength"], achieva["modality"]) == ("Philips", "3T", "T1 PRE")
    t5 = series_labels(_pydicom_file("MR2_UNCR.dcm"))
    assert (t5["manufacturer"], t5["field_strength"], t5["modality"]) == ("Philips", "1.5T", "T1 PRE")  # T1W/SE
    toshiba = _pydicom_file("MR_small.dcm")
    assert L.normalise_manufacturer(toshiba.Manufacturer) == "Toshiba MEC"
    assert L.modality_from_header(toshiba) == "T2"  # spin echo, TR 4000, TE 240
    with pytest.raises(SeriesRejected, match="MagneticFieldStrength"):
        series_labels(toshiba)
    emri = _pydicom_file("emri_small.dcm")  # enhanced MR, no Manufacturer
    with pytest.raises(SeriesRejected, match="Manufacturer"):
        series_labels(emri)
    assert L.modality_from_header(emri) == "T1 PRE"  # Acquisition Contrast T1, pulse sequence T1TFE


def test_pseudonyms_are_keyed_and_stable(tmp_path):
    out = tmp_path / "data"
    key, created = P.load_or_create_key(tmp_path / "data.key", out)
    again, created_again = P.load_or_create_key(tmp_path / "data.key", out)
    assert created and not created_again and key == again
    assert (tmp_path / "data.key").stat().st_mode & 0o077 == 0
    other, _ = P.load_or_create_key(tmp_path / "other.key", out)
    a = P.pseudonym(key, "PID-1", "sub")
    assert a == P.pseudonym(key, "PID-1", "sub") != P.pseudonym(other, "PID-1", "sub")
    assert a.startswith("sub-") and "PID" not in a
    with pytest.raises(UserError, match="outside the dataset"):
        P.load_or_create_key(out / "inside.key", out)


def test_scrubber_removes_uids_names_and_dates(tmp_path):
    scrub = P.Scrubber(tmp_path)
    scrub.add(["Doe^Jane Mary", "19700101", "ACC-77", None, ""])
    text = f"{tmp_path}/JANE_DOE/1.2.840.113619.2.55.3.604688119/IM1 jane doe 1970-01-01 ACC-77 ok 1.5T T2"
    cleaned = scrub.scrub(text)
    for secret in ("Jane", "JANE", "Doe", "1.2.840", "19700101", "1970-01-01", "ACC-77", str(tmp_path)):
        assert secret not in cleaned, (secret, cleaned)
    assert cleaned.endswith("ok 1.5T T2") and cleaned.startswith("[redacted]_[redacted]/[redacted]/IM1")
    # a name made of ordinary words redacts them in paths, not in messages
    scrub.add(["R3.2.2 Enhanced Dicom Phantom"])
    assert scrub.scrub("not a DICOM file", parts=False) == "not a DICOM file"
    assert scrub.scrub("phantom/x.dcm") == "[redacted]/x.dcm"
    assert scrub.scrub("R3.2.2 Enhanced Dicom Phantom", parts=False) == "[redacted]"
