"""DICOM volumes: pixel decoding on real files, geometry against dcm2niix, robustness checks.

Geometry: series written with pydicom (template: pydicom's real ``MR_small.dcm``) in axial,
sagittal, coronal and oblique planes, plus a real Philips Achieva enhanced multi-frame header,
are converted by us and by the ``dcm2niix`` executable (a test dependency: a missing one fails,
never skips). dcm2niix's volume is resampled (nearest neighbour, in patient space) onto our axial
grid and must agree voxel for voxel.
"""

from __future__ import annotations

import glob
import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pydicom.data
import pytest
import SimpleITK as sitk
from dicom_series import philips_enhanced, write_series

from geco_tf.data import dicom as D
from geco_tf.data.nifti import load_axial

OUTSIDE = -31337.0


def _dcm2niix() -> str:
    import dcm2niix

    exe = getattr(dcm2niix, "bin", None) or shutil.which("dcm2niix")
    assert exe, "dcm2niix executable not found: install the test extra (pip install -e '.[test]')"
    return str(exe)


def dcm2niix_volume(series_dir, tmp_path) -> tuple[sitk.Image, str]:
    """The reference conversion: dcm2niix's NIfTI (Philips display scaling, as DICOM defines it)."""
    out = tmp_path / "dcm2niix"
    out.mkdir()
    proc = subprocess.run(
        [_dcm2niix(), "-z", "n", "-b", "n", "-p", "n", "-f", "ref", "-o", str(out), str(series_dir)],
        capture_output=True, text=True, timeout=120,
    )
    files = glob.glob(str(out / "*.nii"))
    assert proc.returncode == 0 and len(files) == 1, proc.stdout + proc.stderr
    return sitk.ReadImage(files[0], sitk.sitkFloat32), files[0]


def assert_matches_reference(ours: sitk.Image, reference: sitk.Image) -> None:
    resampled = sitk.Resample(reference, ours, sitk.Transform(), sitk.sitkNearestNeighbor, OUTSIDE, sitk.sitkFloat32)
    a = sitk.GetArrayFromImage(ours)
    b = sitk.GetArrayFromImage(resampled)
    assert not np.any(b == OUTSIDE), "our volume covers space outside dcm2niix's volume"
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-4)
    assert np.prod(ours.GetSize()) == np.prod(reference.GetSize())


def assert_axial(image: sitk.Image) -> None:
    direction = np.array(image.GetDirection()).reshape(3, 3)
    # array axes x, y, z point to patient L, P, S (within the obliquity of the acquisition)
    assert np.argmax(np.abs(direction[:, 0])) == 0 and direction[0, 0] > 0
    assert np.argmax(np.abs(direction[:, 1])) == 1 and direction[1, 1] > 0
    assert np.argmax(np.abs(direction[:, 2])) == 2 and direction[2, 2] > 0


@pytest.mark.parametrize("orientation", ["axial", "sagittal", "coronal", "oblique"])
def test_geometry_matches_dcm2niix(orientation, tmp_path):
    series = write_series(tmp_path / "series", orientation, shape=(18, 36, 44), nested=orientation == "coronal",
                          seed=["axial", "sagittal", "coronal", "oblique"].index(orientation))
    ours = D.build_series_volume(series["files"])
    assert ours.decoder == "SimpleITK"
    assert_axial(ours.image)
    reference, nifti_path = dcm2niix_volume(tmp_path / "series", tmp_path)
    assert_matches_reference(ours.image, reference)
    # the pydicom decoder path builds the same image, geometry included
    fallback = D.build_series_volume(series["files"], decoder="pydicom")
    assert fallback.decoder == "pydicom"
    assert_matches_reference(fallback.image, reference)
    # NIfTI input is put in the same axial layout: identical array, no resampling
    nifti_array, _ = load_axial(nifti_path)
    np.testing.assert_array_equal(nifti_array, sitk.GetArrayFromImage(ours.image))


def test_geometry_detects_a_flipped_slice_order(tmp_path):
    """The comparison can fail: a series whose positions run the wrong way must not match."""
    series = write_series(tmp_path / "series", "sagittal", shape=(20, 32, 32))
    reference, _ = dcm2niix_volume(tmp_path / "series", tmp_path)
    ours = D.build_series_volume(series["files"]).image
    flipped = sitk.Flip(ours, [True, False, False], flipAboutOrigin=False)
    flipped.CopyInformation(ours)
    with pytest.raises(AssertionError):
        assert_matches_reference(flipped, reference)


def test_enhanced_multiframe_real_philips_header_matches_dcm2niix(tmp_path):
    folder = tmp_path / "enhanced"
    folder.mkdir()
    pixels = philips_enhanced(folder / "IM_0001", frames=32, size=80)
    ours = D.build_series_volume([str(folder / "IM_0001")])
    assert ours.decoder == "pydicom"
    assert ours.labels["manufacturer"] == "Philips" and ours.labels["field_strength"] == "3T"
    assert_axial(ours.image)
    reference, _ = dcm2niix_volume(folder, tmp_path)
    assert_matches_reference(ours.image, reference)
    assert np.isclose(sitk.GetArrayFromImage(ours.image).sum(), pixels.sum() * 2.1079365079365, rtol=1e-5)


