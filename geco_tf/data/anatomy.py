"""Subject anatomy for the built-in simulator: the MNI152 2009a template, per-subject variation.

Why a template: no MRI data set can be downloaded here, but the nilearn wheel carries the
MNI152 2009a symmetric T1 template with grey- and white-matter probability maps. Real cortical
folding, ventricles and deep nuclei make the simulated slices look like brains, so a classifier
cannot separate scanners by anatomy shortcuts and a generator must keep real structure.

The template is skull-stripped, so the head around the brain is built from a smooth hull of the
brain: cerebrospinal fluid (CSF) up to the hull, then skull (bone with fatty marrow), then scalp
(mostly subcutaneous fat). All tissues are returned as partial-volume fractions, which the
simulator turns into signal with a per-tissue signal equation (``geco_tf.data.synth``).

Each subject differs from the template by a smooth random deformation, head size, a small
rotation and translation, skull and scalp thickness, per-tissue relaxation variation, and for
some subjects a tumour-like lesion (necrotic core, viable enhancing rim, surrounding oedema).
Slices are sampled directly in subject space (only the pixels that are needed), so making a
subject costs almost nothing.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

#: Template files inside the nilearn wheel (``nilearn/datasets/data``).
TEMPLATE_FILES = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}
#: Tissues returned by :func:`tissue_fractions`, in this order.
TISSUES = ("gm", "wm", "csf", "bone", "marrow", "scalp", "oedema", "core", "rim")
#: Axial slices are taken between these heights (mm, MNI z): below, the slice holds little brain
#: (skull base, cerebellum tip); above, only the vertex.
SLICE_RANGE_MM = (-25.0, 62.0)
#: Field of view of a rendered slice (mm, square); holds the largest simulated head.
FOV_MM = 240.0
#: Template z range kept in memory (mm, MNI): the slice range plus room for tilt and deformation.
_Z_KEEP_MM = (-55.0, 90.0)
#: Signed distance given to points outside the template volume (air).
_FAR_MM = 60.0


@dataclass(frozen=True)
class Template:
    """The template volumes, resampled nowhere: 1 mm voxels, MNI space, float32.

    ``sd`` is the signed distance (mm) to the smooth head hull that encloses the brain and its
    CSF (negative inside); skull and scalp are shells at positive distances.
    """

    gm: np.ndarray
    wm: np.ndarray
    sd: np.ndarray
    origin_vox: tuple[float, float, float]  # voxel index of MNI (0, 0, 0)
    stacked: np.ndarray = field(repr=False, default=None)  # (X, Y, Z, 3): gm, wm, sd side by side

    def sample(self, vox: np.ndarray) -> np.ndarray:
        """Trilinear interpolation of (gm, wm, sd) at voxel coordinates (3, N) -> (N, 3).

        One gather of the three maps interleaved is several times faster than three
        ``scipy.ndimage.map_coordinates`` calls; outside the volume gm = wm = 0, sd = far.
        """
        vol = self.stacked
        shape = np.array(vol.shape[:3])
        base = np.floor(vox).astype(np.int64)
        frac = (vox - base).astype(np.float32)
        inside = np.all((base >= 0) & (base < shape[:, None] - 1), axis=0)
        base = np.where(inside, base, 0)
        out = np.zeros((vox.shape[1], 3), dtype=np.float32)
        flat = vol.reshape(-1, 3)
        strides = np.array([shape[1] * shape[2], shape[2], 1])
        idx0 = strides @ base
        for dx in (0, 1):
            wx = frac[0] if dx else 1.0 - frac[0]
            for dy in (0, 1):
                wy = frac[1] if dy else 1.0 - frac[1]
                for dz in (0, 1):
                    wz = frac[2] if dz else 1.0 - frac[2]
                    out += (wx * wy * wz)[:, None] * flat[idx0 + dx * strides[0] + dy * strides[1] + dz]
        out[~inside] = (0.0, 0.0, _FAR_MM)
        return out

    def to_voxel(self, points_mm: np.ndarray) -> np.ndarray:
        """MNI mm (3, N) -> voxel coordinates (3, N) of these arrays."""
        return points_mm + np.asarray(self.origin_vox, dtype=np.float64)[:, None]


def template_dir() -> Path:
    """Directory of the nilearn wheel's bundled MNI152 files (no network)."""
    import nilearn

    return Path(nilearn.__file__).parent / "datasets" / "data"


