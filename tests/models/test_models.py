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
from geco_tf.models.backbone import feature_size

X = np.random.default_rng(0).uniform(-1, 1, (2, 64, 64, 1)).astype("float32")


@pytest.mark.parametrize(
    "make",
    [
        lambda: UNetGenerator(depth=2, base_filters=4),
        lambda: UNetGenerator(depth=2, base_filters=4, input_skip=False),
        lambda: UNetGenerator(depth=2, base_filters=4, norm="batch"),
        lambda: UNetGenerator(depth=2, base_filters=4, input_skip=True, output_band=(0.8, 0.85)),
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


def _power_beyond(images: np.ndarray, axis: int, cutoff: float) -> float:
    """Share of spectral power at |k| > cutoff (fraction of Nyquist) along image axis 0 or 1."""
    power = np.abs(np.fft.fft2(images[..., 0])) ** 2
    k = np.abs(np.fft.fftfreq(images.shape[1 + axis]) * 2)
    beyond = power[:, k > cutoff, :] if axis == 0 else power[:, :, k > cutoff]
    return float(beyond.sum() / power.sum())


def test_band_limit_cuts_k_space_beyond_its_band_and_keeps_the_band():
    """BandLimit removes what lies beyond its band along each axis (rows 0.6, columns 0.8 here),
    passes a pattern inside it unchanged, and does so at any size."""
    from geco_tf.models.band import BandLimit

    noise = np.random.default_rng(3).uniform(-0.5, 0.5, (2, 48, 40, 1)).astype("float32")
    low = np.asarray(BandLimit((0.6, 0.8))(noise))
    assert low.shape == noise.shape
    assert _power_beyond(noise, 0, 0.7) > 0.2 and _power_beyond(low, 0, 0.7) < 1e-3
    assert _power_beyond(noise, 1, 0.95) > 0.02 and _power_beyond(low, 1, 0.95) < 1e-3
    assert _power_beyond(low, 1, 0.7) > 0.05  # the columns keep their wider band
    rows, cols = np.meshgrid(np.arange(48), np.arange(40), indexing="ij")
    inside = (0.5 * np.cos(2 * np.pi * 9 / 48 * rows) * np.cos(2 * np.pi * 12 / 40 * cols))[None, ..., None]  # 0.375, 0.6 Nyquist
    np.testing.assert_allclose(np.asarray(BandLimit((0.6, 0.8))(inside.astype("float32"))), inside, atol=2e-3)
    with pytest.raises(ValueError, match="fractions of Nyquist"):
        BandLimit((0.0, 0.5))


def test_band_limit_equals_the_fft_filter_with_its_mask():
    """The two matrix products are the FFT low-pass with the layer's mask. (Batched matmuls of
    a 4-D tensor by a matrix gave wrong numbers under TF 2.21's oneDNN at this shape.)"""
    from geco_tf.models.band import BandLimit, band_mask

    x = np.random.default_rng(4).uniform(-0.5, 0.5, (2, 48, 40, 1)).astype("float32")
    mask = np.asarray(band_mask(48, 0.6))[:, None] * np.asarray(band_mask(40, 0.8))[None, :]
    expected = np.real(np.fft.ifft2(np.fft.fft2(x[..., 0]) * mask))[..., None]
    np.testing.assert_allclose(np.asarray(BandLimit((0.6, 0.8))(x)), expected, atol=1e-4)


def test_generator_output_band_limits_every_output():
    """With ``output_band`` the U-Net's output has no power beyond the band, from the first step."""
    gen = UNetGenerator(depth=2, base_filters=4, input_skip=True, output_band=(0.8, 0.85))
    out = np.asarray(gen(X))
    assert _power_beyond(X, 0, 0.9) > 0.05 and _power_beyond(out, 0, 0.9) < 1e-3
    assert np.all(np.abs(out) <= 1.0)


def test_dds_padding_choice_follows_feature_size():
    assert feature_size(64, "valid") == 0 and feature_size(256, "valid") == 5
    assert build_classifier("dds", 4, 64).padding == "same"
    assert build_classifier("dds", 4, 256).padding == "valid"
    with pytest.raises(ValueError, match="maxpool"):
        build_classifier("dds", 4, 64, padding="valid")


def test_classifier_prelu_is_per_channel_unless_asked_for_per_position():
    """GECO's (and the audit's) classifier shares PReLU alphas over space at every size; the
    DeepDicomSort layout (one alpha per position) is an explicit choice."""
    for size in (64, 256):
        assert build_classifier("dds", 4, size).backbone.prelu_shared_axes == [1, 2]
    assert build_classifier("dds", 4, 256, prelu="position").backbone.prelu_shared_axes is None
    with pytest.raises(ValueError, match="per-channel"):
        build_classifier("maxpool", 4, 256, prelu="position")
    with pytest.raises(ValueError, match="PReLU layout"):
        build_classifier("dds", 4, 256, prelu="pixel")


def test_files_saved_with_the_keras_normalisation_layers_still_load(tmp_path, monkeypatch):
    """Models saved before geco_tf had its own normalisation layers (Keras's BatchNormalization
    and GroupNormalization(groups=-1)) load into the new layers with the same outputs."""
    from geco_tf.models import normalization

    makers = {
        "classifier": lambda: build_classifier("dds", 4, 64),
        "generator": lambda: UNetGenerator(depth=2, base_filters=4),
        "batch_norm_generator": lambda: UNetGenerator(depth=2, base_filters=4, norm="batch"),
    }
    saved = {}
    with monkeypatch.context() as patch:
        patch.setattr(normalization, "BatchNormalization", keras.layers.BatchNormalization)
        patch.setattr(
            normalization,
            "InstanceNormalization",
            lambda epsilon, name: keras.layers.GroupNormalization(groups=-1, epsilon=epsilon, name=name),
        )
        for name, make in makers.items():
            model = make()
            model(X)
            for w in model.weights:  # non-trivial gamma, beta and moving statistics
                w.assign(np.random.default_rng(2).uniform(0.5, 1.5, w.shape).astype("float32"))
            model.save(tmp_path / f"{name}.keras")
            saved[name] = np.asarray(model(X))
    for name, expected in saved.items():
        again = keras.models.load_model(tmp_path / f"{name}.keras")
        np.testing.assert_allclose(np.asarray(again(X)), expected, rtol=1e-5, atol=1e-5)
        layers = list(again._flatten_layers(include_self=False, recursive=True))
        assert not any(
            type(layer) in (keras.layers.BatchNormalization, keras.layers.GroupNormalization) for layer in layers
        )


def test_models_use_the_fused_normalisation_layers():
    from geco_tf.models.normalization import BatchNormalization, InstanceNormalization

    def kinds(model):
        model(X)
        return {type(layer) for layer in model._flatten_layers(include_self=False, recursive=True)}

    assert BatchNormalization in kinds(build_classifier("dds", 4, 64))
    assert InstanceNormalization in kinds(UNetGenerator(depth=2, base_filters=4))
    assert BatchNormalization in kinds(UNetGenerator(depth=2, base_filters=4, norm="batch"))


def test_frozen_backbone_config_round_trip_freezes_its_sublayers():
    from geco_tf.models.backbone import ConvBackbone

    config = {**ConvBackbone(padding="same").get_config(), "trainable": False}
    again = ConvBackbone.from_config(config)
    again(X)
    assert not again.trainable
    assert again.weights and all(not w.trainable for w in again.weights)
    trainable = ConvBackbone.from_config({**config, "trainable": True})
    trainable(X)
    assert all(w.trainable for w in trainable.weights if "moving" not in w.path)


@pytest.mark.parametrize("kind", ["dds", "maxpool"])
def test_classifier_saved_with_a_frozen_backbone_reloads_frozen(tmp_path, kind):
    """Fine-tuning a head on a frozen backbone, saving, and loading must not thaw the backbone
    (it would then train and update its batch-norm statistics on the next fit)."""
    model = build_classifier(kind, 4, 64)
    model(X)
    model.backbone.trainable = False
    frozen_count = len(model.trainable_weights)
    assert frozen_count < len(model.weights)
    model.save(tmp_path / "frozen.keras")
    again = keras.models.load_model(tmp_path / "frozen.keras")
    assert not again.backbone.trainable and len(again.trainable_weights) == frozen_count
    np.testing.assert_array_equal(np.asarray(again(X)), np.asarray(model(X)))
    assert build_classifier(kind, 4, 64).get_config()["backbone_trainable"] is True


def test_the_unet_starts_as_the_identity_unless_asked_otherwise():
    """``input_skip`` (the default, as the trainer's): G(X) = tanh(atanh(0.999 X)) ~ X at
    initialisation; without it (the paper's network) a fresh U-Net is far from the identity."""
    x = np.clip(X, -0.99, 0.99)
    np.testing.assert_allclose(np.asarray(UNetGenerator(depth=2, base_filters=4)(x)), 0.999 * x, atol=1e-5)
    assert np.abs(np.asarray(UNetGenerator(depth=2, base_filters=4, input_skip=False)(x)) - x).mean() > 0.1
    # the residual generator's body stays the paper's (it adds its own skip: X + alpha G(X))
    assert ResidualGenerator(depth=2, base_filters=4).body.input_skip is False


def test_a_unet_saved_before_the_removed_arguments_loads_when_they_were_off():
    """Generators saved before edit_space, noise channels etc. were deleted still load when each
    was off; one that used them is refused by name."""
    config = UNetGenerator(depth=2, base_filters=4).get_config()
    old = {**config, "edit_space": "logit", "linear_filter": 0, "noise_channels": 0, "background_gain": None,
           "zero_background": False}
    assert UNetGenerator.from_config(old).get_config() == config
    with pytest.raises(ValueError, match="noise_channels"):
        UNetGenerator.from_config({**old, "noise_channels": 1})