MR_SMALL_VARIANTS = [
    "MR_small_RLE.dcm",
    "MR_small_jp2klossless.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "MR_small_bigendian.dcm",
    "MR_small_expb.dcm",
    "MR_small_implicit.dcm",
    "MR_small_padded.dcm",
]


@pytest.mark.parametrize("name", MR_SMALL_VARIANTS)
def test_mr_small_transfer_syntaxes_decode_identically(name):
    reference = pydicom.dcmread(pydicom.data.get_testdata_file("MR_small.dcm")).pixel_array.astype(np.float32)
    path = pydicom.data.get_testdata_file(name)
    for decoder in ("sitk", "pydicom"):
        volume = D.build_series_volume([path], decoder=decoder, require_labels=False)
        array = sitk.GetArrayFromImage(volume.image)
        assert array.shape == (1, 64, 64)
        np.testing.assert_array_equal(array[0], reference)


def test_real_compressed_files_decode_through_pydicom_plugins():
    get = pydicom.data.get_testdata_file
    lossless, _ = D.read_pixels_pydicom([get("MR2_J2KR.dcm")], (1024, 1024))  # Philips, JPEG 2000 lossless
    raw, _ = D.read_pixels_pydicom([get("MR2_UNCR.dcm")], (1024, 1024))
    np.testing.assert_array_equal(lossless, raw)
    assert raw.std() > 10
    jpeg_lossless, failed = D.read_pixels_pydicom([get("JPGLosslessP14SV1_1s_1f_8b.dcm")], (768, 1024))
    assert not failed and jpeg_lossless.std() > 1  # JPEG lossless, process 14
    frames = D.decode_frames(pydicom.dcmread(get("emri_small.dcm")))
    assert frames.shape == (10, 64, 64)
    for name in ("emri_small_RLE.dcm", "emri_small_big_endian.dcm", "emri_small_jpeg_2k_lossless.dcm",
                 "emri_small_jpeg_ls_lossless.dcm"):
        np.testing.assert_array_equal(D.decode_frames(pydicom.dcmread(get(name))), frames)


def test_enhanced_compressed_frames_with_geometry(tmp_path):
    """Real enhanced MR pixels (emri_small, JPEG-LS) given per-frame geometry become a volume."""
    get = pydicom.data.get_testdata_file
    reference = D.decode_frames(pydicom.dcmread(get("emri_small.dcm")))
    ds = pydicom.dcmread(get("emri_small_jpeg_ls_lossless.dcm"))
    with pytest.raises(D.SeriesRejected, match="functional groups"):
        D.enhanced_frames(ds)
    shared = pydicom.Dataset()
    shared.PlaneOrientationSequence = [pydicom.Dataset()]
    shared.PlaneOrientationSequence[0].ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    shared.PixelMeasuresSequence = [pydicom.Dataset()]
    shared.PixelMeasuresSequence[0].PixelSpacing = [0.8, 0.8]
    ds.SharedFunctionalGroupsSequence = [shared]
    per_frame = []
    for k in range(10):  # frames stored superior to inferior: we must sort them back
        item = pydicom.Dataset()
        item.PlanePositionSequence = [pydicom.Dataset()]
        item.PlanePositionSequence[0].ImagePositionPatient = [0, 0, 12.0 - 1.2 * k]
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = per_frame
    ds.Manufacturer, ds.MagneticFieldStrength = "Philips Medical Systems", 3
    ds.save_as(tmp_path / "emri.dcm")
    volume = D.build_series_volume([str(tmp_path / "emri.dcm")])
    np.testing.assert_array_equal(sitk.GetArrayFromImage(volume.image), reference[::-1].astype(np.float32))
    assert volume.image.GetSpacing() == pytest.approx((0.8, 0.8, 1.2))


def test_rescale_slope_per_slice_is_applied_by_both_decoders(tmp_path):
    slopes = [{"RescaleSlope": f"{1 + 0.25 * k:g}", "RescaleIntercept": "-5"} for k in range(8)]
    series = write_series(tmp_path / "s", shape=(8, 32, 32), per_slice=slopes)
    expected = series["volume"].astype(np.float32) * np.array([1 + 0.25 * k for k in range(8)])[:, None, None] - 5
    for decoder in ("sitk", "pydicom"):
        array = sitk.GetArrayFromImage(D.build_series_volume(series["files"], decoder=decoder).image)
        np.testing.assert_allclose(array, expected, rtol=1e-6)


