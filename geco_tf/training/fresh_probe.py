"""A fresh probe per epoch, so that the best-epoch choice cannot reward a fooled sparring partner.

The co-trained classifiers see the generator move every step; an epoch where they happen to be
behind looks like removal while the signature is intact. On the built-in data a run kept its
epoch 5 (co-trained validation accuracy 0.448) where a DDS classifier trained afresh still found
the manufacturer in 87% of test slices (docs/results.md, run E23). A model that has never played
the game cannot be behind: after every epoch, ``validation.validate_epoch`` fits the
Fourier-magnitude linear probe (``fourier_probe.py``, also one of the report's audits) on the
generated *training* slices and scores it (:func:`probe_accuracy`) on the generated
*validation* slices. ``select_best`` then counts the
highest of the co-trained and fresh accuracies (``geco_tf.training.run.validation_leakage``).

It is a linear model on a few hundred spectral features, fitted in seconds: cheap enough for
every epoch, and blind to nothing the spectrum shows (apodisation, matrix size, noise colour).
"""

from __future__ import annotations

import numpy as np

from geco_tf.training.config import SELECTION_PROBES
from geco_tf.training.fourier_probe import fit_predict_linear, fourier_features

__all__ = ["PROBE_TRAIN_IMAGES", "SELECTION_PROBES", "probe_accuracy", "probe_features"]

#: At most this many training slices (a fixed, seeded subset) fit the probe, so its cost per
#: epoch is bounded on large datasets (4096 slices of 64 x 64: ~5 s on two CPU cores).
PROBE_TRAIN_IMAGES = 4096


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
