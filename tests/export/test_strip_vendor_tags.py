"""Issue 33, item 6: with ``--strip-vendor-tags`` no output element tells manufacturer or field strength.

The check is a walk of every element of every output file (nested sequences and the file meta
included) written here, independently of :func:`geco_tf.export.vendor_tags.leaks`: no vendor or
model name (the inputs' own Manufacturer / ManufacturerModelName values among them), no vendor
UID root, no private tag, no field-strength element. Inputs: a two-series study built with
pydicom carrying every vendor element we know of, pydicom's and nibabel's real vendor files,
and real GE and Siemens series of ``/work/shared/data/dcm_qa_nih`` read in place.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
pytest.importorskip("tensorflow")

from dicom_series import philips_enhanced, write_series  # noqa: E402
from pydicom.dataset import Dataset  # noqa: E402

from geco_tf.export.deartifact import UID_KEY_FILE, deartifact_path  # noqa: E402
from geco_tf.export.vendor_tags import UID_ROOT, leaks  # noqa: E402

QA = Path(os.environ.get("GECO_DCM_QA_NIH", "/work/shared/data/dcm_qa_nih")) / "In"
VENDOR_NAMES = {"SIEMENS", "GE", "GEMS", "GE MEDICAL SYSTEMS", "PHILIPS", "TOSHIBA", "CANON", "HITACHI", "SKYRA"}
VENDOR_ROOTS = ("1.3.12.2.1107", "1.2.840.113619", "1.3.46.670589", "1.2.392.200036.9116", "1.2.840.113704")
FIELD_STRENGTH = {"MagneticFieldStrength", "ImagingFrequency", "TransmitterFrequency", "SpectrometerFrequency"}
SIEMENS_STUDY = "1.3.12.2.1107.5.2.43.66016.30000024010112345678900000001"
SIEMENS_FRAME = "1.3.12.2.1107.5.2.43.66016.1.20240101120000000.0.0.0"


def fake_model(batch: np.ndarray) -> np.ndarray:
    """A stand-in for the generator in scanner units: changes every pixel, keeps it finite."""
    return np.asarray(batch, dtype=np.float32) * 0.9 + 3.0


def digest_tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def walk_all(path: Path) -> list[tuple[str, object, str]]:
    """(keyword or tag, value, VR) of every element of a file: dataset, nested sequences, file meta."""
    ds = pydicom.dcmread(path)
    found = []

    def visit(dataset) -> None:
        for element in dataset:
            found.append((element.keyword or str(element.tag), element.value, element.VR, element.tag.is_private))
            if element.VR == "SQ":
                for item in element.value:
                    visit(item)

    visit(ds.file_meta)
    visit(ds)
    return found


def vendor_problems(path: Path, names: set[str]) -> list[str]:
    """Everything in ``path`` that tells the scanner (empty = clean)."""
    patterns = [re.compile(rf"(?<![A-Z0-9]){re.escape(n.upper())}(?![A-Z0-9])") for n in names if n.strip()]
    problems = []
    for keyword, value, vr, private in walk_all(path):
        if private:
            problems.append(f"private tag {keyword}")
            continue
        if keyword in FIELD_STRENGTH:
            problems.append(f"field-strength element {keyword}")
        if vr in ("OB", "OW", "OF", "OD", "OL", "OV", "UN", "SQ") or value is None:
            continue
        values = list(value) if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue" else [value]
        for v in values:
            text = str(v).upper()
            problems += [f"{keyword}={v!s} (vendor root {r})" for r in VENDOR_ROOTS if r + "." in text or text == r]
            problems += [f"{keyword}={v!s} (names {p.pattern})" for p in patterns if p.search(text)]
    return problems


def names_in(paths: list[Path]) -> set[str]:
    """The inputs' own manufacturer and model names, with the fixed vendor list."""
    names = set(VENDOR_NAMES)
    for path in paths:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        for keyword in ("Manufacturer", "ManufacturerModelName", "StationName", "SoftwareVersions"):
            if ds.get(keyword):
                names.add(str(ds.get(keyword)).upper())
    return names


