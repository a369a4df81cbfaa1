"""The built-in multi-vendor MRI data set: MNI152 anatomy rendered through simulated scanners.

Why simulate: GECO removes the *signature* of a scanner (manufacturer, field strength) from an
image while keeping its anatomy. No multi-vendor MRI set can be downloaded here, so this module
makes one in which the signatures are physically grounded and as subtle as the paper's:

1. **Anatomy** (``geco_tf.data.anatomy``): per subject a deformed, scaled, rotated MNI152 brain
   with skull and scalp, tissue relaxation variation and, for some subjects, a tumour-like lesion.
2. **Contrast**: each tissue's signal from its proton density, T1 and T2 through a spin-echo or
   inversion-recovery signal equation (T1 PRE, T1 POST with gadolinium shortening T1 of the
   lesion rim, T2, FLAIR). T1 and T2 depend on field strength, so 3T changes T1 contrast.
3. **Acquisition** (:func:`acquire`): the true image is rendered at twice the output resolution,
   multiplied by the field strength's B1 transmit pattern (centre brightening at 3T) and the
   vendor's residual receive-coil shading, its fat displaced by chemical shift (twice as far at
   3T unless the 3T protocol doubles the receiver bandwidth: :data:`PROTOCOLS`), Fourier transformed and cropped to the vendor's acquired matrix, multiplied by the
   vendor's k-space filter (apodisation, elliptical sampling, homodyne partial Fourier),
   zero-filled to the output matrix, given complex Gaussian noise (shaped by the same filter,
   amplified by a parallel-imaging g-factor map and folded at half the field of view as in
   SENSE/GRAPPA), and reconstructed as a magnitude image (so the noise is Rician). The vendor's
   post-processing follows (denoising, background masking), then intensity scaling and integer
   quantisation as in a stored DICOM.
4. **Convention**: :func:`geco_tf.data.intensity.scale_to_unit_range` and ``pad_or_crop``.
   The per-slice min-max scaling removes global intensity scaling, so what separates vendors is
   texture and frequency content, not brightness -- as in the paper.

Every vendor and field-strength parameter lives in :data:`VENDORS` and :data:`FIELDS` and is
recorded in ``dataset.json["made_by"]``. The values are plausible defaults for each class of
effect, not measurements of real scanners.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from geco_tf.data import anatomy
from geco_tf.data.dataset import FIELD_STRENGTHS, LESION, MANUFACTURERS, DatasetWriter, SliceRecord, split_by_subject
from geco_tf.data.intensity import pad_or_crop, scale_to_unit_range

GENERATOR = "geco_tf.data.synth"
#: Contrasts the simulator renders, in the order a subject's slices cycle through them.
SYNTH_MODALITIES = ("T1 PRE", "T1 POST", "T2", "FLAIR")

DEFAULT_SIZE = 64
DEFAULT_SUBJECTS = 256
DEFAULT_SLICES_PER_SUBJECT = 8
DEFAULT_SEED = 0
#: Fraction of subjects with a lesion.
LESION_FRACTION = 0.5
#: A slice is labelled lesion "present" when it cuts this much lesion (core + rim), in mm^2.
LESION_MIN_AREA_MM2 = 30.0
#: Slices of a subject's volume are 5 mm apart; slice index 0 sits at MNI z = -40 mm.
SLICE_SPACING_MM = 5.0
SLICE_ORIGIN_MM = -40.0

# --- tissues: proton density, T1 (ms), T2 (ms) at 1.5T and 3T ---------------------------------
#: Literature-range relaxation times; at 3T T1 lengthens and T2 shortens slightly.
TISSUE_PARAMS: dict[str, dict[str, object]] = {
    "gm": {"pd": 0.80, "t1": {"1.5T": 1100, "3T": 1450}, "t2": {"1.5T": 95, "3T": 85}},
    "wm": {"pd": 0.70, "t1": {"1.5T": 650, "3T": 850}, "t2": {"1.5T": 75, "3T": 70}},
    "csf": {"pd": 1.00, "t1": {"1.5T": 4000, "3T": 4300}, "t2": {"1.5T": 2000, "3T": 1800}},
    "bone": {"pd": 0.05, "t1": {"1.5T": 300, "3T": 350}, "t2": {"1.5T": 10, "3T": 8}},
    "marrow": {"pd": 0.90, "t1": {"1.5T": 280, "3T": 380}, "t2": {"1.5T": 70, "3T": 60}},
    "scalp": {"pd": 0.90, "t1": {"1.5T": 300, "3T": 400}, "t2": {"1.5T": 75, "3T": 65}},
    "oedema": {"pd": 0.86, "t1": {"1.5T": 1250, "3T": 1600}, "t2": {"1.5T": 180, "3T": 160}},
    "core": {"pd": 0.95, "t1": {"1.5T": 2200, "3T": 2800}, "t2": {"1.5T": 400, "3T": 350}},
    "rim": {"pd": 0.85, "t1": {"1.5T": 1000, "3T": 1350}, "t2": {"1.5T": 110, "3T": 100}},
}
#: Gadolinium after injection (mM) per tissue, and its T1 relaxivity (1/(mM s)) per field.
GADOLINIUM_MM = {"rim": 0.35, "core": 0.02, "oedema": 0.02}
GD_RELAXIVITY = {"1.5T": 4.3, "3T": 4.0}

#: Tissues whose signal comes from fat (displaced along the readout axis by chemical shift).
FAT_TISSUES = ("scalp", "marrow")

#: Pulse sequences: spin echo (SE) or inversion recovery (IR), times in ms. FLAIR's inversion
#: time nulls CSF at each field strength (protocols are tuned per field).
SEQUENCES: dict[str, dict[str, object]] = {
    "T1 PRE": {"kind": "SE", "tr": 500, "te": 12},
    "T1 POST": {"kind": "SE", "tr": 500, "te": 12, "gadolinium": True},
    "T2": {"kind": "SE", "tr": 4000, "te": 100},
    "FLAIR": {"kind": "IR", "tr": 9000, "te": 120, "ti": {"1.5T": 2370, "3T": 2480}},
}

# --- field strength -------------------------------------------------------------------------
#: ``snr``: brightest-tissue signal over noise sigma at the output resolution (3.75 mm pixels at
#: size 64 make this high; 3T roughly doubles it). ``b1_centre``: relative centre brightening from
#: the dielectric (standing-wave) effect, ``b1_width``: its width as a fraction of the FOV.
#: ``fat_shift_hz``: fat-water frequency difference (3.5 ppm), which displaces fat (scalp, marrow)
#: along the readout axis by this over the vendor's bandwidth per pixel -- twice as far at 3T.
FIELDS: dict[str, dict[str, float]] = {
    "1.5T": {"snr": 120.0, "b1_centre": 0.03, "b1_width": 0.30, "fat_shift_hz": 220.0},
    "3T": {"snr": 230.0, "b1_centre": 0.10, "b1_width": 0.30, "fat_shift_hz": 440.0},
}

#: The 3T sequence changes of ``tuned`` (and ``compromise``): TR and TE scaled with T1 and T2.
TUNED_3T_SEQUENCES: dict[str, dict[str, float]] = {"T1 PRE": {"tr": 650}, "T1 POST": {"tr": 650}, "T2": {"te": 92}}

#: How a site sets its protocol per field strength (``geco-tf synth --protocol``).
#:
#: * ``shared`` (the default): one protocol (:data:`SEQUENCES`, the vendor's receiver bandwidth)
#:   at both field strengths, only FLAIR's inversion time retuned; 3T then shows its own T1 and
#:   T2 contrast and twice the chemical shift in pixels -- field strength is a large signature.
#: * ``tuned``: the 3T protocol adjusted the way sites match their 3T images to their 1.5T ones:
#:   receiver bandwidth doubled (fat moves as many pixels as at 1.5T; noise up by sqrt 2),
#:   T1-weighted TR lengthened with T1 (500 -> 650 ms, T1 is ~1.3x longer at 3T), T2-weighted TE
#:   shortened with T2 (100 -> 92 ms). What the hardware sets (relaxation times, B1 pattern, FLAIR's
#:   residual contrast) stays, so field strength is a subtle signature, as in the paper's data.
#: * ``bandwidth``: between the two -- only the 3T receiver bandwidth doubled (fat shift matched,
#:   noise up by sqrt 2), sequences shared, so 3T keeps its own T1 and T2 contrast.
#: * ``compromise``: the ``tuned`` sequences, but the 3T receiver bandwidth raised 1.5x instead of
#:   2x (a site keeping part of its SNR: fat moves 1.33x as many pixels as at 1.5T), so a
#:   little of the chemical shift remains (``docs/results.md``, "Field strength").
PROTOCOLS: dict[str, dict[str, dict[str, object]]] = {
    "shared": {},
    "tuned": {"3T": {"bandwidth_factor": 2.0, "sequences": TUNED_3T_SEQUENCES}},
    "bandwidth": {"3T": {"bandwidth_factor": 2.0}},
    "compromise": {"3T": {"bandwidth_factor": 1.5, "sequences": TUNED_3T_SEQUENCES}},
}
DEFAULT_PROTOCOL = "shared"


def sequence(modality: str, field_strength: str, protocol: str = DEFAULT_PROTOCOL) -> dict[str, object]:
    """The pulse-sequence parameters of ``modality`` as the protocol runs it at ``field_strength``."""
    overrides = PROTOCOLS[protocol].get(field_strength, {}).get("sequences", {})
    return {**SEQUENCES[modality], **overrides.get(modality, {})}


def field_parameters(field_strength: str, protocol: str = DEFAULT_PROTOCOL) -> dict[str, float]:
    """The :data:`FIELDS` entry with the protocol's receiver bandwidth (``bandwidth_factor``
    times the vendor's) and the SNR that bandwidth leaves (noise grows with its square root)."""
    factor = float(PROTOCOLS[protocol].get(field_strength, {}).get("bandwidth_factor", 1.0))
    field = dict(FIELDS[field_strength])
    field["bandwidth_factor"] = factor
    field["snr"] = field["snr"] / math.sqrt(factor)
    return field

