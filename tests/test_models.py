"""Models save and load as .keras, generators take any size, a frozen backbone reloads frozen."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from geco_tf.models import (
    Discriminator,
    MultiResidualGenerator,
    ResidualGenerator,
    UNetGenerator,
    build_classifier,
)
from geco_tf.models.classifiers import feature_size

X = np.random.default_rng(0).uniform(-1, 1, (2, 64, 64, 1)).astype("float32")


@pytest.mark.parametrize(
    "make",
    [
        lambda: UNetGenerator(depth=2, base_filters=4),
        lambda: ResidualGenerator(depth=2, base_filters=4),
        lambda: MultiResidualGenerator(filters=8),
        lambda: build_classifier("dds", 4, 64),
        lambda: build_classifier("maxpool", 4, 64),
        lambda: Discriminator(base_filters=8),
    ],
)
def test_save_load_round_trip(tmp_path, make):
    model = make()
    before = np.asarray(model(X))
    path = tmp_path / "model.keras"
    model.save(path)
    again = keras.models.load_model(path)
    np.testing.assert_array_equal(np.asarray(again(X)), before)
    assert again.get_config() == model.get_config()


def test_generators_keep_any_size_and_range():
    odd = np.random.default_rng(1).uniform(-1, 1, (1, 50, 70, 1)).astype("float32")
    for gen in (UNetGenerator(depth=3, base_filters=4), UNetGenerator(depth=2, base_filters=4, input_skip=True)):
        out = np.asarray(gen(odd))
        assert out.shape == odd.shape and np.all(np.abs(out) <= 1.0)


def test_dds_padding_choice_follows_feature_size():
    assert feature_size(64, "valid") == 0 and feature_size(256, "valid") == 5
    assert build_classifier("dds", 4, 64).padding == "same"
    assert build_classifier("dds", 4, 256).padding == "valid"
    with pytest.raises(ValueError, match="maxpool"):
        build_classifier("dds", 4, 64, padding="valid")


def test_frozen_backbone_config_round_trip_freezes_its_sublayers():
    from geco_tf.models.classifiers import ConvBackbone

    config = {**ConvBackbone(padding="same").get_config(), "trainable": False}
    again = ConvBackbone.from_config(config)
    again(X)
    assert not again.trainable
    assert again.weights and all(not w.trainable for w in again.weights)
    trainable = ConvBackbone.from_config({**config, "trainable": True})
    trainable(X)
    assert all(w.trainable for w in trainable.weights if "moving" not in w.path)