def vendor_study(root: Path) -> list[Path]:
    """Two series of one Siemens study (one frame of reference, Siemens UID roots), every vendor
    element we know of, nested references with vendor UIDs, a vendor file meta."""
    extra = {
        "ManufacturerModelName": "Skyra",
        "StationName": "AWP66016",
        "DeviceSerialNumber": "66016",
        "SoftwareVersions": "syngo MR E11",
        "InstitutionName": "Example Hospital",
        "InstitutionAddress": "1 Street",
        "ReceiveCoilName": "HeadNeck_20",
        "TransmitCoilName": "Body",
        "SequenceName": "*tfl3d1_16ns",
        "ProtocolName": "t1_mprage_sag_p2_iso",
        "ScanOptions": "IR",
        "ImagingFrequency": 123.2,
        "ImagedNucleus": "1H",
        "FrameOfReferenceUID": SIEMENS_FRAME,
        "StudyDescription": "Head^Neuro SIEMENS 3T",
    }
    files = []
    for k, description in enumerate(("t1_mprage", "t2_tse")):
        info = write_series(
            root / f"series{k}", shape=(6, 24, 20), seed=k, study_uid=SIEMENS_STUDY, description=description,
            manufacturer="SIEMENS", field_strength=3.0, extra=extra,
        )  # fmt: skip
        for i, name in enumerate(info["files"]):
            ds = pydicom.dcmread(name)
            ref = Dataset()
            ref.ReferencedSOPClassUID = ds.SOPClassUID
            ref.ReferencedSOPInstanceUID = f"1.3.12.2.1107.5.2.43.66016.2024010112{k}{i:03d}"
            ds.ReferencedImageSequence = [ref]
            equipment = Dataset()
            equipment.Manufacturer = "SIEMENS"
            equipment.ManufacturerModelName = "Skyra"
            ds.ContributingEquipmentSequence = [equipment]
            ds.private_block(0x0029, "SIEMENS CSA HEADER", create=True).add_new(0x10, "OB", b"SV10\x04\x03\x02\x01")
            ds.file_meta.ImplementationClassUID = "1.3.12.2.1107.5.2"
            ds.file_meta.ImplementationVersionName = "MR_VE11C"
            ds.file_meta.SourceApplicationEntityTitle = "AWP66016"
            ds.save_as(name, enforce_file_format=True)
            files.append(Path(name))
    return files


def outputs(out: Path) -> list[Path]:
    return sorted(p for p in out.rglob("*") if p.is_file() and not p.name.startswith(".") and p.suffix != ".csv")


def test_built_study_is_clean_consistent_and_resumable(tmp_path):
    src = tmp_path / "in"
    files = vendor_study(src)
    before = digest_tree(src)
    names = names_in(files)
    assert any(vendor_problems(p, names) for p in files)  # the check sees what the inputs leak
    summary = deartifact_path(fake_model, src, tmp_path / "out", strip_vendor_tags=True)
    assert len(summary.done) == 2 and not summary.skipped
    written = outputs(tmp_path / "out")
    assert len(written) == 12
    for path in written:
        assert vendor_problems(path, names) == [], path
        assert leaks(pydicom.dcmread(path)) == []
    datasets = [pydicom.dcmread(p) for p in written]
    # One new study and one new frame of reference for both series; new series and SOP UIDs.
    assert len({ds.StudyInstanceUID for ds in datasets}) == 1
    assert len({ds.FrameOfReferenceUID for ds in datasets}) == 1
    assert len({ds.SeriesInstanceUID for ds in datasets}) == 2
    assert len({ds.SOPInstanceUID for ds in datasets}) == 12
    for ds in datasets:
        for uid in (ds.StudyInstanceUID, ds.FrameOfReferenceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID):
            assert uid.startswith(UID_ROOT) and len(uid) <= 64
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.file_meta.ImplementationClassUID.startswith(UID_ROOT)
        assert ds.file_meta.ImplementationVersionName == "GECO_TF"
        assert ds.Manufacturer == "" and "Manufacturer" in ds  # type 2: present, empty
        assert ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID.startswith(UID_ROOT)
        assert ds.ImagedNucleus == "1H" and "SourceImageSequence" not in ds
    assert digest_tree(src) == before  # originals untouched
    # A rerun into a new output with the kept key maps every UID the same way.
    key_copy = tmp_path / "again"
    key_copy.mkdir()
    shutil.copy(tmp_path / "out" / UID_KEY_FILE, key_copy / UID_KEY_FILE)
    deartifact_path(fake_model, src, key_copy, strip_vendor_tags=True)
    again = [pydicom.dcmread(p) for p in outputs(key_copy)]
    assert [ds.SOPInstanceUID for ds in again] == [ds.SOPInstanceUID for ds in datasets]
    assert {ds.StudyInstanceUID for ds in again} == {datasets[0].StudyInstanceUID}
    # Without stripping the study and frame of reference stay the originals'.
    plain = deartifact_path(fake_model, src, tmp_path / "plain")
    assert len(plain.done) == 2
    kept = pydicom.dcmread(outputs(tmp_path / "plain")[0])
    assert kept.StudyInstanceUID == SIEMENS_STUDY and kept.Manufacturer == "SIEMENS"