# --- manufacturers --------------------------------------------------------------------------
#: Reconstruction signature per manufacturer. All four encode phase anterior-posterior
#: (``phase_axis`` 0 = rows) and read out left-right, so chemical shift moves fat the same way on
#: every scanner of one field strength.
#:
#: * ``acquired``: fraction of the output matrix sampled (rows, columns); the rest of k-space is
#:   zero-filled (blur and Gibbs ringing along that axis).
#: * ``partial_fourier``: fraction of phase-encoding lines acquired, homodyne reconstruction
#:   (real part: the object is kept, the noise becomes real-valued, half-normal in the air).
#: * ``window``: k-space apodisation (``none``, ``fermi`` radius/width on the acquired extent --
#:   radius 1.0 drops the k-space corners, an elliptical acquisition -- ``hamming``, ``tukey``).
#: * ``pi``: parallel imaging: acceleration, g-factor peak mid-FOV, weight of the noise folded in
#:   from half a FOV away.
#: * ``coil``: residual receive-coil shading (``anterior``, ``periphery``, ``lateral``,
#:   ``posterior``) and its amplitude.
#: * ``post``: vendor image filter (``sharpen`` unsharp mask, ``smooth`` Gaussian, ``denoise``
#:   edge-preserving: smooths where the local gradient is noise-sized); ``background_mask``:
#:   zero the air outside the head (threshold in noise sigmas).
#: * ``max_value``: the stored integer range (intensity scaling and quantisation).
#: * ``snr_factor``: noise before post-processing relative to the field strength's (the denoising
#:   vendor starts noisier, so its noise level after filtering is comparable).
#: * ``bandwidth_hz_px``: receiver bandwidth per output pixel (sets the chemical shift).
#:
#: The amplitudes were tuned so that the same anatomy by two vendors keeps mean SSIM >= 0.95 while
#: a small CNN learns the vendor (``benchmarks/subtlety.py``, ``docs/results.md``).
VENDORS: dict[str, dict[str, object]] = {
    "GE Medical Systems": {
        "acquired": [0.8, 1.0],
        "phase_axis": 0,
        "partial_fourier": 1.0,
        "window": {"kind": "none"},
        "pi": {"factor": 2, "g_max": 1.4, "fold": 0.5},
        "coil": {"shape": "anterior", "amplitude": 0.02},
        "post": {"kind": "none"},
        "max_value": 4095,
        "snr_factor": 1.0,
        "bandwidth_hz_px": 480,
    },
    "Siemens": {
        "acquired": [1.0, 0.85],
        "phase_axis": 0,
        "partial_fourier": 1.0,
        "window": {"kind": "none"},
        "pi": {"factor": 2, "g_max": 1.3, "fold": 0.5},
        "coil": {"shape": "periphery", "amplitude": 0.02},
        "post": {"kind": "none"},
        "max_value": 4095,
        "snr_factor": 1.0,
        "bandwidth_hz_px": 480,
    },
    "Philips": {
        "acquired": [1.0, 1.0],
        "phase_axis": 0,
        "partial_fourier": 0.7,
        "window": {"kind": "fermi", "radius": 1.0, "width": 0.03},
        "pi": {"factor": 1, "g_max": 1.0, "fold": 0.0},
        "coil": {"shape": "lateral", "amplitude": 0.02},
        "post": {"kind": "none"},
        "max_value": 2000,
        "snr_factor": 1.0,
        "bandwidth_hz_px": 480,
    },
    "Imaging Biometrics": {
        "acquired": [1.0, 1.0],
        "phase_axis": 0,
        "partial_fourier": 1.0,
        "window": {"kind": "none"},
        "pi": {"factor": 1, "g_max": 1.0, "fold": 0.0},
        "coil": {"shape": "posterior", "amplitude": 0.02},
        "post": {"kind": "denoise", "sigma": 1.0, "amount": 0.8, "edge": 2.0},
        "background_mask": 4.0,
        "max_value": 1000,
        "snr_factor": 0.6,
        "bandwidth_hz_px": 480,
    },
}


