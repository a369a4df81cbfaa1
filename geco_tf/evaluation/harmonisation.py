"""Simple harmonisation baselines that GECO has to beat.

A reviewer's first question is whether a learnt generator is needed at all: maybe a per-image
z-score or a histogram standardisation already hides the scanner, or maybe a blur does, at a
lower cost in fidelity. The report places GECO on the same leakage-versus-SSIM plot as:

* ``identity`` -- the untouched slices (how much leaks with no harmonisation);
* ``zscore`` -- per-image z-score over the head, mapped back onto the training set's mean and
  standard deviation so that the result stays in the [-1, 1] convention and SSIM against the
  original is meaningful;
* ``nyul`` -- Nyul & Udupa piecewise-linear histogram standardisation (landmarks at the 1st,
  10th, ..., 90th, 99th percentiles of the head, standard scale learnt on the training split),
  from the ``intensity-normalization`` package (see ``docs/dependencies.md``);
* ``blur-<sigma>`` -- Gaussian blur, which wipes fine texture (where reconstruction signatures
  live) at a visible price;
* ``kspace`` -- a hand-made harmoniser from the physics of the signatures: keep only the part of
  k-space every scanner acquires (a centred ellipse, by default 85% of the rows' and 90% of the
  columns' extent with a smooth edge) and set the air outside the head to black. It is what a
  generator could learn at best if the signatures were only acquired matrix, apodisation and
  background noise, so it marks the fidelity price of plain filtering.

Every baseline maps [N, H, W, 1] float32 in [-1, 1] to the same shape and range, is fitted on
training images only, and is deterministic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

#: Pixels above this value count as head (the background and padding sit at -1, plus noise).
FOREGROUND_THRESHOLD = -0.8
DEFAULT_SIGMAS = (0.5, 1.0, 2.0)
#: Nyul's standard scale is learnt from at most this many training slices (it is a mean of
#: landmarks; more slices change it by little and cost time).
NYUL_MAX_FIT = 500


def foreground(image: np.ndarray) -> np.ndarray:
    """Boolean mask of head pixels; falls back to all pixels for an (almost) empty slice."""
    mask = image > FOREGROUND_THRESHOLD
    return mask if mask.sum() >= 16 else np.ones_like(mask, dtype=bool)


@dataclass
class Harmoniser:
    """Base class: ``fit`` on training images, then call on any images."""

    name: str = "identity"
    label: str = "identity (no harmonisation)"

    def fit(self, images: np.ndarray) -> Harmoniser:
        return self

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return np.asarray(images, np.float32).copy()


@dataclass
class ZScore(Harmoniser):
    """Per-image z-score over the head, rescaled to the training set's head mean and std."""

    name: str = "zscore"
    label: str = "per-image z-score"
    mean: float = 0.0
    std: float = 0.5

    def fit(self, images: np.ndarray) -> ZScore:
        means, stds = [], []
        for image in np.asarray(images)[..., 0]:
            voi = image[foreground(image)]
            means.append(voi.mean())
            stds.append(voi.std())
        self.mean, self.std = float(np.mean(means)), float(np.mean(stds))
        return self

    def __call__(self, images: np.ndarray) -> np.ndarray:
        out = np.empty_like(np.asarray(images, np.float32))
        for i, image in enumerate(np.asarray(images, np.float32)[..., 0]):
            voi = image[foreground(image)]
            z = (image - voi.mean()) / max(float(voi.std()), 1e-6)
            out[i, ..., 0] = self.mean + self.std * z
        return np.clip(out, -1.0, 1.0)


@dataclass
class Nyul(Harmoniser):
    """Nyul & Udupa histogram standardisation via ``intensity_normalization.NyulNormalizer``."""

    name: str = "nyul"
    label: str = "Nyul histogram standardisation"
    seed: int = 0
    _normalizer: object = field(default=None, repr=False)

    def fit(self, images: np.ndarray) -> Nyul:
        from intensity_normalization.adapters.images import NumpyImageAdapter
        from intensity_normalization.normalizers.population.nyul import NyulNormalizer

        images = np.asarray(images, np.float32)[..., 0]
        if len(images) > NYUL_MAX_FIT:
            pick = np.random.default_rng(self.seed).choice(len(images), NYUL_MAX_FIT, replace=False)
            images = images[np.sort(pick)]
        masks = [foreground(image) for image in images]
        # The standard scale's ends are the mean 1st / 99th head percentiles of the training set,
        # so standardised slices stay in the [-1, 1] convention.
        low = float(np.mean([np.percentile(im[m], 1.0) for im, m in zip(images, masks)]))
        high = float(np.mean([np.percentile(im[m], 99.0) for im, m in zip(images, masks)]))
        self._normalizer = NyulNormalizer(output_min_value=low, output_max_value=high)
        self._normalizer.fit_population(
            [NumpyImageAdapter(im) for im in images], [NumpyImageAdapter(m.astype(np.float32)) for m in masks]
        )
        return self

    def __call__(self, images: np.ndarray) -> np.ndarray:
        from intensity_normalization.adapters.images import NumpyImageAdapter

        if self._normalizer is None:
            raise RuntimeError("Nyul: call fit() on training images first")
        out = np.empty_like(np.asarray(images, np.float32))
        for i, image in enumerate(np.asarray(images, np.float32)[..., 0]):
            mask = NumpyImageAdapter(foreground(image).astype(np.float32))
            out[i, ..., 0] = self._normalizer.transform(NumpyImageAdapter(image), mask).get_data()
        return np.clip(out, -1.0, 1.0)


