"""``geco-tf deartifact``: NIfTI and DICOM round trips keep geometry, headers and pixel
representation; slices reach the generator in the training layout (axial LPS); unreadable inputs
are reported and skipped."""

from __future__ import annotations

import csv
import gzip
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")
pydicom = pytest.importorskip("pydicom")
nib = pytest.importorskip("nibabel")

from fake_run import make_random_run  # noqa: E402
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid  # noqa: E402

from geco_tf.errors import UserError  # noqa: E402
from geco_tf.export.deartifact import Summary, deartifact_nifti, deartifact_path, plan, run_jobs  # noqa: E402
from geco_tf.export.dicom_writer import VENDOR_TAGS, deartifact_series  # noqa: E402
from geco_tf.export.vendor_tags import leaks  # noqa: E402

VENDOR = {
    "Manufacturer": "SIEMENS",
    "ManufacturerModelName": "Skyra",
    "DeviceSerialNumber": "45678",
    "SoftwareVersions": "syngo MR E11",
    "StationName": "MRC40001",
    "InstitutionName": "General Hospital",
}
#: Top-level elements a derived series may change (besides private tags and vendor tags when stripped).
DERIVED_CHANGES = {
    "PixelData",
    "SOPInstanceUID",
    "SeriesInstanceUID",
    "ImageType",
    "DerivationDescription",
    "SourceImageSequence",
    "SeriesDescription",
    "SmallestImagePixelValue",
    "LargestImagePixelValue",
}
#: What --strip-vendor-tags changes besides: vendor elements, private tags and non-standard UIDs.
STRIPPED = set(VENDOR_TAGS) | {
    "private",
    "StudyInstanceUID",
    "FrameOfReferenceUID",
    "InstanceCreatorUID",
    "ReferencedImageSequence",  # its UIDs go through the same map
}
GEOMETRY = (
    "Rows",
    "Columns",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
    "SliceThickness",
    "FrameOfReferenceUID",
    "StudyInstanceUID",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "RescaleSlope",
    "RescaleIntercept",
)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A fake run directory holding a small random U-Net (``fake_run.make_random_run``)."""
    return make_random_run(tmp_path_factory.mktemp("run") / "run")


@pytest.fixture(scope="module")
def model_fn(run_dir):
    from geco_tf.export.load import load_deartifactor

    return load_deartifactor(run_dir)[0]


class Recorder:
    """A stand-in model: identity (or ``fn``), remembering every batch it was given."""

    def __init__(self, fn=None) -> None:
        self.fn = fn
        self.batches: list[np.ndarray] = []

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.batches.append(np.array(batch))
        return self.fn(batch) if self.fn else np.array(batch)

    @property
    def slices(self) -> np.ndarray:
        return np.concatenate(self.batches)[..., 0]


# --------------------------------------------------------------------------------------------
# DICOM


def write_series(folder: Path, n: int = 20, rows: int = 32, cols: int = 24, value=None) -> list[Path]:
    """A sagittal MR series written with pydicom: columns run anterior->posterior, rows
    superior->inferior, slices right->left; int16 with 12 bits stored, rescale, vendor and
    private tags. ``value(x, y, z)`` (LPS mm) gives the stored pixel values."""
    folder.mkdir(parents=True, exist_ok=True)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    row_dir, col_dir = np.array([0.0, 1.0, 0.0]), np.array([0.0, 0.0, -1.0])
    normal = np.cross(row_dir, col_dir)
    origin = np.array([-30.0, -12.0, 40.0])
    rng = np.random.default_rng(5)
    paths = []
    for k in range(n):
        position = origin + 3.0 * k * normal
        ii, jj = np.mgrid[:rows, :cols]
        pos = position[:, None, None] + jj * row_dir[:, None, None] + ii * col_dir[:, None, None]
        if value is None:
            pixels = (
                200 + rng.gamma(2.0, 40.0, (rows, cols)) + 1200 * (((ii - rows / 2) ** 2 + (jj - cols / 2) ** 2) < 60)
            )
        else:
            pixels = value(*pos)
        pixels = np.clip(np.rint(pixels), -2048, 2047).astype(np.int16)
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.Modality, ds.PatientName, ds.PatientID = "MR", "Test^Patient", "P001"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
        ds.SeriesDescription, ds.SeriesNumber, ds.InstanceNumber = "t1_sag", 3, k + 1
        for keyword, text in VENDOR.items():
            setattr(ds, keyword, text)
        ds.ImagePositionPatient = [float(v) for v in position]
        ds.ImageOrientationPatient = [*map(float, row_dir), *map(float, col_dir)]
        ds.PixelSpacing, ds.SliceThickness = [1.0, 1.0], 3.0
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = rows, cols
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 1
        ds.RescaleSlope, ds.RescaleIntercept = 2.0, -100.0
        ds.SmallestImagePixelValue, ds.LargestImagePixelValue = int(pixels.min()), int(pixels.max())
        ds["SmallestImagePixelValue"].VR = ds["LargestImagePixelValue"].VR = "SS"
        ds.private_block(0x0009, "ACME SCANNER 1.0", create=True).add_new(0x01, "LO", "vendor recon v7")
        ds.PixelData = pixels.tobytes()
        path = folder / f"IM{k:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def changed_keywords(a: Dataset, b: Dataset) -> set[str]:
    """Top-level elements that differ between two datasets (private ones as 'private')."""
    changed = set()
    for tag in set(a.keys()) | set(b.keys()):
        if tag in a and tag in b and a[tag].value == b[tag].value:
            continue
        changed.add("private" if tag.is_private else pydicom.datadict.keyword_for_tag(tag) or str(tag))
    return changed


@pytest.mark.parametrize("strip", [False, True])
def test_dicom_series_round_trip(model_fn, tmp_path, strip):
    files = write_series(tmp_path / "in")
    images, mode, _ = deartifact_series(model_fn, files, tmp_path / "out", strip_vendor_tags=strip, model_name="run")
    assert (images, mode) == (20, "axial")
    originals = [pydicom.dcmread(p) for p in files]
    outputs = [pydicom.dcmread(tmp_path / "out" / p.name) for p in files]
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]  # atomic: no temporaries
    series_uids = {o.SeriesInstanceUID for o in outputs}
    assert len(series_uids) == 1 and originals[0].SeriesInstanceUID not in series_uids
    sops = {o.SOPInstanceUID for o in outputs}
    assert len(sops) == 20 and not sops & {o.SOPInstanceUID for o in originals}
    allowed = DERIVED_CHANGES | (STRIPPED if strip else set())
    for original, out in zip(originals, outputs):
        assert changed_keywords(original, out) <= allowed
        for keyword in GEOMETRY:
            if not (strip and keyword.endswith("UID")):
                assert original[keyword].value == out[keyword].value, keyword
        assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
        assert out.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert out.file_meta.ImplementationVersionName == "GECO_TF"  # written by us, either way
        assert list(out.ImageType) == ["DERIVED", "SECONDARY", "M"] + ([] if strip else ["ND"])
        assert "GECO" in out.DerivationDescription and out.SeriesDescription == "t1_sag GECO"
        if strip:  # no pointer back to the original (its UID may carry the vendor's root)
            assert "SourceImageSequence" not in out and leaks(out) == []
            assert out.StudyInstanceUID != original.StudyInstanceUID
        else:
            assert out.SourceImageSequence[0].ReferencedSOPInstanceUID == original.SOPInstanceUID
        pixels = out.pixel_array
        assert pixels.dtype == np.int16 and -2048 <= pixels.min() and pixels.max() <= 2047
        assert (out.SmallestImagePixelValue, out.LargestImagePixelValue) == (pixels.min(), pixels.max())
        if strip:
            assert all(out.get(k) in ("", None) for k in VENDOR_TAGS)
            assert not any(tag.is_private for tag in out.keys())
        else:
            assert all(out[k].value == original[k].value for k in VENDOR)
            assert out.get_private_item(0x0009, 0x01, "ACME SCANNER 1.0").value == "vendor recon v7"
    change = np.abs(
        np.stack([o.pixel_array for o in outputs]).astype(int) - np.stack([o.pixel_array for o in originals])
    )
    assert change.max() > 5  # the generator changed the pixels


def test_dicom_stack_reaches_the_model_as_axial_lps_and_comes_back(tmp_path):
    """A sagittal series is re-sliced (no interpolation) into axial LPS slices -- rows anterior
    to posterior, columns right to left, slices inferior to superior -- and put back exactly."""
    files = write_series(tmp_path / "in", value=lambda x, y, z: 100 + 3 * (x + 30) + 5 * (y + 12) + 7 * (z - 8))
    recorder = Recorder()
    images, mode, _ = deartifact_series(recorder, files, tmp_path / "out")
    assert mode == "axial" and images == 20
    axial = recorder.slices  # [S, P, L]
    assert axial.shape == (32, 24, 20)
    assert (np.diff(axial, axis=2) > 0).all()  # columns run toward patient left (+x)
    assert (np.diff(axial, axis=1) > 0).all()  # rows run toward posterior (+y)
    assert (np.diff(axial, axis=0) > 0).all()  # slices run toward superior (+z)
    for path in files:
        original, out = pydicom.dcmread(path), pydicom.dcmread(tmp_path / "out" / path.name)
        np.testing.assert_array_equal(out.pixel_array, original.pixel_array)


REAL_PYDICOM = [
    "MR_small.dcm",
    "MR_small_RLE.dcm",
    "MR_small_bigendian.dcm",
    "MR_small_implicit.dcm",
    "MR_small_jp2klossless.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "MR_small_padded.dcm",
]


def test_real_pydicom_files_every_transfer_syntax(model_fn, tmp_path):
    """pydicom's MR_small in seven encodings: each becomes a readable derived image with the same
    geometry and transfer syntax (JPEG-LS has no encoder here: Explicit VR Little Endian), and
    all seven hold the same de-artifacted pixels."""
    from pydicom.data import get_testdata_file

    results = {}
    for name in REAL_PYDICOM:
        src = Path(get_testdata_file(name))
        jobs, skipped = plan(src, tmp_path / name.replace(".dcm", ""), strip_vendor_tags=True)
        assert len(jobs) == 1 and not skipped
        summary = run_jobs(model_fn, jobs)
        assert len(summary.done) == 1, summary.skipped
        original = pydicom.dcmread(src)
        out = pydicom.dcmread(tmp_path / name.replace(".dcm", "") / name)
        expected_syntax = ExplicitVRLittleEndian if "jpeg_ls" in name else original.file_meta.TransferSyntaxUID
        assert out.file_meta.TransferSyntaxUID == expected_syntax
        assert changed_keywords(original, out) <= DERIVED_CHANGES | STRIPPED
        assert out.Manufacturer == "" and original.Manufacturer == "TOSHIBA_MEC"
        for keyword in ("Rows", "Columns", "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
            assert original[keyword].value == out[keyword].value
        results[name] = out.pixel_array.astype(np.int32)
        assert results[name].dtype == np.int32 and out.pixel_array.dtype.kind == "i"
    reference = results["MR_small.dcm"]
    assert np.abs(reference - pydicom.dcmread(get_testdata_file("MR_small.dcm")).pixel_array).max() > 5
    for name, pixels in results.items():
        np.testing.assert_array_equal(pixels, reference, err_msg=name)


def test_real_nibabel_mosaic_files_and_truncated_file_skipped(model_fn, tmp_path):
    """nibabel's two Siemens DICOM files (one series) with --strip-vendor-tags, next to pydicom's
    truncated file, which is reported and skipped without stopping the rest."""
    from pydicom.data import get_testdata_file

    data = Path(nib.__file__).parent / "tests" / "data"
    src = tmp_path / "in"
    (src / "siemens").mkdir(parents=True)
    (src / "broken").mkdir()
    for name in ("0.dcm", "1.dcm"):
        shutil.copy(data / name, src / "siemens" / name)
    shutil.copy(get_testdata_file("MR_truncated.dcm"), src / "broken" / "MR_truncated.dcm")
    (src / "notes.txt").write_text("ignored")
    (src / "broken" / "garbage.bin").write_bytes(os.urandom(600))
    summary = deartifact_path(model_fn, src, tmp_path / "out", strip_vendor_tags=True)
    assert len(summary.done) == 1 and summary.done[0].images == 2
    reasons = dict(summary.skipped)
    assert any("MR_truncated.dcm" in r and "pixel data" in r for r in reasons.values())
    assert reasons[str(src / "broken" / "garbage.bin")] == "not a DICOM or NIfTI file"
    with open(tmp_path / "out" / "skipped.csv") as f:
        assert len(list(csv.DictReader(f))) == 2
    for name in ("0.dcm", "1.dcm"):
        original, out = pydicom.dcmread(src / "siemens" / name), pydicom.dcmread(tmp_path / "out" / "siemens" / name)
        assert original.Manufacturer == "SIEMENS" and out.Manufacturer == ""
        assert not any(tag.is_private for tag in out.keys())
        assert changed_keywords(original, out) <= DERIVED_CHANGES | STRIPPED
        for keyword in ("Rows", "Columns", "ImagePositionPatient", "ImageOrientationPatient", "BitsStored"):
            assert original[keyword].value == out[keyword].value
        assert out.pixel_array.dtype == np.uint16 and out.pixel_array.max() <= 4095
        assert np.abs(out.pixel_array.astype(int) - original.pixel_array).max() > 5


# --------------------------------------------------------------------------------------------
# NIfTI


def write_nifti(path: Path, shape=(40, 20, 36), scaled: bool = True) -> Path:
    """An int16 volume whose array axes run P, I, R (not RAS: re-slicing is needed), with slope/intercept."""
    rng = np.random.default_rng(7)
    zz, yy, xx = np.mgrid[: shape[0], : shape[1], : shape[2]]
    data = 50 + rng.gamma(2.0, 30.0, shape) + 800 * (((zz - 20) ** 2 + (yy - 10) ** 2 + (xx - 18) ** 2) < 80)
    affine = np.array([[0.0, 0.0, 1.1, -20.0], [-0.9, 0.0, 0.0, 30.0], [0.0, -1.2, 0.0, 25.0], [0, 0, 0, 1]])
    image = nib.Nifti1Image(np.rint(data).astype(np.int16), affine)
    image.header["descrip"] = b"test volume"
    if scaled:
        image.header.set_slope_inter(0.5, 10.0)
        image = nib.Nifti1Image(np.rint((data - 10) / 0.5).astype(np.int16), affine, image.header)
        image.header.set_slope_inter(0.5, 10.0)
    nib.save(image, path)
    return path


def header_bytes(path: Path) -> bytes:
    raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    return raw[:348]


def test_nifti_round_trip_keeps_header_affine_dtype(model_fn, tmp_path):
    src = write_nifti(tmp_path / "t1.nii.gz")
    dst = tmp_path / "out" / "t1_geco.nii.gz"
    count, mode, _ = deartifact_nifti(model_fn, src, dst)
    assert mode == "axial" and count == 20  # axial slices: along the file's second axis (I, 20 voxels)
    a, b = nib.load(src), nib.load(dst)
    assert header_bytes(src) == header_bytes(dst)  # byte for byte, scaling included
    np.testing.assert_array_equal(a.affine, b.affine)
    assert b.get_data_dtype() == np.int16 and b.shape == a.shape
    assert (b.dataobj.slope, b.dataobj.inter) == (0.5, 10.0)
    stored = np.asanyarray(b.dataobj.get_unscaled())
    assert stored.dtype == np.int16 and np.abs(b.get_fdata() - a.get_fdata()).max() > 5


def test_nifti_slices_are_the_training_layout_and_come_back_exactly(tmp_path):
    """The model sees exactly the axial slices that preprocessing would put in a dataset
    (geco_tf.data.nifti.load_axial), and an identity model gives the file back unchanged."""
    load_axial = pytest.importorskip("geco_tf.data.nifti").load_axial
    src = write_nifti(tmp_path / "t1.nii")
    recorder = Recorder()
    deartifact_nifti(recorder, src, tmp_path / "same.nii")
    expected, _ = load_axial(src)
    np.testing.assert_allclose(recorder.slices, expected, rtol=1e-6)
    np.testing.assert_array_equal(
        nib.load(tmp_path / "same.nii").dataobj.get_unscaled(), nib.load(src).dataobj.get_unscaled()
    )


def test_nifti_float_4d_and_thin_volumes(tmp_path):
    """Float data stays float; 4-D goes volume by volume; a one-voxel-thick sagittal volume has
    no axial plane and is processed in its own plane."""
    data = np.random.default_rng(1).gamma(2.0, 100.0, (24, 20, 18, 2)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "4d.nii.gz")
    recorder = Recorder(lambda b: b * 2.0)
    count, mode, notes = deartifact_nifti(recorder, tmp_path / "4d.nii.gz", tmp_path / "4d_out.nii.gz")
    assert (count, mode) == (36, "axial") and notes == ["2 volumes"]
    out = nib.load(tmp_path / "4d_out.nii.gz")
    assert out.get_data_dtype() == np.float32
    np.testing.assert_allclose(out.get_fdata(), data * 2.0, rtol=1e-6)

    thin = np.random.default_rng(2).integers(0, 1000, (1, 40, 32)).astype(np.uint16)
    nib.save(nib.Nifti1Image(thin, np.eye(4)), tmp_path / "thin.nii")
    recorder = Recorder()
    count, mode, _ = deartifact_nifti(recorder, tmp_path / "thin.nii", tmp_path / "thin_out.nii")
    assert (count, mode) == (1, "native") and recorder.slices.shape == (1, 40, 32)
    np.testing.assert_array_equal(nib.load(tmp_path / "thin_out.nii").get_fdata(), thin)


def test_integer_output_is_rounded_and_clipped_to_the_type_range(tmp_path):
    data = np.full((20, 20, 3), 200, np.uint8)
    data[5:15, 5:15] = 50
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "u8.nii")
    deartifact_nifti(lambda b: b * 3.0 - 400.0, tmp_path / "u8.nii", tmp_path / "u8_out.nii")
    out = np.asanyarray(nib.load(tmp_path / "u8_out.nii").dataobj)
    assert out.dtype == np.uint8 and set(np.unique(out)) == {0, 200}


# --------------------------------------------------------------------------------------------
# command line


@pytest.mark.slow
def test_cli_directory_with_saved_model_and_progress(run_dir, tmp_path):
    from click.testing import CliRunner
    from geco_tf_cli.main import cli

    from geco_tf.export.saved_model import export_saved_model

    base = tmp_path / "serving"
    export_saved_model(run_dir, base)
    src = tmp_path / "in"
    (src / "a").mkdir(parents=True)
    write_nifti(src / "a" / "t1.nii.gz")
    write_series(src / "b" / "series", n=18)
    (src / "c").mkdir()
    (src / "c" / "broken.nii.gz").write_bytes(b"not a nifti at all")
    result = CliRunner().invoke(cli, ["deartifact", "--model", str(base), str(src), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "de-artifacting" in result.output and "SavedModel" in result.output
    assert "skipped" in result.output and "broken.nii.gz" in result.output
    assert (tmp_path / "out" / "a" / "t1.nii.gz").is_file()
    assert len(list((tmp_path / "out" / "b" / "series").glob("*.dcm"))) == 18
    hidden = sorted(p.name for p in (tmp_path / "out").rglob(".*"))  # completion markers only, no temporaries
    assert len(hidden) == 2 and all(name.endswith(".done") for name in hidden), hidden

    # The SavedModel route and the Keras route give the same volume.
    keras_out = tmp_path / "keras.nii.gz"
    again = CliRunner().invoke(
        cli, ["deartifact", "--model", str(run_dir), str(src / "a" / "t1.nii.gz"), "--out", str(keras_out)]
    )
    assert again.exit_code == 0, again.output
    diff = nib.load(keras_out).get_fdata() - nib.load(tmp_path / "out" / "a" / "t1.nii.gz").get_fdata()
    assert np.abs(diff).max() <= 0.5  # one stored unit (slope 0.5) at most, from rounding


def test_cli_user_errors_are_one_line(run_dir, tmp_path):
    from click.testing import CliRunner
    from geco_tf_cli.main import cli

    (tmp_path / "bad.nii.gz").write_bytes(b"junk")
    runner = CliRunner()
    bad = runner.invoke(
        cli, ["deartifact", "--model", str(run_dir), str(tmp_path / "bad.nii.gz"), "--out", str(tmp_path / "o.nii.gz")]
    )
    assert bad.exit_code == 2 and "bad.nii.gz" in bad.output and "Traceback" not in bad.output
    missing = runner.invoke(
        cli,
        [
            "deartifact",
            "--model",
            str(tmp_path / "nomodel"),
            str(tmp_path / "bad.nii.gz"),
            "--out",
            str(tmp_path / "o.nii.gz"),
        ],
    )
    assert missing.exit_code == 2 and "nomodel" in missing.output
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no NIfTI"):
        deartifact_path(run_dir, tmp_path / "empty", tmp_path / "o")
    with pytest.raises(UserError, match="input directory"):
        plan(tmp_path / "empty", tmp_path / "empty")
    assert Summary().done == []