# --- contrast -------------------------------------------------------------------------------
def tissue_signal(
    tissue: str,
    modality: str,
    field_strength: str,
    jitter: tuple[float, float, float] = (1.0, 1.0, 1.0),
    ti_factor: float = 1.0,
    protocol: str = DEFAULT_PROTOCOL,
) -> float:
    """Signal of one tissue: SE ``PD (1 - e^-TR/T1) e^-TE/T2`` or IR
    ``PD |1 - 2 e^-TI/T1 + e^-TR/T1| e^-TE/T2``; gadolinium shortens T1 on T1 POST."""
    p = TISSUE_PARAMS[tissue]
    seq = sequence(modality, field_strength, protocol)
    pd = float(p["pd"]) * jitter[0]
    t1 = float(p["t1"][field_strength]) * jitter[1]
    t2 = float(p["t2"][field_strength]) * jitter[2]
    if seq.get("gadolinium"):
        t1 = 1000.0 / (1000.0 / t1 + GD_RELAXIVITY[field_strength] * GADOLINIUM_MM.get(tissue, 0.0))
    tr, te = float(seq["tr"]), float(seq["te"])
    if seq["kind"] == "SE":
        mz = 1.0 - math.exp(-tr / t1)
    else:
        ti = float(seq["ti"][field_strength]) * ti_factor
        mz = abs(1.0 - 2.0 * math.exp(-ti / t1) + math.exp(-tr / t1))
    return pd * mz * math.exp(-te / t2)


