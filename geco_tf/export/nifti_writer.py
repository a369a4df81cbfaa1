"""NIfTI volume in, de-artifacted NIfTI volume out.

The output keeps what a reader relies on: the affine, the header (byte for byte, scaling
included) and the on-disk data type, values rounded and clipped to that type's range. The file
is written atomically; the input is only read.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from geco_tf.export.slices import DEFAULT_BATCH, Deartifactor, InputSkipped, deartifact_volume, to_dtype
from geco_tf.io import atomic_path

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def is_nifti(path: Path) -> bool:
    """True for ``.nii`` and ``.nii.gz`` names."""
    return Path(path).name.lower().endswith(NIFTI_SUFFIXES)


def deartifact_nifti(
    fn: Deartifactor, src: Path, dst: Path, batch_size: int = DEFAULT_BATCH
) -> tuple[int, str, list[str]]:
    """Write ``dst``: ``src`` with every axial slice through the generator.

    Works in the file's real units (after ``scl_slope``/``scl_inter``) and stores the result
    back through the same scaling, so the header is unchanged byte for byte. 4-D (and higher)
    files are processed volume by volume. Non-finite voxels come out as the volume's background
    (:mod:`geco_tf.export.slices`). Returns (slices processed, mode, notes).
    """
    import nibabel as nib

    try:
        image = nib.load(str(src))
        if not isinstance(image, (nib.Nifti1Image, nib.Nifti2Image)):
            raise InputSkipped(f"not a single-file NIfTI image ({type(image).__name__})")
        raw = np.asanyarray(image.dataobj.get_unscaled())
    except (InputSkipped, MemoryError):
        raise
    except Exception as exc:
        raise InputSkipped(f"unreadable NIfTI ({type(exc).__name__}: {exc})") from None
    shape = raw.shape
    if raw.ndim < 3 or min(shape[:3]) < 1:
        raise InputSkipped(f"not a 3-D volume (shape {shape})")
    disk_dtype = image.get_data_dtype()
    if disk_dtype.kind not in "iuf":
        raise InputSkipped(f"unsupported NIfTI data type {disk_dtype}")
    slope, inter = image.dataobj.slope, image.dataobj.inter
    scaled = raw.astype(np.float64) * slope + inter if (slope, inter) != (1.0, 0.0) else raw
    volumes = np.asarray(scaled, dtype=np.float32).reshape(shape[:3] + (-1,))
    results = np.empty(volumes.shape, dtype=np.float32)
    modes, count = set(), 0
    native_axis = int(np.argmin(shape[:3]))
    for t in range(volumes.shape[3]):
        results[..., t], mode, n = deartifact_volume(fn, volumes[..., t], image.affine, native_axis, batch_size)
        modes.add(mode)
        count += n
    results = results.reshape(shape)
    stored = (results.astype(np.float64) - inter) / slope if (slope, inter) != (1.0, 0.0) else results
    stored = to_dtype(stored, disk_dtype)
    out = image.__class__(stored, None, image.header)
    if (slope, inter) != (1.0, 0.0):
        out.header.set_slope_inter(slope, inter)  # the constructor resets scaling; put it back
    suffix = ".nii.gz" if dst.name.lower().endswith(".gz") else ".nii"
    with atomic_path(dst, suffix=suffix) as tmp:
        nib.save(out, str(tmp))
    notes = [f"{volumes.shape[3]} volumes"] if volumes.shape[3] > 1 else []
    if not np.isfinite(volumes).all():
        notes.append("non-finite voxels written as the volume's background")
    mode = "axial" if modes == {"axial"} else "native"
    if mode == "native":
        notes.append("axial plane too thin: processed in the acquisition plane")
    return count, mode, notes
