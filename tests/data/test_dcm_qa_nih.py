"""Real scanner DICOM: every GE series of dcm_qa_nih held to dcm2niix's reference NIfTI.

The data (public GE and Siemens fMRI series from the NIH, with dcm2niix's conversions in
``Ref/``) is read in place from ``../shared/data/dcm_qa_nih`` beside the checkout; it is never
copied into the repository. The GE series are 4-D (15 slices x 10 volumes told apart by
InstanceNumber only): our axial volume must equal the reference's first volume, voxel for voxel,
and its geometry (voxel -> patient mm) must match the reference's affine. The Siemens series are
mosaics (2 volumes of 5 tiled slices): de-mosaicked, they are held to the reference the same way.
"""

from __future__ import annotations

import glob
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from nibabel.orientations import axcodes2ornt, io_orientation, ornt_transform

from geco_tf.data import dicom as D

ROOT = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "dcm_qa_nih"
pytestmark = [
    pytest.mark.skipif(not (ROOT / "In").is_dir(), reason=f"dcm_qa_nih not found at {ROOT} (shared data absent)"),
]
GE_SERIES = (4, 5, 6, 7)  # In/20180918GE/mr_000N <-> Ref/DCM2NIIX_regression_test_N.nii
#: In/20180918Si/mr_000N <-> Ref/EPI_PE=<direction>_N.nii
SIEMENS_SERIES = ((3, "AP"), (4, "PA"), (5, "RL"), (6, "LR"))


def _files(folder: Path) -> list[str]:
    return sorted(glob.glob(str(folder / "*.dcm")))


def _lps_affine(image: sitk.Image) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3] = np.array(image.GetDirection()).reshape(3, 3) * np.array(image.GetSpacing())
    affine[:3, 3] = image.GetOrigin()
    return affine


@pytest.mark.slow  # 150 files read from the shared folder: about 1-3 s per series
@pytest.mark.parametrize("number", GE_SERIES)
def test_ge_series_equal_dcm2niix_first_volume(number):
    ours = D.build_series_volume(_files(ROOT / "In" / "20180918GE" / f"mr_{number:04d}"))
    assert ours.labels["manufacturer"] == "GE Medical Systems" and ours.labels["field_strength"] == "3T"
    assert ours.notes == ["4-D series: 10 volumes (told apart by InstanceNumber), the first kept"]
    reference = nib.load(str(ROOT / "Ref" / f"DCM2NIIX_regression_test_{number}.nii"))
    assert reference.shape == (64, 64, 15, 10)
    first = reference.slicer[..., 0]
    first = first.as_reoriented(ornt_transform(io_orientation(first.affine), axcodes2ornt(("L", "P", "S"))))
    expected = np.asarray(first.get_fdata(), dtype=np.float32).transpose(2, 1, 0)  # [z, y, x] like ours
    array = sitk.GetArrayFromImage(ours.image)
    assert array.shape == expected.shape == (15, 64, 64)
    np.testing.assert_array_equal(array, expected)
    # geometry: the same voxel -> patient (LPS mm) mapping; NIfTI's affine is RAS
    reference_lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ first.affine
    np.testing.assert_allclose(_lps_affine(ours.image), reference_lps, atol=1e-3)


@pytest.mark.parametrize("number,direction", SIEMENS_SERIES)
def test_siemens_mosaics_are_demosaicked_like_dcm2niix(number, direction):
    folder = ROOT / "In" / "20180918Si" / f"mr_{number:04d}"
    ours = D.build_series_volume(_files(folder))  # two mosaic files: two volumes of 5 slices
    assert ours.labels["manufacturer"] == "Siemens" and ours.labels["field_strength"] == "3T"
    assert ours.notes == ["Siemens mosaic de-mosaicked (5 slices)", "4-D series: 2 volumes, the first kept"]
    reference = nib.load(str(ROOT / "Ref" / f"EPI_PE={direction}_{number}.nii"))
    assert reference.shape == (72, 72, 5, 2)
    first = reference.slicer[..., 0]
    first = first.as_reoriented(ornt_transform(io_orientation(first.affine), axcodes2ornt(("L", "P", "S"))))
    expected = np.asarray(first.get_fdata(), dtype=np.float32).transpose(2, 1, 0)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(ours.image), expected)
    reference_lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ first.affine
    np.testing.assert_allclose(_lps_affine(ours.image), reference_lps, atol=1e-3)


def test_a_mosaic_that_cannot_be_demosaicked_is_skipped_with_its_reason(tmp_path):
    import pydicom

    ds = pydicom.dcmread(_files(ROOT / "In" / "20180918Si" / "mr_0003")[0])
    for tag in [t for t in ds.keys() if t.group == 0x0029]:  # the Siemens CSA headers
        del ds[tag]
    ds.save_as(tmp_path / "mosaic.dcm")
    with pytest.raises(D.SeriesRejected, match="Siemens mosaic .* cannot be de-mosaicked"):
        D.build_series_volume([str(tmp_path / "mosaic.dcm")])