def render_true(
    fractions: dict[str, np.ndarray],
    modality: str,
    field_strength: str,
    jitter: dict[str, tuple[float, float, float]] | None = None,
    ti_factor: float = 1.0,
    protocol: str = DEFAULT_PROTOCOL,
) -> tuple[np.ndarray, np.ndarray]:
    """Noise-free water and fat images: partial-volume sums of tissue fractions times tissue
    signals. Fat (scalp, marrow) is kept apart because it is displaced by chemical shift."""
    jitter = jitter or {}
    water = np.zeros_like(next(iter(fractions.values())), dtype=np.float64)
    fat = np.zeros_like(water)
    for tissue, frac in fractions.items():
        signal = frac * tissue_signal(tissue, modality, field_strength, jitter.get(tissue, (1.0, 1.0, 1.0)), ti_factor, protocol)
        if tissue in FAT_TISSUES:
            fat += signal
        else:
            water += signal
    return water, fat


# --- acquisition ----------------------------------------------------------------------------
def _grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Normalised image coordinates in [-1, 1): rows (y, anterior = -1), columns (x)."""
    c = (np.arange(n) - n / 2.0 + 0.5) / (n / 2.0)
    return np.meshgrid(c, c, indexing="ij")


def coil_shading(shape: str, amplitude: float, n: int) -> np.ndarray:
    """Residual receive-coil intensity shading left after the vendor's normalisation."""
    y, x = _grid(n)
    if shape == "anterior":
        field = 1.0 - amplitude * y
    elif shape == "posterior":
        field = 1.0 + amplitude * (y + 0.5 * y**2 - 0.15)
    elif shape == "lateral":
        field = 1.0 + amplitude * x
    elif shape == "periphery":
        field = 1.0 + amplitude * (x**2 + y**2 - 0.35)
    else:
        field = np.ones_like(x)
    return field


