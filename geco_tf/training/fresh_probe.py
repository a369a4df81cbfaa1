"""A fresh probe per epoch, so that the best-epoch choice cannot reward a fooled sparring partner.

The co-trained classifiers see the generator move every step; an epoch where they happen to be
behind looks like removal while the signature is intact. On the built-in data a run kept its
epoch 5 (co-trained validation accuracy 0.448) where a DDS classifier trained afresh still found
the manufacturer in 87% of test slices (docs/results.md, run E23). A model that has never played
the game cannot be behind: after every epoch, :func:`fresh_probe_accuracy` fits the report's
Fourier-magnitude linear probe (``geco_tf.evaluation.probes``) on the generated *training*
slices and scores it on the generated *validation* slices. ``select_best`` then counts the
highest of the co-trained and fresh accuracies (``geco_tf.training.run.validation_leakage``).

It is a linear model on a few hundred spectral features, fitted in seconds: cheap enough for
every epoch, and blind to nothing the spectrum shows (apodisation, matrix size, noise colour).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from geco_tf.data.dataset import DatasetInfo
from geco_tf.data.pipeline import make_dataset
from geco_tf.evaluation.probes import fit_predict_linear, fourier_features

#: Probes this option accepts (``--selection-probe``): ``none`` keeps the design's rule as
#: written (co-trained accuracies only).
SELECTION_PROBES = ("fourier", "none")

#: At most this many training slices (a fixed, seeded subset) fit the probe, so its cost per
#: epoch is bounded on large datasets (4096 slices of 64 x 64: ~5 s on two CPU cores).
PROBE_TRAIN_IMAGES = 4096


def generated_features(
    generator: tf.keras.Model,
    data: DatasetInfo,
    target: str,
    splits: dict[str, int | None],
    seed: int = 0,
    batch_size: int = 64,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Fourier features of G(x) and labels for each split in ``splits`` (split -> at most that
    many slices, the same seeded subset on every call; None = all), computed batch by batch so
    no split is held in memory, through one traced inference function for all splits."""

    @tf.function(reduce_retracing=True)
    def generate(x):
        return tf.cast(generator(x, training=False), tf.float32)

    out = {}
    for split, max_images in splits.items():
        shuffle = max_images is not None and data.count(split, target) > max_images
        ds = make_dataset(data, split, target, batch_size, shuffle=shuffle, seed=seed, cache=False)
        if shuffle:
            ds = ds.unbatch().take(max_images).batch(batch_size)
        features, labels = [], []
        for x, y in ds:
            features.append(fourier_features(generate(x).numpy()))
            labels.append(y.numpy())
        if features:
            out[split] = (np.concatenate(features), np.concatenate(labels))
        else:
            out[split] = (np.zeros((0, 0), np.float32), np.zeros((0,), np.int64))
    return out


def probe_features(probe: str):
    """The features ``probe`` is fitted on, as a function of generated images [N, H, W, 1]
    (NumPy) -> [N, F]; None for ``probe="none"``."""
    if probe == "none":
        return None
    if probe not in SELECTION_PROBES:
        raise ValueError(f"unknown selection probe {probe!r}; choose one of {', '.join(SELECTION_PROBES)}")
    return fourier_features


def probe_accuracy(f_train: np.ndarray, y_train: np.ndarray, f_val: np.ndarray, y_val: np.ndarray) -> float | None:
    """Validation accuracy of the linear probe fitted from scratch on ``(f_train, y_train)``;
    None when either split is empty."""
    if not len(f_train) or not len(f_val):
        return None
    return float(np.mean(fit_predict_linear(f_train, y_train, f_val) == y_val))


def fresh_probe_accuracy(
    generator: tf.keras.Model, data: DatasetInfo, target: str, probe: str = "fourier", seed: int = 0
) -> float | None:
    """Validation accuracy of a probe fitted from scratch on G(train), or None for
    ``probe="none"`` or a split without slices. (A run fits the same probe in
    :func:`geco_tf.training.validation.validate_epoch`, on a seeded shuffle of the same subset,
    sharing G's passes with precise BN and the validation metrics.)"""
    if probe_features(probe) is None:
        return None
    features = generated_features(generator, data, target, {"train": PROBE_TRAIN_IMAGES, "val": None}, seed)
    return probe_accuracy(*features["train"], *features["val"])