def test_four_d_series_keeps_first_volume(tmp_path):
    first = write_series(tmp_path / "s", shape=(10, 32, 32), seed=1, extra={"TemporalPositionIdentifier": 1})
    write_series(tmp_path / "s", shape=(10, 32, 32), seed=2,
                 extra={"TemporalPositionIdentifier": 2, "SeriesInstanceUID": first["series_uid"]})
    volume = D.build_series_volume(sorted(glob.glob(str(tmp_path / "s" / "*"))))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(volume.image), first["volume"])
    assert volume.notes == ["4-D series: 2 volumes, the first kept"]


def test_duplicate_instances_are_dropped_not_fatal(tmp_path):
    series = write_series(tmp_path / "s", shape=(10, 32, 32))
    copy = tmp_path / "s" / "copy_of_one"
    shutil.copy(series["files"][3], copy)
    volume = D.build_series_volume(series["files"] + [str(copy)])
    np.testing.assert_array_equal(sitk.GetArrayFromImage(volume.image), series["volume"])
    assert len(volume.file_skips) == 1 and "duplicate instance" in volume.file_skips[0][1]


@pytest.mark.parametrize(
    "kwargs, reason",
    [
        ({"skip_slices": (5,)}, "uneven slice spacing"),
        ({"manufacturer": None}, "missing Manufacturer"),
        ({"field_strength": None}, "MagneticFieldStrength"),
        ({"extra": {"ImageType": ["ORIGINAL", "PRIMARY", "LOCALIZER"]}}, "localiser"),
        ({"extra": {"Modality": "CT"}}, "not MR"),
        ({"shape": (1, 40, 40), "orientation": "sagittal"}, "too thin"),
    ],
)
def test_series_refused_with_reason(tmp_path, kwargs, reason):
    kwargs = {"shape": (10, 32, 32), **kwargs}
    series = write_series(tmp_path / "s", **kwargs)
    with pytest.raises(D.SeriesRejected, match=reason):
        D.build_series_volume(series["files"])


def test_mixed_orientations_and_truncated_pixels_are_refused(tmp_path):
    a = write_series(tmp_path / "loc", "axial", shape=(3, 32, 32))
    write_series(tmp_path / "loc", "sagittal", shape=(3, 32, 32), extra={"SeriesInstanceUID": a["series_uid"]})
    with pytest.raises(D.SeriesRejected, match="mixed slice orientations"):
        D.build_series_volume(sorted(glob.glob(str(tmp_path / "loc" / "*"))))
    truncated = pydicom.data.get_testdata_file("MR_truncated.dcm")  # real file, cut short
    with pytest.raises(D.SeriesRejected, match="no usable image") as info:
        D.build_series_volume([truncated], require_labels=False)
    assert info.value.file_skips and "cut short" in info.value.file_skips[0][1]
    # one file of a series cut in transfer: listed, and the hole it leaves refuses the series
    series = write_series(tmp_path / "cut", shape=(10, 32, 32))
    middle = sorted(series["files"], key=lambda f: pydicom.dcmread(f, stop_before_pixels=True).InstanceNumber)[4]
    data = Path(middle).read_bytes()
    Path(middle).write_bytes(data[:-700])
    with pytest.raises(D.SeriesRejected, match="uneven slice spacing") as info:
        D.build_series_volume(series["files"])
    assert info.value.file_skips == [(middle, "truncated file: pixel data cut short (1348 of 2048 bytes)")]


def test_nifti_4d_keeps_first_volume_and_any_orientation(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.normal(size=(20, 24, 16, 3)).astype(np.float32)  # i, j, k, t
    affine = np.array([[0, 0, -2.0, 10], [-1.0, 0, 0, 20], [0, 1.5, 0, -5], [0, 0, 0, 1]])  # PIR-like storage
    nib.save(nib.Nifti1Image(data, affine), tmp_path / "v.nii.gz")
    array, notes = load_axial(tmp_path / "v.nii.gz")
    assert notes == ["4-D volume: 3 volumes, the first kept"]
    # the same data as SimpleITK sees it, reoriented by ITK: independent of nibabel's tools
    ref = sitk.ReadImage(str(tmp_path / "v.nii.gz"))
    first = sitk.Extract(ref, [*ref.GetSize()[:3], 0], [0, 0, 0, 0])
    np.testing.assert_array_equal(array, sitk.GetArrayFromImage(D.reorient_axial(first)))


def test_discovery_follows_folder_links_once_and_groups_by_series_uid(tmp_path):
    a = write_series(tmp_path / "store" / "one", shape=(4, 32, 32), nested=True)
    b = write_series(tmp_path / "store" / "two", shape=(3, 32, 32), study_uid=a["study_uid"])
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "linked").symlink_to(tmp_path / "store")
    (tmp_path / "store" / "loop").symlink_to(tmp_path / "store")  # a link cycle must not hang the walk
    (tmp_path / "store" / ".hidden").write_text("ignored")
    found = D.discover_series(tmp_path / "in")
    assert {uid: len(s.files) for uid, s in found.series.items()} == {a["series_uid"]: 4, b["series_uid"]: 3}
    assert found.n_files == 7 and not found.skipped
    assert {"Doe^Jane", "19700101", "ACC12345", "PID-0001"} <= found.identifiers
