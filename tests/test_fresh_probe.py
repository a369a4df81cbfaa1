"""The fresh probe the best-epoch rule consults after every epoch (geco_tf/training/fresh_probe.py)."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from geco_tf.data.dataset import open_dataset
from geco_tf.training.fresh_probe import fresh_probe_accuracy, generated_features
from geco_tf.training.run import select_best, validation_leakage


def test_fresh_probe_finds_an_intact_signature_and_not_an_erased_one(synth_data):
    """On the built-in data the scanners differ in k-space (acquired matrix, apodisation, noise
    colour): the probe finds the manufacturer on unchanged slices and nothing on blank ones."""
    data = open_dataset(synth_data)
    identity = keras.layers.Identity()
    erase = keras.layers.Lambda(lambda x: 0.0 * x)  # every slice the same: nothing left to find
    intact = fresh_probe_accuracy(identity, data, "manufacturer")
    erased = fresh_probe_accuracy(erase, data, "manufacturer")
    assert intact >= 0.8, intact  # 0.875 on this 32-slice validation split
    _, y_val = generated_features(identity, data, "manufacturer", {"val": None})["val"]
    majority = np.bincount(y_val).max() / len(y_val)
    assert erased <= majority + 1e-9, (erased, majority)
    assert fresh_probe_accuracy(identity, data, "manufacturer", probe="none") is None
    with pytest.raises(ValueError, match="selection probe"):
        fresh_probe_accuracy(identity, data, "manufacturer", probe="cnn")


def test_generated_features_takes_the_same_bounded_subset_every_time(tiny_data):
    data = open_dataset(tiny_data)
    identity = keras.layers.Identity()
    n_train = data.count("train", "manufacturer")
    f_all, y_all = generated_features(identity, data, "manufacturer", {"train": None})["train"]
    assert len(f_all) == len(y_all) == n_train
    f1, y1 = generated_features(identity, data, "manufacturer", {"train": n_train // 2}, seed=3)["train"]
    f2, y2 = generated_features(identity, data, "manufacturer", {"train": n_train // 2}, seed=3)["train"]
    assert len(f1) == n_train // 2 and np.array_equal(y1, y2) and np.allclose(f1, f2)


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
