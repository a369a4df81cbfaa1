"""NIfTI edge cases in preprocess: a float volume with a NaN background (SPM/FSL-masked images)
gives finite slices with the background at -1; a sagittal slab too thin for axial slices is
skipped with the DICOM path's reason."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np

from geco_tf.data.dataset import open_dataset
from geco_tf.data.pipeline import slice_records
from geco_tf.data.preprocess import preprocess


def test_nan_background_never_spreads_and_thin_slabs_are_skipped(tmp_path):
    rng = np.random.default_rng(0)
    i, j, k = np.meshgrid(np.linspace(-1, 1, 28), np.linspace(-1, 1, 28), np.linspace(-1, 1, 8), indexing="ij")
    brain = (i / 0.8) ** 2 + (j / 0.8) ** 2 < 1.0
    masked = np.where(brain, rng.uniform(100, 900, brain.shape), np.nan).astype(np.float32)
    masked[14, 14, 4] = np.inf  # one hot voxel inside, too
    nib.save(nib.Nifti1Image(masked, np.eye(4)), tmp_path / "masked.nii")
    slab = rng.uniform(100, 900, (3, 40, 40)).astype(np.float32)  # 3 voxels left-right: sagittal slab
    nib.save(nib.Nifti1Image(slab, np.eye(4)), tmp_path / "slab.nii")
    other = np.zeros((28, 28, 8), np.float32)
    other[4:24, 4:24] = rng.uniform(100, 900, (20, 20, 8))
    nib.save(nib.Nifti1Image(other, np.eye(4)), tmp_path / "other.nii")
    (tmp_path / "labels.csv").write_text(
        "path,subject,manufacturer,field_strength,modality\n"
        "masked.nii,s1,GE,3,T1\nslab.nii,s2,Siemens,3,T1\nother.nii,s3,Siemens,1.5,T1\n"
    )
    log: list[str] = []
    summary = preprocess(tmp_path / "out", nifti_csv=tmp_path / "labels.csv", size=32, log=log.append)
    assert summary.written.n_series_ok == 2
    skipped = (tmp_path / "out" / "skipped.csv").read_text()
    assert "slab.nii,series of 1 file(s): after reorientation to axial the slices are 40x3 voxels: too thin" in skipped
    assert any("non-finite voxels (NaN or infinity) set to the volume's background (1 series)" in m for m in log)
    data = open_dataset(tmp_path / "out")
    assert data.info["made_by"]["non_finite_series"] == 1
    masked_rows = {int(r["slice_id"]) for r in data.manifest if r["manufacturer"] == "GE Medical Systems"}
    assert len(masked_rows) == 8
    images = {}
    for split in ("train", "val", "test"):
        for record in slice_records(data, split):
            images[int(record["slice_id"])] = record["image"].numpy()[..., 0]
    assert len(images) == len(data.manifest) == 16
    for slice_id in masked_rows:
        image = images[slice_id]
        assert np.isfinite(image).all()
        assert (image == -1.0).mean() > 0.15  # the NaN background came out as background
        assert image.max() == 1.0  # and the brain was scaled over finite values, not flattened
    assert json.loads((tmp_path / "out" / "dataset.json").read_text())["n_slices"] == 16