@functools.lru_cache(maxsize=1)
def load_template(prefilter_mm: float = 0.8) -> Template:
    """Load and prepare the MNI152 2009a maps once per process.

    The maps are pre-blurred by ``prefilter_mm`` so that sampling them at the simulator's
    rendering spacing (about 1.9 mm at size 64) does not alias the 1 mm cortical ribbon.
    """
    import nibabel as nib
    from scipy import ndimage

    folder = template_dir()
    vols = {}
    for key, name in TEMPLATE_FILES.items():
        path = folder / name
        if not path.is_file():  # pragma: no cover - depends on the installed nilearn
            raise FileNotFoundError(f"{path}: MNI152 template missing from the nilearn wheel")
        img = nib.load(str(path))
        affine = img.affine
        vols[key] = np.asarray(img.dataobj, dtype=np.float32)
    # MNI origin in voxels (the 2009a sym template is axis-aligned with 1 mm voxels).
    origin = tuple(float(-affine[i, 3] / affine[i, i]) for i in range(3))
    k0 = int(round(origin[2] + _Z_KEEP_MM[0]))
    k1 = int(round(origin[2] + _Z_KEEP_MM[1]))
    for key in vols:
        vols[key] = np.ascontiguousarray(vols[key][:, :, k0:k1])
    origin = (origin[0], origin[1], origin[2] - k0)

    gm = np.clip(vols["gm"] / 255.0, 0.0, 1.0)
    wm = np.clip(vols["wm"] / 255.0, 0.0, 1.0)
    total = gm + wm
    over = total > 1.0
    gm[over] /= total[over]
    wm[over] /= total[over]
    # Head hull: brain (including its CSF, where the T1 template is non-zero) closed by a blur
    # and a low threshold, holes filled -> a smooth surface like the inner table of the skull.
    brain = ((vols["t1"] > 8.0) | (total > 0.3)).astype(np.float32)
    hull = ndimage.gaussian_filter(brain, 3.0) > 0.2
    hull = ndimage.binary_fill_holes(hull)
    outside = ndimage.distance_transform_edt(~hull)
    inside = ndimage.distance_transform_edt(hull)
    sd = (outside - inside).astype(np.float32)
    sd = ndimage.gaussian_filter(sd, 1.0)
    if prefilter_mm > 0:
        gm = ndimage.gaussian_filter(gm, prefilter_mm)
        wm = ndimage.gaussian_filter(wm, prefilter_mm)
    stacked = np.ascontiguousarray(np.stack([gm, wm, sd], axis=-1).astype(np.float32))
    return Template(gm=gm, wm=wm, sd=sd, origin_vox=origin, stacked=stacked)


@dataclass
class Lesion:
    """A tumour-like lesion in template space: necrotic core, enhancing rim, oedema."""

    centre_mm: np.ndarray  # (3,)
    radius_mm: float
    core_fraction: float  # core radius / lesion radius
    oedema_factor: float  # oedema radius / lesion radius
    shape_freqs: np.ndarray  # (M, 3) unit directions for the irregular outline
    shape_amps: np.ndarray  # (M,)
    shape_phases: np.ndarray  # (M,)


@dataclass
class SubjectAnatomy:
    """One simulated subject's geometry, tissue variation and optional lesion."""

    subject_id: str
    scale: np.ndarray  # (3,) head size factors (x, y, z)
    rotation: np.ndarray  # (3, 3) subject -> template
    translation_mm: np.ndarray  # (3,)
    warp_k: np.ndarray  # (M, 3) wave vectors (rad/mm) of the smooth deformation
    warp_amp: np.ndarray  # (M, 3) displacement amplitudes (mm)
    warp_phase: np.ndarray  # (M,)
    skull_mm: float
    scalp_mm: float
    lesion: Lesion | None = None
    tissue_jitter: dict[str, tuple[float, float, float]] = field(default_factory=dict)  # PD, T1, T2 factors


