"""Models save and load as .keras, generators take any size, a frozen backbone reloads frozen."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

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


def test_noise_channels_draw_afresh_per_call_and_a_given_draw_reproduces(tmp_path):
    """A generator with noise channels is stochastic (an independent draw per call, so it can
    write noise texture an image lacks), reproducible given the draw, and saves and loads."""
    gen = UNetGenerator(depth=2, base_filters=4, noise_channels=2)
    assert np.abs(np.asarray(gen(X)) - np.asarray(gen(X))).max() > 1e-3
    z = np.random.default_rng(2).standard_normal((2, 64, 64, 2)).astype("float32")
    fixed = np.asarray(gen(X, noise=z))
    np.testing.assert_array_equal(np.asarray(gen(X, noise=z)), fixed)
    gen.save(tmp_path / "noise.keras")
    again = keras.models.load_model(tmp_path / "noise.keras")
    assert again.get_config()["noise_channels"] == 2
    np.testing.assert_array_equal(np.asarray(again(X, noise=z)), fixed)
    odd = np.asarray(gen(X[:1, :50, :37]))  # any size, noise drawn at the input's size
    assert odd.shape == (1, 50, 37, 1) and np.all(np.abs(odd) <= 1.0)


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
    from geco_tf.models.classifiers import ConvBackbone

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


def _head_in_noise(sigmas, size=48, seed=4):
    """Slices in [-1, 1]: a bright disc (the head) in Rayleigh noise of scale sigma (on [0, 1])."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    disc = np.hypot(yy - size / 2, xx - size / 2) < size / 4
    images = []
    for sigma in sigmas:
        magnitude = np.abs(sigma * (rng.standard_normal((size, size)) + 1j * rng.standard_normal((size, size))))
        images.append(np.where(disc, 0.6, magnitude) * 2.0 - 1.0)
    return np.asarray(images, np.float32)[..., None], disc


def test_background_gain_scales_the_air_and_never_the_head():
    """BackgroundGain is the identity at initialisation; with a gain g it multiplies the air's
    noise level by exactly g (Rayleigh noise is a scale family) and leaves the head and its margin
    untouched."""
    from geco_tf.models.background import BackgroundGain, air_mask

    x, disc = _head_in_noise([0.005, 0.01])
    layer = BackgroundGain(level=(-4.0, 0.5))
    np.testing.assert_array_equal(np.asarray(layer(x, x)), x)
    layer.offset.assign(0.01)  # g = exp(1.5 tanh(0.2)) = 1.35 for every slice (slope 0)
    gain = np.asarray(layer.gain(x))
    np.testing.assert_allclose(gain, np.exp(1.5 * np.tanh(0.2)), rtol=1e-5)
    y = np.asarray(layer(x, x))
    np.testing.assert_allclose(np.asarray(layer.measure(y)) - np.asarray(layer.measure(x)), np.log(gain), atol=0.01)
    untouched = np.asarray(air_mask(x))[..., 0] == 0.0
    assert untouched[:, disc].all()
    np.testing.assert_array_equal(y[..., 0][untouched], x[..., 0][untouched])


def test_background_gain_learns_to_equalise_noise_levels_in_tens_of_steps():
    """The job it is for: slices of two noise levels (a factor 2 apart) are brought to one level
    by a few tens of Adam steps at the GECO default learning rate (1e-3), through the slope."""
    from geco_tf.models.background import BackgroundGain, background_level

    x, _ = _head_in_noise([0.005, 0.01, 0.005, 0.01])
    layer = BackgroundGain(level=background_level([x]))
    measured = np.asarray(layer.measure(x))
    assert measured[1] - measured[0] > 0.6  # log 2 apart
    target = tf.constant(float(measured.mean()))
    optimizer = keras.optimizers.Adam(1e-3)
    for _ in range(40):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(layer.measure(layer(x, x)) - target))
        optimizer.apply_gradients(zip(tape.gradient(loss, layer.trainable_weights), layer.trainable_weights))
    after = np.asarray(layer.measure(layer(x, x)))
    assert np.abs(after - float(target)).max() < 0.1, after
    assert float(layer.slope.numpy()) < 0.0  # the noisier slice gets the smaller gain


def test_background_zero_blackens_the_air_and_never_the_head(tmp_path):
    """BackgroundZero: exactly -1 wherever the input's air mask is 1 (whatever the generator
    wrote there), the generator's output bit for bit on the head and its margin; a U-Net with it
    saves and loads."""
    from geco_tf.models.background import BackgroundZero, air_mask

    x, disc = _head_in_noise([0.005, 0.02])
    y = np.clip(x + 0.05, -1.0, 1.0)  # some edit everywhere, the air included
    out = np.asarray(BackgroundZero()(y, x))
    air = np.asarray(air_mask(x))[..., 0] == 1.0
    assert 0.2 < air.mean() < 0.9 and not air[:, disc].any()
    assert (out[..., 0][air] == -1.0).all()
    np.testing.assert_array_equal(out[..., 0][~air], y[..., 0][~air])

    gen = UNetGenerator(depth=2, base_filters=4, input_skip=True, output_band=(0.8, 0.85), zero_background=True)
    g = np.asarray(gen(x))
    plain = UNetGenerator(depth=2, base_filters=4, input_skip=True, output_band=(0.8, 0.85))
    plain(x)
    plain.set_weights(gen.get_weights())  # the layer has no weights: the same U-Net without it
    assert (g[..., 0][air] == -1.0).all()
    np.testing.assert_array_equal(g[..., 0][~air], np.asarray(plain(x))[..., 0][~air])
    gen.save(tmp_path / "zero.keras")
    again = keras.models.load_model(tmp_path / "zero.keras")
    assert again.get_config()["zero_background"] is True
    np.testing.assert_array_equal(np.asarray(again(x)), g)


def test_unet_with_background_gain_saves_and_loads(tmp_path):
    x, _ = _head_in_noise([0.01, 0.02], size=40)
    gen = UNetGenerator(depth=2, base_filters=4, input_skip=True, background_gain=(-4.0, 0.5))
    gen.background.offset.assign(0.02)
    out = np.asarray(gen(x))
    gen.save(tmp_path / "gain.keras")
    again = keras.models.load_model(tmp_path / "gain.keras")
    assert again.get_config()["background_gain"] == [-4.0, 0.5]
    np.testing.assert_array_equal(np.asarray(again(x)), out)
