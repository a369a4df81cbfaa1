"""Cheap, fresh classifiers used as probes by the report.

Two very different probes, so that one architecture's blind spot cannot pass for removal:

* :func:`fit_predict_cnn` -- a small CNN (four 3x3 convolutions with batch norm, global average
  *and* max pooling), trained to convergence (early stop on held-out training slices). Scanner signatures on the built-in data are reconstruction effects (apodisation, noise
  texture, ringing, bias), i.e. local texture statistics pooled over the image, which this
  architecture reads directly. It is small so that the leakage-versus-SSIM plot can train one per
  harmonisation baseline on two shared CPU cores, and the utility check two more.
* :func:`fit_predict_fourier` -- a linear probe (logistic regression) on the log-magnitude
  Fourier spectrum. It has no convolution at all: it sees k-space, where apodisation filters,
  zero-filled matrices and noise colour live. A generator that fools convolutional classifiers by
  texture tricks but leaves the spectrum's envelope alone is caught here.

Both train from scratch with a fixed seed and return test predictions, so the caller gets a
confusion matrix and a confidence interval, not just a number.
"""

from __future__ import annotations

import numpy as np

#: Fourier features are block-averaged to at most this many bins per axis (a 512x512 slice must
#: not become 130k logistic-regression features).
FOURIER_BINS = 32


def _small_cnn(num_classes: int, image_size: int, width: int = 16):
    """Four 3x3 convolutions with batch norm. Without batch norm this probe learned the
    manufacturer of *original* built-in slices in some seeds (0.98) and not in others (0.33-0.41
    after 40 epochs): a probe that cannot find the signature on originals proves nothing."""
    import keras
    from keras import layers

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
) -> np.ndarray:
    """Train the small CNN on ``(x_train, y_train)`` from scratch; return class predictions for
    ``x_test``. Images are [N, H, W, 1] in [-1, 1] (any H = W).

    A probe that has not converged reports chance whatever the images hold, so the CNN trains to
    convergence: ``validation_fraction`` of the training slices (random, seeded) are held out, and
    training stops after ``patience`` epochs without a better held-out accuracy (at most
    ``epochs``), keeping the best epoch's weights. The test slices are never seen.
    """
    import keras

    keras.utils.set_random_seed(seed)
    x_train = np.asarray(x_train, np.float32)
    y_train = np.asarray(y_train, np.int32)
    order = np.random.default_rng(seed).permutation(len(x_train))
    n_val = int(round(validation_fraction * len(x_train))) if len(x_train) >= 20 else 0
    val, train = order[:n_val], order[n_val:]
    model = _small_cnn(num_classes, int(x_train.shape[1]))
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    callbacks = []
    if n_val:
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor="val_accuracy", mode="max", patience=patience, restore_best_weights=True,
            start_from_epoch=min(PROBE_MIN_EPOCHS, max(epochs - patience, 0)),
        ))
    model.fit(
        x_train[train],
        y_train[train],
        validation_data=(x_train[val], y_train[val]) if n_val else None,
        epochs=epochs,
        batch_size=batch_size,
        shuffle=True,
        callbacks=callbacks,
        verbose=0,
    )
    probs = model.predict(np.asarray(x_test, np.float32), batch_size=256, verbose=0)
    return np.argmax(probs, axis=-1)


def fourier_features(images: np.ndarray, bins: int = FOURIER_BINS) -> np.ndarray:
    """Fourier-magnitude features [N, H, W, 1] -> [N, F]: the coarse 2-D spectrum
    (:func:`block_spectrum` at ``bins // 4`` per axis, anisotropic effects such as an acquired
    matrix) and the radial log-power profile (:func:`radial_spectrum`, isotropic effects such as
    apodisation and noise colour). Few features, so a probe fitted on a hundred slices does not
    just memorise anatomy.

    The magnitude discards phase, i.e. where the anatomy sits, and keeps how energy is spread
    over spatial frequencies, which is what reconstruction filters and noise change.
    """
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


def fit_predict_fourier(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, seed: int = 0, c: float = 1.0
) -> np.ndarray:
    """Standardised Fourier-magnitude features + multinomial logistic regression; predictions
    for ``x_test``. (``seed`` is accepted for symmetry with the CNN: the fit is deterministic.)"""
    return fit_predict_linear(fourier_features(x_train), y_train, fourier_features(x_test), c=c)


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
    from scipy.optimize import minimize

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
