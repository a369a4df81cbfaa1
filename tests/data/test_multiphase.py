"""Multiphase 4-D DICOM series are read, keeping the first temporal position.

Scanners that record slice timing give every image of a phase its own AcquisitionTime and
TriggerTime, so those tags no longer group the images of one phase; the phase is the
TemporalPositionIdentifier. GE fMRI series tell their volumes apart by InstanceNumber alone."""

from __future__ import annotations

import glob

import numpy as np
import pytest
import SimpleITK as sitk
from dicom_series import phantom, write_series

from geco_tf.data import dicom as D

POSITIONS, PHASES = 8, 4


def _multiphase(folder, slice_timing: bool = True, drop: tuple[tuple[int, int], ...] = ()) -> list[np.ndarray]:
    """A series of PHASES temporal positions x POSITIONS slices; with ``slice_timing`` every image
    carries its own AcquisitionTime and TriggerTime. ``drop``: (phase, slice) images left out."""
    volumes, uid = [], None
    for phase in range(1, PHASES + 1):
        volume = phantom((POSITIONS, 24, 24), seed=10 * phase)
        per_slice = [
            {
                "TemporalPositionIdentifier": phase,
                "NumberOfTemporalPositions": PHASES,
                **({"AcquisitionTime": f"1200{phase:02d}.{k * 125:06d}", "TriggerTime": f"{(phase - 1) * 2000 + k * 250:g}"}
                   if slice_timing else {"AcquisitionTime": f"1200{phase:02d}", "TriggerTime": f"{(phase - 1) * 2000:g}"}),
            }
            for k in range(POSITIONS)
        ]
        series = write_series(folder, shape=volume.shape, volume=volume, seed=phase, per_slice=per_slice,
                              skip_slices=tuple(k for p, k in drop if p == phase),
                              extra={"SeriesInstanceUID": uid} if uid else None)
        uid = uid or series["series_uid"]
        volumes.append(volume)
    return volumes


@pytest.mark.parametrize("slice_timing", [True, False])
def test_multiphase_keeps_the_first_temporal_position(tmp_path, slice_timing):
    volumes = _multiphase(tmp_path / "s", slice_timing=slice_timing)
    files = sorted(glob.glob(str(tmp_path / "s" / "*")))
    assert len(files) == POSITIONS * PHASES
    volume = D.build_series_volume(files)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(volume.image), volumes[0])
    assert volume.notes == [f"4-D series: {PHASES} volumes, the first kept"]
    assert volume.file_skips == []


def test_missing_image_in_a_phase_is_refused_with_a_message_that_holds(tmp_path):
    _multiphase(tmp_path / "s", drop=((3, 2),))
    with pytest.raises(D.SeriesRejected) as info:
        D.build_series_volume(sorted(glob.glob(str(tmp_path / "s" / "*"))))
    assert str(info.value) == f"4-D series with unequal volumes ({PHASES - 1} to {PHASES} images per position): missing slices?"


def test_volumes_told_apart_by_instance_number_only(tmp_path):
    # GE fMRI: no temporal tags, one acquisition time; InstanceNumber runs over volumes x slices
    first = phantom((POSITIONS, 24, 24), seed=1)
    second = phantom((POSITIONS, 24, 24), seed=2)
    a = write_series(tmp_path / "s", volume=first, shape=first.shape)
    write_series(tmp_path / "s", volume=second, shape=second.shape, extra={"SeriesInstanceUID": a["series_uid"]},
                 per_slice=[{"InstanceNumber": POSITIONS + k + 1} for k in range(POSITIONS)])
    volume = D.build_series_volume(sorted(glob.glob(str(tmp_path / "s" / "*"))))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(volume.image), first)
    assert volume.notes == ["4-D series: 2 volumes (told apart by InstanceNumber), the first kept"]
    assert volume.file_skips == []  # not reported as duplicates