@dataclass
class GaussianBlur(Harmoniser):
    """Isotropic Gaussian blur of ``sigma`` pixels."""

    sigma: float = 1.0
    name: str = ""
    label: str = ""

    def __post_init__(self) -> None:
        self.name = self.name or f"blur-{self.sigma:g}"
        self.label = self.label or f"Gaussian blur sigma={self.sigma:g} px"

    def __call__(self, images: np.ndarray) -> np.ndarray:
        from scipy.ndimage import gaussian_filter

        x = np.asarray(images, np.float32)
        return gaussian_filter(x, sigma=(0, self.sigma, self.sigma, 0), mode="nearest").astype(np.float32)


def nyul_available() -> bool:
    """Whether the ``intensity-normalization`` package imports (it is the Nyul implementation)."""
    try:
        import intensity_normalization.normalizers.population.nyul  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass
class KSpaceLowpass(Harmoniser):
    """Keep a centred ellipse of k-space (``band`` = its half-axes as fractions of the rows' and
    columns' extent, with a logistic edge of width ``edge``), then black out the air: pixels
    outside the filled head mask (a 5x5 mean above :data:`BACKGROUND_THRESHOLD`) become -1."""

    band: tuple[float, float] = (0.85, 0.9)
    edge: float = 0.05
    name: str = "kspace"
    label: str = ""

    def __post_init__(self) -> None:
        self.label = self.label or f"k-space low-pass {self.band[0]:g} x {self.band[1]:g} + background mask"

    def __call__(self, images: np.ndarray) -> np.ndarray:
        from scipy import ndimage

        x = np.asarray(images, np.float32)[..., 0]
        _, h, w = x.shape
        ky = (np.arange(h) - h // 2) / (h / 2)
        kx = (np.arange(w) - w // 2) / (w / 2)
        radius = np.hypot(ky[:, None] / self.band[0], kx[None, :] / self.band[1])
        weight = np.fft.ifftshift(1.0 / (1.0 + np.exp((radius - 0.9) / self.edge)))
        low = np.clip(np.real(np.fft.ifft2(np.fft.fft2(x) * weight)), -1.0, 1.0)
        smooth = ndimage.uniform_filter(low, size=(1, 5, 5))
        heads = np.stack(
            [ndimage.binary_fill_holes(ndimage.binary_opening(m, iterations=1)) for m in smooth > BACKGROUND_THRESHOLD]
        )
        return np.where(heads, low, -1.0)[..., None].astype(np.float32)


#: A 5x5 mean above this is head, below it air (background sits at -1 plus noise of ~0.01).
BACKGROUND_THRESHOLD = -0.9

BASELINE_KINDS = ("identity", "zscore", "nyul", "blur", "kspace")


def default_baselines(
    sigmas: Sequence[float] = DEFAULT_SIGMAS, seed: int = 0, kinds: Sequence[str] = BASELINE_KINDS
) -> list[Harmoniser]:
    """Identity, z-score, Nyul (when its package is installed), a blur per sigma and the k-space
    low-pass, restricted to ``kinds`` (names from :data:`BASELINE_KINDS`)."""
    unknown = set(kinds) - set(BASELINE_KINDS)
    if unknown:
        raise ValueError(f"unknown baseline(s) {', '.join(sorted(unknown))}: choose from {', '.join(BASELINE_KINDS)}")
    baselines: list[Harmoniser] = []
    if "identity" in kinds:
        baselines.append(Harmoniser())
    if "zscore" in kinds:
        baselines.append(ZScore())
    if "nyul" in kinds and nyul_available():
        baselines.append(Nyul(seed=seed))
    if "blur" in kinds:
        baselines.extend(GaussianBlur(sigma=float(s)) for s in sigmas)
    if "kspace" in kinds:
        baselines.append(KSpaceLowpass())
    return baselines