def b1_pattern(centre: float, width: float, n: int) -> np.ndarray:
    """Transmit-field centre brightening (dielectric effect), strongest at high field."""
    y, x = _grid(n)
    return 1.0 + centre * np.exp(-(x**2 + y**2) / (2.0 * (2.0 * width) ** 2))


def kspace_window(vendor: dict, n: int) -> np.ndarray:
    """Acquired-matrix mask times apodisation filter on the centred ``n x n`` output k-space."""
    frac_rows, frac_cols = vendor["acquired"]
    k = np.arange(n) - n // 2
    half_r = max(frac_rows * n / 2.0, 1.0)
    half_c = max(frac_cols * n / 2.0, 1.0)
    kr, kc = np.meshgrid(k / half_r, k / half_c, indexing="ij")  # acquired extent -> [-1, 1]
    mask = (np.abs(kr) <= 1.0) & (np.abs(kc) <= 1.0)
    win = vendor["window"]
    kind = win["kind"]
    if kind == "fermi":
        radius = np.sqrt(kr**2 + kc**2)
        apod = 1.0 / (1.0 + np.exp((radius - win["radius"]) / win["width"]))
    elif kind == "hamming":
        a = win["alpha"]
        apod = (a + (1 - a) * np.cos(np.pi * np.clip(kr, -1, 1))) * (a + (1 - a) * np.cos(np.pi * np.clip(kc, -1, 1)))
    elif kind == "tukey":
        apod = _tukey(kr, win["alpha"]) * _tukey(kc, win["alpha"])
    else:
        apod = np.ones_like(kr)
    return (mask * apod).astype(np.float64)


def _tukey(k: np.ndarray, alpha: float) -> np.ndarray:
    a = np.abs(np.clip(k, -1, 1))
    edge = 1.0 - alpha
    out = np.ones_like(a)
    taper = a > edge
    out[taper] = 0.5 * (1.0 + np.cos(np.pi * (a[taper] - edge) / max(alpha, 1e-6)))
    return out


def homodyne_weights(fraction: float, phase_axis: int, n: int) -> np.ndarray:
    """Homodyne partial-Fourier weights: the first ``1 - fraction`` of the phase-encoding lines
    are not acquired (0), their conjugate partners count twice (2), the symmetric centre once.
    Taking the real part afterwards restores a real object exactly but leaves real-valued noise."""
    k = np.arange(n) - n // 2
    first = -n // 2 + int(round((1.0 - fraction) * n))
    w = np.where(k < first, 0.0, np.where(k > -first, 2.0, 1.0))
    return w[:, None] * np.ones((1, n)) if phase_axis == 0 else np.ones((n, 1)) * w[None, :]


def g_factor_map(vendor: dict, n: int) -> np.ndarray:
    """Parallel-imaging noise amplification: highest mid-FOV along the phase axis, where
    the two aliased positions see similar coil sensitivities."""
    pi = vendor["pi"]
    if pi["factor"] <= 1:
        return np.ones((n, n))
    y, x = _grid(n)
    u = y if vendor["phase_axis"] == 0 else x
    other = x if vendor["phase_axis"] == 0 else y
    return 1.0 + (pi["g_max"] - 1.0) * np.cos(0.5 * np.pi * u) ** 2 * (1.0 - 0.3 * other**2)