def random_subject(rng: np.random.Generator, subject_id: str, lesion: bool) -> SubjectAnatomy:
    """Draw one subject: deformation, size, pose, head shells, tissue variation, lesion.

    Ranges are chosen to stay within normal adult variation (head size +-8 %, rotation +-8 deg
    in plane, +-4 deg tilt, deformation of a few mm) so every slice still looks like a brain.
    """
    size = rng.uniform(0.92, 1.08)
    scale = size * (1.0 + rng.normal(0.0, 0.025, 3))
    yaw = np.deg2rad(rng.uniform(-8, 8))
    pitch = np.deg2rad(rng.uniform(-4, 4))
    roll = np.deg2rad(rng.uniform(-3, 3))
    rotation = _rot_z(yaw) @ _rot_x(pitch) @ _rot_y(roll)
    translation = np.array([rng.normal(0, 2.0), rng.normal(0, 3.0), rng.normal(0, 2.0)])
    n_waves = 8
    direction = rng.normal(size=(n_waves, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    wavelength = rng.uniform(45.0, 120.0, n_waves)
    warp_k = direction * (2 * np.pi / wavelength)[:, None]
    warp_amp = rng.normal(0.0, 1.1, (n_waves, 3))
    warp_phase = rng.uniform(0, 2 * np.pi, n_waves)
    jitter = {
        t: (float(rng.normal(1, 0.03)), float(rng.normal(1, 0.04)), float(rng.normal(1, 0.04))) for t in TISSUES
    }
    lesion_obj = _random_lesion(rng) if lesion else None
    return SubjectAnatomy(
        subject_id=subject_id,
        scale=scale,
        rotation=rotation,
        translation_mm=translation,
        warp_k=warp_k,
        warp_amp=warp_amp,
        warp_phase=warp_phase,
        skull_mm=float(rng.uniform(4.0, 7.0)),
        scalp_mm=float(rng.uniform(7.0, 10.0)),
        lesion=lesion_obj,
        tissue_jitter=jitter,
    )


def _random_lesion(rng: np.random.Generator) -> Lesion:
    """A lesion centred in one hemisphere's white matter, within the sliced height range."""
    template = load_template()
    lo, hi = SLICE_RANGE_MM
    for _ in range(200):
        centre = np.array([rng.choice([-1, 1]) * rng.uniform(15, 45), rng.uniform(-70, 40), rng.uniform(lo + 10, hi - 15)])
        vox = np.round(template.to_voxel(centre[:, None])[:, 0]).astype(int)
        if template.wm[tuple(vox)] > 0.5:
            break
    m = 6
    directions = rng.normal(size=(m, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    return Lesion(
        centre_mm=centre,
        radius_mm=float(rng.uniform(9.0, 20.0)),
        core_fraction=float(rng.uniform(0.35, 0.6)),
        oedema_factor=float(rng.uniform(1.6, 2.4)),
        shape_freqs=directions,
        shape_amps=rng.uniform(0.05, 0.15, m),
        shape_phases=rng.uniform(0, 2 * np.pi, m),
    )


def slice_points(subject: SubjectAnatomy, z_mm: float, n: int, fov_mm: float = FOV_MM) -> np.ndarray:
    """Template-space MNI coordinates (3, n*n) of an n x n axial slice at subject height ``z_mm``.

    Rows run anterior (top) to posterior, columns run from the subject's right to left
    (radiological display). Subject space = template space scaled, rotated, shifted, warped.
    """
    spacing = fov_mm / n
    coords = (np.arange(n) - (n - 1) / 2.0) * spacing
    yy, xx = np.meshgrid(-coords, coords, indexing="ij")  # rows: anterior first
    pts = np.stack([xx.ravel(), yy.ravel(), np.full(xx.size, z_mm)])
    centre = np.array([0.0, -18.0, 10.0])[:, None]  # middle of the brain in MNI mm
    p = subject.rotation @ ((pts - np.array([0.0, 0.0, 10.0])[:, None]) / subject.scale[:, None])
    p = p + centre + subject.translation_mm[:, None]
    phase = subject.warp_k @ p + subject.warp_phase[:, None]  # (M, N)
    p = p + subject.warp_amp.T @ np.sin(phase)
    return p


def tissue_fractions(subject: SubjectAnatomy, z_mm: float, n: int, fov_mm: float = FOV_MM) -> dict[str, np.ndarray]:
    """Partial-volume fraction of each tissue in :data:`TISSUES` on an n x n slice (float32).

    Fractions add up to at most 1; the rest is air.
    """
    template = load_template()
    p = slice_points(subject, z_mm, n, fov_mm)
    maps = template.sample(template.to_voxel(p))
    gm = maps[:, 0].reshape(n, n)
    wm = maps[:, 1].reshape(n, n)
    sd = maps[:, 2].reshape(n, n) * float(np.mean(subject.scale))  # template mm -> subject mm
    inside = _sigmoid(-sd / 0.6)
    csf = np.clip(inside - gm - wm, 0.0, 1.0)
    t_skull, t_scalp = subject.skull_mm, subject.scalp_mm
    skull = _band(sd, 0.0, t_skull)
    marrow = 0.6 * _band(sd, 0.35 * t_skull, 0.7 * t_skull)
    bone = np.clip(skull - marrow, 0.0, 1.0)
    scalp = _band(sd, t_skull, t_skull + t_scalp)
    out = {"gm": gm, "wm": wm, "csf": csf, "bone": bone, "marrow": marrow, "scalp": scalp}
    zeros = np.zeros_like(gm)
    out.update(oedema=zeros, core=zeros.copy(), rim=zeros.copy())
    if subject.lesion is not None:
        _add_lesion(out, subject.lesion, p, n)
    return out


def _add_lesion(frac: dict[str, np.ndarray], lesion: Lesion, p: np.ndarray, n: int) -> None:
    """Replace brain tissue by lesion core / rim and surround it with oedema (in place)."""
    d = p - lesion.centre_mm[:, None]
    r = np.linalg.norm(d, axis=0)
    unit = d / np.maximum(r, 1e-6)
    wobble = 1.0 + lesion.shape_amps @ np.sin(3.0 * (lesion.shape_freqs @ unit) + lesion.shape_phases[:, None])
    rel = (r / (lesion.radius_mm * wobble)).reshape(n, n).astype(np.float32)
    tumour = _sigmoid((1.0 - rel) / 0.06)
    core = tumour * _sigmoid((lesion.core_fraction - rel) / 0.06)
    rim = tumour - core
    brain = frac["gm"] + frac["wm"]
    oed_shell = _sigmoid((lesion.oedema_factor - rel) / 0.15) * (1.0 - tumour)
    # Oedema spreads along white matter (vasogenic), sparing most of the cortex.
    oedema = oed_shell * (frac["wm"] + 0.3 * frac["gm"])
    keep = 1.0 - tumour
    frac["gm"] = frac["gm"] * keep - 0.3 * frac["gm"] * oed_shell * keep
    frac["wm"] = frac["wm"] * keep - frac["wm"] * oed_shell * keep
    frac["csf"] = frac["csf"] * keep
    frac["oedema"] = oedema * keep
    frac["core"] = core * np.clip(brain + frac["csf"], 0, 1)
    frac["rim"] = rim * np.clip(brain + frac["csf"], 0, 1)
    for key in ("gm", "wm"):
        frac[key] = np.clip(frac[key], 0.0, 1.0)


def lesion_area(frac: dict[str, np.ndarray]) -> float:
    """Lesion (core + rim) area in pixels: a slice shows the lesion when this is sizeable."""
    return float(np.sum(frac["core"] + frac["rim"]))


def _band(sd: np.ndarray, a: float, b: float, width: float = 0.6) -> np.ndarray:
    return _sigmoid((sd - a) / width) - _sigmoid((sd - b) / width)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return (0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float32)))).astype(np.float32)


def _rot_x(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def _rot_y(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _rot_z(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