def test_real_vendor_files_pydicom_and_nibabel(tmp_path):
    """Toshiba (pydicom's MR_small in several encodings), Siemens (nibabel's two files) and a
    Philips Achieva enhanced multi-frame header (nibabel's, with known pixels)."""
    import nibabel
    from pydicom.data import get_testdata_file

    src = tmp_path / "in"
    (src / "toshiba").mkdir(parents=True)
    (src / "siemens").mkdir()
    for name in ("MR_small.dcm", "MR_small_RLE.dcm", "MR_small_bigendian.dcm", "MR_small_implicit.dcm"):
        (src / "toshiba" / name[:-4]).mkdir()  # one folder each: they share a Series Instance UID
        shutil.copy(get_testdata_file(name), src / "toshiba" / name[:-4] / name)
    data = Path(nibabel.__file__).parent / "tests" / "data"
    for name in ("0.dcm", "1.dcm"):
        shutil.copy(data / name, src / "siemens" / name)
    (src / "philips").mkdir()
    philips_enhanced(src / "philips" / "IM_0001.dcm", frames=4, size=32)
    files = [p for p in src.rglob("*.dcm")]
    names = names_in(files)
    assert {"TOSHIBA_MEC", "SIEMENS", "PHILIPS MEDICAL SYSTEMS"} <= names
    assert all(vendor_problems(p, names) for p in files)  # every input leaks
    summary = deartifact_path(fake_model, src, tmp_path / "out", strip_vendor_tags=True)
    assert len(summary.done) == 6 and not summary.skipped
    written = outputs(tmp_path / "out")
    assert len(written) == 7
    for path in written:
        assert vendor_problems(path, names) == [], path


@pytest.mark.slow
@pytest.mark.skipif(not QA.is_dir(), reason="dcm_qa_nih not available")
def test_real_ge_and_siemens_series_from_dcm_qa_nih(tmp_path):
    """30 images of a GE EPI series and two Siemens mosaic series of one study, read in place
    (through symlinks in a scratch folder; nothing is copied or written there)."""
    src = tmp_path / "in"
    chosen = [QA / "20180918GE" / "mr_0004", QA / "20180918Si" / "mr_0003", QA / "20180918Si" / "mr_0004"]
    originals = {}
    for folder in chosen:
        link_dir = src / f"{folder.parent.name}_{folder.name}"
        link_dir.mkdir(parents=True)
        for path in sorted(folder.glob("*.dcm"))[:30]:
            (link_dir / path.name).symlink_to(path)
            originals[path] = hashlib.sha256(path.read_bytes()).hexdigest()
    names = names_in(list(originals))
    assert {"GE MEDICAL SYSTEMS", "SIEMENS", "SKYRA"} <= names
    assert all(vendor_problems(p, names) for p in originals)  # every input leaks
    summary = deartifact_path(fake_model, src, tmp_path / "out", strip_vendor_tags=True)
    assert len(summary.done) == 3 and not summary.skipped, summary.skipped
    written = outputs(tmp_path / "out")
    assert len(written) == len(originals)
    problems = {str(p): vendor_problems(p, names) for p in written}
    assert not any(problems.values()), {k: v for k, v in problems.items() if v}
    siemens = [pydicom.dcmread(p) for p in written if "Si_" in str(p)]
    assert len({ds.StudyInstanceUID for ds in siemens}) == 1  # one study before, one after
    assert len({ds.SeriesInstanceUID for ds in siemens}) == 2
    assert {hashlib.sha256(p.read_bytes()).hexdigest() for p in originals} and all(
        hashlib.sha256(p.read_bytes()).hexdigest() == h for p, h in originals.items()
    )


def test_uid_map_is_keyed_valid_and_keeps_standard_uids():
    from pydicom.uid import UID, MRImageStorage

    from geco_tf.export.vendor_tags import strip_vendor_tags, uid_mapper

    a, b = uid_mapper("key-a"), uid_mapper("key-b")
    old = "1.2.840.113619.2.408.5282380.4562341.27283.1537222031.331"
    assert a(old) == a(old) != b(old) and a(old) != a(old + "1")
    assert UID(a(old)).is_valid and a(old).startswith(UID_ROOT) and len(a(old)) <= 64
    ds = Dataset()
    ds.SOPClassUID, ds.StudyInstanceUID = MRImageStorage, old
    ds.StudyDescription, ds.SeriesDescription, ds.ImagedNucleus = "Brain 1.5T", "Ax T1 BRAVO", "1H"
    ds.ImageComments = "acquired on a 3 Tesla Signa"
    ds.BodyPartExamined = "HEAD"
    strip_vendor_tags(ds, a)
    assert ds.SOPClassUID == MRImageStorage and ds.StudyInstanceUID == a(old)
    assert (ds.StudyDescription, ds.SeriesDescription, ds.ImageComments) == ("", "", "")
    assert (ds.ImagedNucleus, ds.BodyPartExamined, ds.Manufacturer) == ("1H", "HEAD", "")
