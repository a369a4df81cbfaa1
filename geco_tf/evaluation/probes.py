"""Cheap, fresh classifiers used as probes by the report.

Two very different probes, so that one architecture's blind spot cannot pass for removal:

* :func:`fit_predict_cnn` -- a small CNN (four 3x3 convolutions with batch norm, global average
  *and* max pooling), trained to convergence (early stop on held-out training slices). Scanner signatures on the built-in data are reconstruction effects (apodisation, noise
  texture, ringing, bias), i.e. local texture statistics pooled over the image, which this
  architecture reads directly. It is small so that the leakage-versus-SSIM plot can train one per
  harmonisation baseline on two shared CPU cores, and the utility check two more.
* :func:`fit_predict_fourier` -- a linear probe (logistic regression) on the log-magnitude
  Fourier spectrum (``geco_tf.training.fourier_probe``, shared with training's selection probe). It has no convolution at all: it sees k-space, where apodisation filters,
  zero-filled matrices and noise colour live. A generator that fools convolutional classifiers by
  texture tricks but leaves the spectrum's envelope alone is caught here.

Both train from scratch with a fixed seed (the CNN with ``geco_tf.training.classifier_fit``, the
one best-epoch rule of the package) and return test predictions, so the caller gets a
confusion matrix and a confidence interval, not just a number.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

from geco_tf.progress import QUIET, Progress
from geco_tf.training.classifier_fit import fit_classifier
from geco_tf.training.fourier_probe import (
    FOURIER_BINS,
    block_spectrum,
    fit_predict_linear,
    fourier_features,
    radial_spectrum,
)

__all__ = [
    "FOURIER_BINS", "PROBE_MAX_EPOCHS", "PROBE_MIN_EPOCHS", "PROBE_PATIENCE", "block_spectrum", "fit_predict_cnn",
    "fit_predict_fourier", "fit_predict_linear", "fourier_features", "radial_spectrum", "small_cnn",
]

def small_cnn(num_classes: int, image_size: int, width: int = 16) -> keras.Model:
    """Four 3x3 convolutions with batch norm. Without batch norm this probe learned the
    manufacturer of *original* built-in slices in some seeds (0.98) and not in others (0.33-0.41
    after 40 epochs): a probe that cannot find the signature on originals proves nothing."""
    inputs = keras.Input((image_size, image_size, 1))
    x = inputs
    for filters, stride in ((width, 1), (width, 2), (2 * width, 2), (2 * width, 1)):
        x = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization(momentum=0.9)(x)
        x = layers.ReLU()(x)
    x = layers.Concatenate()([layers.GlobalAveragePooling2D()(x), layers.GlobalMaxPooling2D()(x)])
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32")(x)
    return keras.Model(inputs, outputs, name="probe_cnn")


#: The small CNN trains for at most this many epochs ...
PROBE_MAX_EPOCHS = 40
#: ... and stops after this many without a better held-out accuracy (never before
#: :data:`PROBE_MIN_EPOCHS`: on the built-in data it sits at chance for the first ~6 epochs and
#: then learns the signature, 0.23 after 6 epochs, 0.98 after 20, on original images).
PROBE_PATIENCE = 8
PROBE_MIN_EPOCHS = 12


def fit_predict_cnn(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    num_classes: int,
    epochs: int = PROBE_MAX_EPOCHS,
    seed: int = 0,
    batch_size: int = 32,
    learning_rate: float = 2e-3,
    validation_fraction: float = 0.15,
    patience: int = PROBE_PATIENCE,
    progress: Progress = QUIET,
    desc: str = "small CNN probe",
) -> np.ndarray:
    """Train the small CNN on ``(x_train, y_train)`` from scratch; return class predictions for
    ``x_test``. Images are [N, H, W, 1] in [-1, 1] (any H = W).

    A probe that has not converged reports chance whatever the images hold, so the CNN trains to
    convergence: ``validation_fraction`` of the training slices (random, seeded) are held out, and
    training stops after ``patience`` epochs without a better held-out accuracy (at most
    ``epochs``, never before :data:`PROBE_MIN_EPOCHS`), keeping the best epoch's weights
    (:func:`geco_tf.training.classifier_fit.fit_classifier`). The test slices are never seen.
    """
    keras.utils.set_random_seed(seed)
    x_train = np.asarray(x_train, np.float32)
    y_train = np.asarray(y_train, np.int32)
    order = np.random.default_rng(seed).permutation(len(x_train))
    n_val = int(round(validation_fraction * len(x_train))) if len(x_train) >= 20 else 0
    val, train = order[:n_val], order[n_val:]
    model = small_cnn(num_classes, int(x_train.shape[1]))
    fit_classifier(
        model, (x_train[train], y_train[train]), (x_train[val], y_train[val]) if n_val else None,
        epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, schedule="constant",
        patience=patience, min_epochs=min(PROBE_MIN_EPOCHS, epochs), progress=progress, desc=desc,
    )
    probs = model.predict(np.asarray(x_test, np.float32), batch_size=256, verbose=0)
    return np.argmax(probs, axis=-1)


def fit_predict_fourier(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, seed: int = 0, c: float = 1.0
) -> np.ndarray:
    """Standardised Fourier-magnitude features + multinomial logistic regression; predictions
    for ``x_test``. (``seed`` is accepted for symmetry with the CNN: the fit is deterministic.)"""
    return fit_predict_linear(fourier_features(x_train), y_train, fourier_features(x_test), c=c)
