"""The Fourier-magnitude linear probe: spectral features and a logistic regression on them.

Training and evaluation both ask "does a model that has never played the game find the scanner
in these images?" with the same cheap probe: training after every epoch to judge the epoch
(``fresh_probe.py``, ``validation.py``), evaluation as one of its two fresh audits
(``geco_tf.evaluation.probes``). It lives here, below both, so it is written once.

The probe has no convolution at all: it sees k-space, where apodisation filters, zero-filled
matrices and noise colour live. The magnitude discards phase, i.e. where the anatomy sits, and
keeps how energy is spread over spatial frequencies, which is what reconstruction filters and
noise change. A linear model on a few hundred features fits in seconds on two CPU cores.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize

#: Fourier features are block-averaged to at most this many bins per axis (a 512x512 slice must
#: not become 130k logistic-regression features).
FOURIER_BINS = 32


def fourier_features(images: np.ndarray, bins: int = FOURIER_BINS) -> np.ndarray:
    """Fourier-magnitude features [N, H, W, 1] -> [N, F]: the coarse 2-D spectrum
    (:func:`block_spectrum` at ``bins // 4`` per axis, anisotropic effects such as an acquired
    matrix) and the radial log-power profile (:func:`radial_spectrum`, isotropic effects such as
    apodisation and noise colour). Few features, so a probe fitted on a hundred slices does not
    just memorise anatomy."""
    return np.concatenate([block_spectrum(images, max(1, bins // 4)), radial_spectrum(images, bins)], axis=1)


def radial_spectrum(images: np.ndarray, bins: int = FOURIER_BINS) -> np.ndarray:
    """Mean log power per ring of spatial frequency, at most ``bins`` rings: [N, H, W, 1] -> [N, R]."""
    x = np.asarray(images, np.float32)
    if x.ndim == 4:
        x = x[..., 0]
    n, h, w = x.shape
    power = np.log(np.abs(np.fft.fftshift(np.fft.fft2(x), axes=(1, 2))) ** 2 + 1e-6)  # [N, H, W]
    yy, xx = np.mgrid[:h, :w]
    radius = np.hypot(yy - h // 2, xx - w // 2)
    ring = np.minimum((radius / (radius.max() + 1e-9) * bins).astype(np.int64), bins - 1).ravel()
    rings = np.eye(bins, dtype=np.float32)[ring]  # [H*W, R] one-hot: one matrix product below
    counts = rings.sum(axis=0)
    sums = power.reshape(n, -1).astype(np.float32) @ rings
    return (sums / np.maximum(counts, 1))[:, counts > 0]


def block_spectrum(images: np.ndarray, bins: int = FOURIER_BINS) -> np.ndarray:
    """log(1 + |FFT2|) of each image, centred, folded onto its non-negative half-plane, and
    block-averaged to at most ``bins`` x ``bins``: [N, H, W, 1] -> [N, F]."""
    x = np.asarray(images, np.float32)
    if x.ndim == 4:
        x = x[..., 0]
    spectrum = np.log1p(np.abs(np.fft.rfft2(x, axes=(1, 2))))  # [N, H, W//2+1]
    spectrum = np.fft.fftshift(spectrum, axes=1)
    n, h, w = spectrum.shape
    fh, fw = max(1, -(-h // bins)), max(1, -(-w // bins))
    ph, pw = (-h) % fh, (-w) % fw
    spectrum = np.pad(spectrum, ((0, 0), (0, ph), (0, pw)), mode="edge")
    h2, w2 = spectrum.shape[1] // fh, spectrum.shape[2] // fw
    return spectrum.reshape(n, h2, fh, w2, fw).mean(axis=(2, 4)).reshape(n, -1)


def fit_predict_linear(
    features_train: np.ndarray, y_train: np.ndarray, features_test: np.ndarray, c: float = 1.0
) -> np.ndarray:
    """Standardise features on the training set, fit :func:`fit_logistic`, predict the test set."""
    mean, std = features_train.mean(axis=0), features_train.std(axis=0) + 1e-8
    y = np.asarray(y_train).reshape(-1).astype(np.int64)
    weights = fit_logistic((features_train - mean) / std, y, int(y.max()) + 1, c=c)
    return predict_logistic(weights, (features_test - mean) / std)


def fit_logistic(features: np.ndarray, labels: np.ndarray, num_classes: int, c: float = 1.0) -> np.ndarray:
    """Multinomial logistic regression with an L2 penalty ``1 / (2c) |W|^2`` (bias unpenalised),
    fitted by L-BFGS on the exact gradient. Returns W [F + 1, C] (last row the bias).

    Written on scipy rather than taken from scikit-learn to keep the package's dependencies to
    those it already has; it is the same objective as sklearn's ``LogisticRegression(C=c)``.
    """
    x = np.concatenate([features, np.ones((len(features), 1))], axis=1).astype(np.float64)
    onehot = np.eye(num_classes)[labels]
    penalty = np.ones((x.shape[1], 1))
    penalty[-1] = 0.0

    def loss_and_grad(flat: np.ndarray) -> tuple[float, np.ndarray]:
        w = flat.reshape(x.shape[1], num_classes)
        logits = x @ w
        logits -= logits.max(axis=1, keepdims=True)
        log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        loss = -(onehot * log_p).sum() + 0.5 / c * ((w**2) * penalty).sum()
        grad = x.T @ (np.exp(log_p) - onehot) + (w * penalty) / c
        return float(loss), grad.ravel()

    start = np.zeros(x.shape[1] * num_classes)
    result = minimize(loss_and_grad, start, jac=True, method="L-BFGS-B", options={"maxiter": 500})
    return result.x.reshape(x.shape[1], num_classes)


def predict_logistic(weights: np.ndarray, features: np.ndarray) -> np.ndarray:
    """Class predictions of :func:`fit_logistic` weights."""
    return np.argmax(features @ weights[:-1] + weights[-1], axis=1)
