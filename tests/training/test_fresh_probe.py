"""The fresh probe the best-epoch rule consults after every epoch (geco_tf/training/fresh_probe.py)."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from geco_tf.data.dataset import open_dataset
from geco_tf.data.pipeline import load_split_arrays
from geco_tf.training.fourier_probe import fourier_features
from geco_tf.training.fresh_probe import probe_accuracy, probe_features
from geco_tf.training.generate import generate
from geco_tf.training.run import select_best, validation_leakage


def _fresh_probe(generator, data) -> float:
    """The selection probe fitted on G(train) and scored on G(val), as ``validate_epoch`` does."""
    (x_train, y_train, _), (x_val, y_val, _) = (load_split_arrays(data, s, "manufacturer") for s in ("train", "val"))
    features = probe_features("fourier")
    return probe_accuracy(features(generate(generator, x_train)), y_train, features(generate(generator, x_val)), y_val)


def test_fresh_probe_finds_an_intact_signature_and_not_an_erased_one(synth_data):
    """On the built-in data the scanners differ in k-space (acquired matrix, apodisation, noise
    colour): the probe finds the manufacturer on unchanged slices and nothing on blank ones."""
    data = open_dataset(synth_data)
    identity = keras.layers.Identity()
    erase = keras.layers.Lambda(lambda x: 0.0 * x)  # every slice the same: nothing left to find
    intact = _fresh_probe(identity, data)
    erased = _fresh_probe(erase, data)
    assert intact >= 0.8, intact  # 0.875 on this 32-slice validation split
    y_val = load_split_arrays(data, "val", "manufacturer")[1]
    majority = np.bincount(y_val).max() / len(y_val)
    assert erased <= majority + 1e-9, (erased, majority)
    assert probe_features("fourier") is fourier_features and probe_features("none") is None
    with pytest.raises(ValueError, match="selection probe"):
        probe_features("cnn")
    assert probe_accuracy(np.zeros((0, 3)), np.zeros(0), np.zeros((4, 3)), np.zeros(4)) is None


def test_the_best_epoch_must_fool_the_fresh_probe_too():
    rows = [
        {"epoch": 1, "val_accuracy_cotrained": 0.30, "val_accuracy_probe": 0.85, "val_ssim": 0.975},
        {"epoch": 2, "val_accuracy_cotrained": 0.35, "val_accuracy_probe": 0.36, "val_ssim": 0.972},
        {"epoch": 3, "val_accuracy_cotrained": 0.33, "val_accuracy_spectral": 0.40, "val_accuracy_probe": 0.31, "val_ssim": 0.98},
    ]
    assert [validation_leakage(r) for r in rows] == [0.85, 0.36, 0.40]
    assert select_best(rows, 0.97)[0]["epoch"] == 2
    # a run without a probe (or an older history.csv) is judged by its co-trained accuracies
    plain = [{k: v for k, v in r.items() if k != "val_accuracy_probe"} for r in rows]
    assert select_best(plain, 0.97)[0]["epoch"] == 1