def acquire(
    true_image: np.ndarray | tuple[np.ndarray, np.ndarray],
    vendor: dict,
    field: dict,
    n: int,
    rng: np.random.Generator,
    snr: float,
    coil_amplitude: float,
    b1_centre: float,
) -> np.ndarray:
    """Simulate one vendor's acquisition and reconstruction of a ``2n x 2n`` true image
    (``(water, fat)``, or one image without fat).

    Returns the raw stored magnitude image (``n x n``, non-negative integers as float32) before
    the project's intensity convention.
    """
    water, fat = true_image if isinstance(true_image, tuple) else (true_image, None)
    m = water.shape[0]
    coil = vendor["coil"]
    shading = b1_pattern(b1_centre, field["b1_width"], m) * coil_shading(coil["shape"], coil_amplitude, m)
    lo = (m - n) // 2

    def to_kspace(image: np.ndarray) -> np.ndarray:
        spec = np.fft.fftshift(np.fft.fft2(image * shading))
        return spec[lo : lo + n, lo : lo + n] * (n * n) / float(m * m)

    spectrum = to_kspace(water)
    if fat is not None:
        # Chemical shift: fat precesses ~3.5 ppm slower, so it lands displaced along the readout
        # axis by (fat-water frequency difference) / (receiver bandwidth per pixel).
        shift_px = field["fat_shift_hz"] / (float(vendor["bandwidth_hz_px"]) * field.get("bandwidth_factor", 1.0))
        read_axis = 1 - int(vendor["phase_axis"])
        k = (np.arange(n) - n // 2) / n
        ramp = np.exp(-2j * np.pi * k * shift_px)
        spectrum = spectrum + to_kspace(fat) * (ramp[None, :] if read_axis == 1 else ramp[:, None])
    window = kspace_window(vendor, n)
    homodyne = vendor.get("partial_fourier", 1.0) < 1.0
    if homodyne:
        window = window * homodyne_weights(vendor["partial_fourier"], int(vendor["phase_axis"]), n)
    signal = np.fft.ifft2(np.fft.ifftshift(spectrum * window))

    white = rng.standard_normal((n, n)) + 1j * rng.standard_normal((n, n))
    noise = np.fft.ifft2(np.fft.ifftshift(white * window)) * (n * n) / math.sqrt(float(np.sum(window**2)))
    if homodyne:  # the real part after phase correction: real-valued noise, real object
        signal, noise = signal.real, noise.real
    pi = vendor["pi"]
    if pi["factor"] > 1:
        axis = int(vendor["phase_axis"])
        folded = np.roll(noise, n // pi["factor"], axis=axis)
        noise = g_factor_map(vendor, n) * (noise + pi["fold"] * folded) / math.sqrt(1.0 + pi["fold"] ** 2)
    # Noise sigma relative to the brightest tissue of the noise-free slice (SNR at output size).
    sigma = float(np.percentile(water if fat is None else water + fat, 99.0)) / snr
    image = np.abs(signal + sigma * noise)

    post = vendor["post"]
    if post["kind"] in ("sharpen", "smooth", "denoise"):
        from scipy.ndimage import gaussian_filter

        blurred = gaussian_filter(image, post["sigma"], mode="nearest")
        if post["kind"] == "sharpen":
            image = image + post["amount"] * (image - blurred)
        elif post["kind"] == "smooth":
            image = (1 - post["amount"]) * image + post["amount"] * blurred
        else:  # edge-preserving noise filter: smooth where the local gradient is noise-sized
            gy, gx = np.gradient(blurred)
            weight = np.exp(-(np.hypot(gx, gy) / (post["edge"] * sigma)) ** 2)
            image = image + post["amount"] * weight * (blurred - image)
        image = np.maximum(image, 0.0)
    if vendor.get("background_mask"):  # post-processing zeroes the air around the head
        from scipy.ndimage import binary_dilation, binary_fill_holes, gaussian_filter

        head = gaussian_filter(image, 1.0) > vendor["background_mask"] * sigma
        head = binary_dilation(binary_fill_holes(head), iterations=2)
        image = image * head
    peak = float(np.percentile(image, 99.9))
    if peak > 0:
        image = np.clip(np.round(image * (0.8 * vendor["max_value"] / peak)), 0, vendor["max_value"])
    return image.astype(np.float32)


def to_convention(raw: np.ndarray, size: int) -> np.ndarray:
    """The project's intensity convention: [-1, 1] per slice, padded with -1 to ``size``."""
    image, _ = pad_or_crop(scale_to_unit_range(raw), size)
    return image


# --- subjects -------------------------------------------------------------------------------
class SimSubject:
    """A simulated subject scanned at one site: anatomy plus scanner and per-subject jitters."""

    def __init__(self, index: int, seed: int, manufacturer: str, field_strength: str, protocol: str = DEFAULT_PROTOCOL) -> None:
        if protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {protocol!r} (one of {', '.join(PROTOCOLS)})")
        self.index = index
        self.subject_id = f"sim-{index:04d}"
        self.manufacturer = manufacturer
        self.field_strength = field_strength
        self.protocol = protocol
        self.rng = np.random.default_rng([seed, index])
        has_lesion = bool(self.rng.random() < LESION_FRACTION)
        self.anatomy = anatomy.random_subject(self.rng, self.subject_id, has_lesion)
        self.snr_jitter = float(np.exp(self.rng.normal(0.0, 0.12)))
        self.coil_jitter = float(self.rng.uniform(0.7, 1.3))
        self.b1_jitter = float(self.rng.uniform(0.75, 1.25))
        self.ti_factor = float(self.rng.normal(1.0, 0.015))

    def slice_plan(self, slices: int) -> list[tuple[str, int]]:
        """(modality, slice index) pairs: contrasts in turn, heights stratified over the brain."""
        lo_mm, hi_mm = anatomy.SLICE_RANGE_MM
        first = math.ceil((lo_mm - SLICE_ORIGIN_MM) / SLICE_SPACING_MM)
        last = math.floor((hi_mm - SLICE_ORIGIN_MM) / SLICE_SPACING_MM)
        positions = np.arange(first, last + 1)
        plan = []
        for c, modality in enumerate(SYNTH_MODALITIES):
            count = slices // len(SYNTH_MODALITIES) + (1 if c < slices % len(SYNTH_MODALITIES) else 0)
            if count == 0:
                continue
            strata = np.array_split(positions, count) if count <= len(positions) else [positions] * count
            picks = [int(self.rng.choice(s)) for s in strata]
            plan.extend((modality, p) for p in picks)
        return plan

    def render(
        self, modality: str, slice_index: int, size: int, manufacturer: str | None = None,
        rng: np.random.Generator | None = None, acquisition: dict | None = None, field: dict | None = None,
    ) -> tuple[np.ndarray, bool]:
        """One slice in the intensity convention and whether it shows the lesion.

        ``manufacturer`` overrides the subject's own (the same anatomy seen by another vendor,
        used to measure how subtle the signatures are); ``acquisition`` replaces the vendor's
        parameters altogether (a dict with the keys of a :data:`VENDORS` entry, e.g. a
        noise-free reference acquisition); ``field`` replaces the field strength's acquisition
        parameters (a dict with the keys of a :data:`FIELDS` entry: SNR, B1, chemical shift) while
        the tissue contrast stays the subject's field strength's (to measure each cue alone);
        ``rng`` supplies the noise.
        """
        vendor = acquisition if acquisition is not None else VENDORS[manufacturer or self.manufacturer]
        field = field if field is not None else field_parameters(self.field_strength, self.protocol)
        rng = rng if rng is not None else self.rng
        z = SLICE_ORIGIN_MM + SLICE_SPACING_MM * slice_index
        n_true = 2 * size
        frac = anatomy.tissue_fractions(self.anatomy, z, n_true)
        pixel_mm2 = (anatomy.FOV_MM / n_true) ** 2
        lesion = anatomy.lesion_area(frac) * pixel_mm2 >= LESION_MIN_AREA_MM2
        true = render_true(frac, modality, self.field_strength, self.anatomy.tissue_jitter, self.ti_factor, self.protocol)
        raw = acquire(
            true,
            vendor,
            field,
            size,
            rng,
            snr=field["snr"] * float(vendor["snr_factor"]) * self.snr_jitter,
            coil_amplitude=float(vendor["coil"]["amplitude"]) * self.coil_jitter,
            b1_centre=field["b1_centre"] * self.b1_jitter,
        )
        return to_convention(raw, size), lesion


def subject_strata(subjects: int) -> list[tuple[str, str]]:
    """(manufacturer, field strength) per subject: all eight pairs in turn, so classes balance."""
    pairs = [(m, f) for m in MANUFACTURERS for f in FIELD_STRENGTHS]
    return [pairs[i % len(pairs)] for i in range(subjects)]


def synthesize(
    out_dir: str | Path,
    size: int = DEFAULT_SIZE,
    subjects: int = DEFAULT_SUBJECTS,
    slices_per_subject: int = DEFAULT_SLICES_PER_SUBJECT,
    seed: int = DEFAULT_SEED,
    progress: Callable[[int], None] | None = None,
    protocol: str = DEFAULT_PROTOCOL,
) -> Path:
    """Write the built-in multi-vendor dataset directory and return its path.

    Deterministic for a given seed: subject ``i`` is drawn from ``default_rng([seed, i])``, so the
    shards are byte-identical across runs. ``progress`` is called with 1 after each subject.
    ``protocol`` (:data:`PROTOCOLS`) sets how the 3T protocol relates to the 1.5T one; the
    anatomy, vendors and noise draws do not depend on it.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r} (one of {', '.join(PROTOCOLS)})")
    if size < 8:
        raise ValueError(f"size {size} too small (minimum 8)")
    if subjects < 1 or slices_per_subject < 1:
        raise ValueError("subjects and slices_per_subject must be at least 1")
    out_dir = Path(out_dir)
    strata = subject_strata(subjects)
    sims = [SimSubject(i, seed, m, f, protocol) for i, (m, f) in enumerate(strata)]
    splits = split_by_subject({s.subject_id: f"{s.manufacturer}|{s.field_strength}" for s in sims}, seed=seed)
    classes = {
        "manufacturer": MANUFACTURERS,
        "field_strength": FIELD_STRENGTHS,
        "modality": SYNTH_MODALITIES,
        "lesion": LESION,
    }
    made_by = made_by_record(size, subjects, slices_per_subject, seed, protocol)
    with DatasetWriter(out_dir, image_size=size, classes=classes, splits=splits, made_by=made_by) as writer:
        for sim in sims:
            for modality, slice_index in sim.slice_plan(slices_per_subject):
                image, lesion = sim.render(modality, slice_index, size)
                writer.add(
                    SliceRecord(
                        image=image,
                        subject=sim.subject_id,
                        manufacturer=sim.manufacturer,
                        field_strength=sim.field_strength,
                        modality=modality,
                        source_volume=f"{sim.subject_id}/{modality}",
                        slice_index=slice_index,
                        lesion=LESION[1] if lesion else LESION[0],
                    )
                )
            if progress is not None:
                progress(1)
    return out_dir


def made_by_record(size: int, subjects: int, slices_per_subject: int, seed: int, protocol: str = DEFAULT_PROTOCOL) -> dict:
    """Provenance for ``dataset.json``: generator, version, seed, options and every parameter."""
    from geco_tf import __version__

    return {
        "generator": GENERATOR,
        "version": __version__,
        "seed": seed,
        "options": {"size": size, "subjects": subjects, "slices_per_subject": slices_per_subject, "protocol": protocol},
        "anatomy": {
            "template": "MNI152 2009a symmetric (nilearn wheel): " + ", ".join(anatomy.TEMPLATE_FILES.values()),
            "slice_range_mm": list(anatomy.SLICE_RANGE_MM),
            "slice_spacing_mm": SLICE_SPACING_MM,
            "slice_origin_mm": SLICE_ORIGIN_MM,
            "fov_mm": anatomy.FOV_MM,
            "render_matrix": 2 * size,
            "lesion_fraction": LESION_FRACTION,
            "lesion_min_area_mm2": LESION_MIN_AREA_MM2,
        },
        "tissues": TISSUE_PARAMS,
        "gadolinium_mM": GADOLINIUM_MM,
        "gadolinium_relaxivity": GD_RELAXIVITY,
        "sequences": SEQUENCES,
        "field_strengths": FIELDS,
        "protocol": {"name": protocol, "changes_from_shared": PROTOCOLS[protocol]},
        "vendors": VENDORS,
    }
