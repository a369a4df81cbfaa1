"""Slices through a de-artifacting model, in the layout the generator was trained on.

Shared by the NIfTI writer (:mod:`geco_tf.export.nifti_writer`) and the DICOM writer
(:mod:`geco_tf.export.dicom_writer`), so neither has to import the other or the orchestration
in :mod:`geco_tf.export.deartifact`.

Slices go through the generator in the layout it was trained on: the volume is permuted and
flipped (no interpolation) to axial LPS, array ``[slice, row, column]`` running
inferior->superior, anterior->posterior, right->left, exactly as ``geco_tf.data.nifti`` and
``geco_tf.data.dicom`` build the training slices; the result is put back in the file's own
orientation. A volume whose axial plane would be thinner than :data:`MIN_AXIAL_SIDE` pixels
cannot give axial slices; it is processed in its own acquisition plane instead (``"native"``).

**Non-finite voxels never spread.** The model's per-image scaling (minimum and 99.5th
percentile) is poisoned by a single NaN, which would turn a whole slice NaN. NaN and +-inf
voxels are therefore replaced by the volume's background -- the minimum of its finite voxels,
the value that MR background (air) has after masking, as in preprocessing
(:func:`geco_tf.data.intensity.fill_non_finite`) -- before the model runs, and the same
background value is written at those voxels afterwards. A float NIfTI with a NaN background
(SPM/FSL masked images) thus keeps every finite voxel finite and comes out with a finite
background; a volume with no finite voxel at all is skipped.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from geco_tf.data.intensity import fill_non_finite

#: Training layout of slices (letters: where array axes x, y, z point to).
AXIAL_CODES = ("L", "P", "S")
#: Narrower axial planes than this give no usable axial slices (same rule as preprocessing).
MIN_AXIAL_SIDE = 16
DEFAULT_BATCH = 4

Deartifactor = Callable[[np.ndarray], np.ndarray]


class InputSkipped(Exception):
    """An input that cannot be de-artifacted; ``str(exc)`` is the one-line reason."""


def fill_background(values: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, float]:
    """``values`` with NaN/inf set to the volume's background, the convention of
    :func:`geco_tf.data.intensity.fill_non_finite` (the lowest finite value), and where they were.

    Returns ``(filled float32 array, mask of replaced voxels or None, background)``. Raises
    :class:`InputSkipped` when no voxel is finite.
    """
    values = np.asarray(values, dtype=np.float32)
    bad = ~np.isfinite(values)
    if not bad.any():
        return values, None, 0.0
    if bad.all():
        raise InputSkipped("no finite voxel (all NaN or infinite)")
    filled, _ = fill_non_finite(values)
    return filled, bad, float(filled[bad].flat[0])


def run_slices(fn: Deartifactor, slices: np.ndarray, batch_size: int = DEFAULT_BATCH) -> np.ndarray:
    """``slices`` [N, H, W] raw -> [N, H, W] float32 raw, ``batch_size`` slices per call.

    Non-finite input voxels are replaced by the background (minimum finite value of all
    ``slices``) before the model runs and come out as that background (module docstring).
    """
    slices, mask, background = fill_background(slices)
    out = np.empty_like(slices)
    for start in range(0, len(slices), batch_size):
        batch = slices[start : start + batch_size, :, :, None]
        out[start : start + batch_size] = np.asarray(fn(batch))[..., 0]
    if mask is not None:
        out[mask] = background
    return out


def deartifact_volume(
    fn: Deartifactor, data: np.ndarray, affine_ras: np.ndarray, native_axis: int = 2, batch_size: int = DEFAULT_BATCH
) -> tuple[np.ndarray, str, int]:
    """De-artifact a 3-D array whose voxel-to-RAS affine is ``affine_ras``.

    Returns the float32 result in ``data``'s own layout, the mode -- "axial" (slices taken in
    the training layout, axial LPS) or "native" (planes perpendicular to ``native_axis``, used
    when the axial plane is too thin to be an image) -- and the number of slices processed.
    """
    from nibabel.orientations import apply_orientation, axcodes2ornt, io_orientation, ornt_transform

    data = np.asarray(data, dtype=np.float32)
    source = io_orientation(affine_ras)
    target = axcodes2ornt(AXIAL_CODES)
    lps = apply_orientation(data, ornt_transform(source, target))  # [x(L), y(P), z(S)]
    if min(lps.shape[0], lps.shape[1]) >= MIN_AXIAL_SIDE:
        axial = np.ascontiguousarray(lps.transpose(2, 1, 0))  # [slice, row(P), column(L)]
        out = run_slices(fn, axial, batch_size).transpose(2, 1, 0)
        return apply_orientation(out, ornt_transform(target, source)).astype(np.float32), "axial", len(axial)
    moved = np.ascontiguousarray(np.moveaxis(data, native_axis, 0))
    out = run_slices(fn, moved, batch_size)
    return np.moveaxis(out, 0, native_axis).astype(np.float32), "native", len(moved)


def to_dtype(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Cast float results to an on-disk type: rounded and clipped to an integer type's range."""
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(dtype)
    if dtype.kind == "f":
        info = np.finfo(dtype)
        return np.clip(values, info.min, info.max).astype(dtype)
    raise InputSkipped(f"unsupported data type {dtype}")
