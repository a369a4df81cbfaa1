"""The spectral adversary: its features are the report's Fourier probe's, it learns what only the
spectrum shows, it saves and loads, and the GECO game trains it and feels it."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy import ndimage

from geco_tf.evaluation.probes import block_spectrum, radial_spectrum
from geco_tf.models import MaxPoolClassifier, UNetGenerator
from geco_tf.models.spectral import SpectralClassifier, coarse_log_spectrum, radial_log_power
from geco_tf.training.geco import GECO


@pytest.mark.parametrize("shape", [(3, 64, 64, 1), (2, 48, 40, 1), (2, 33, 31, 1)])
def test_features_equal_the_fourier_probes(shape):
    x = np.tanh(np.random.default_rng(0).standard_normal(shape)).astype(np.float32)
    np.testing.assert_allclose(radial_log_power(tf.constant(x)).numpy(), radial_spectrum(x, 32), atol=1e-4)
    np.testing.assert_allclose(coarse_log_spectrum(tf.constant(x), 8).numpy(), block_spectrum(x, 8), atol=1e-5)


def _blur_or_not(n: int, seed: int):
    """Noise images, half blurred along the rows (an acquired-matrix effect): same mean and
    nearly the same variance, different spectrum."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 32, 32)).astype(np.float32) * 0.3
    y = np.arange(n) % 2
    x[y == 1] = ndimage.gaussian_filter1d(x[y == 1], 1.0, axis=1) * 1.6
    return x[..., None], y.astype(np.int32)


def test_spectral_classifier_learns_a_spectral_difference():
    keras.utils.set_random_seed(0)
    model = SpectralClassifier(2, hidden=16)
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy", metrics=["accuracy"])
    x, y = _blur_or_not(128, 0)
    model.fit(x, y, epochs=15, batch_size=32, verbose=0)
    xt, yt = _blur_or_not(64, 1)
    assert (model.predict(xt, verbose=0).argmax(-1) == yt).mean() >= 0.9


def test_spectral_classifier_saves_and_loads(tmp_path):
    model = SpectralClassifier(3, grid=4, rings=8, hidden=0)
    x = np.tanh(np.random.default_rng(1).standard_normal((2, 24, 24, 1))).astype(np.float32)
    before = model(x, training=False).numpy()
    model.save(tmp_path / "s.keras")
    loaded = keras.saving.load_model(tmp_path / "s.keras", compile=False)
    assert loaded.get_config()["rings"] == 8 and loaded.get_config()["hidden"] == 0
    np.testing.assert_allclose(loaded(x, training=False).numpy(), before, atol=1e-6)


@pytest.mark.slow
def test_game_trains_the_spectral_adversary_and_the_generator_feels_it():
    keras.utils.set_random_seed(0)

    def game(weight: float) -> GECO:
        keras.utils.set_random_seed(0)
        model = GECO(
            UNetGenerator(depth=2, base_filters=4, input_skip=True),
            MaxPoolClassifier(2, padding="same", dense_units=8, dropout=0.0),
            num_classes=2,
            beta=0.1,
            spectral_classifier=SpectralClassifier(2, hidden=8),
            spectral_weight=weight,
            image_size=32,
        )
        model.compile(
            g_optimizer=keras.optimizers.Adam(1e-3),
            c_optimizer=keras.optimizers.Adam(1e-3),
            s_optimizer=keras.optimizers.Adam(1e-3),
        )
        model.build((None, 32, 32, 1))
        return model

    x, y = _blur_or_not(8, 2)
    model = game(1.0)
    s0 = [v.numpy().copy() for v in model.spectral_classifier.trainable_variables]
    logs = tf.function(model.train_step)((tf.constant(x), tf.constant(y)))
    assert {"spec_loss", "spec_accuracy", "gen_spec_adv_loss"} <= set(logs)
    assert np.isfinite(float(logs["gen_loss"])) and np.isfinite(float(logs["spec_loss"]))
    assert any(not np.allclose(a, b.numpy()) for a, b in zip(s0, model.spectral_classifier.trainable_variables))
    # the generator loss contains the spectral term: weight 0 gives a smaller loss on the same step
    without = tf.function(game(0.0).train_step)((tf.constant(x), tf.constant(y)))
    assert float(logs["gen_loss"]) > float(without["gen_loss"]) + 0.1
    restored = GECO.from_config(model.get_config())
    assert isinstance(restored.spectral_classifier, SpectralClassifier) and restored.spectral_weight == 1.0
