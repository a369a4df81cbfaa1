"""What a run measures after every epoch (geco_tf/training/validation.py): one pass of the
generator per split must give exactly what the separate computations give."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from geco_tf.data.dataset import open_dataset
from geco_tf.data.pipeline import load_split_arrays, make_dataset
from geco_tf.models import MaxPoolClassifier, UNetGenerator
from geco_tf.models.spectral import SpectralClassifier
from geco_tf.training.batch_norm import PreciseBatchNorm, batch_norm_layers, recalibrate_batch_norm
from geco_tf.training.fourier_probe import fourier_features
from geco_tf.training.fresh_probe import probe_accuracy
from geco_tf.training.geco import GECO
from geco_tf.training.generate import generate
from geco_tf.training.validation import PASS_BATCH, RECALIBRATION_IMAGES, predict_split, validate_epoch


def _stats(network: keras.Model) -> list[np.ndarray]:
    return [v.numpy().copy() for n in batch_norm_layers(network) for v in (n.moving_mean, n.moving_variance)]


def test_precise_batch_norm_is_the_mean_of_the_batch_statistics():
    norm = keras.layers.BatchNormalization(momentum=0.9)
    rng = np.random.default_rng(0)
    batches = [rng.normal(loc, 1.0 + loc, (16, 3)).astype(np.float32) for loc in (0.0, 2.0, 5.0)]
    norm.build((None, 3))
    precise = PreciseBatchNorm(norm, [norm])
    for b in batches:
        precise.update(b)
    np.testing.assert_allclose(norm.moving_mean.numpy(), np.mean([b.mean(0) for b in batches], 0), rtol=1e-5)
    np.testing.assert_allclose(norm.moving_variance.numpy(), np.mean([b.var(0) for b in batches], 0), rtol=1e-4)
    assert norm.momentum == 0.9  # restored


@pytest.mark.slow
def test_validate_epoch_equals_the_separate_passes(tiny_data):
    data = open_dataset(tiny_data)
    keras.utils.set_random_seed(0)
    model = GECO(
        UNetGenerator(depth=2, base_filters=4, input_skip=False),  # random weights: not the identity
        MaxPoolClassifier(4, padding="same", dense_units=16, dropout=0.0),
        num_classes=4,
        beta=0.1,
        spectral_classifier=SpectralClassifier(4),
    )
    model.compile(*(keras.optimizers.Adam() for _ in range(2)), s_optimizer=keras.optimizers.Adam())
    model.build((None, 32, 32, 1))
    networks = (model.classifier, model.spectral_classifier)
    before = [_stats(n) for n in networks]

    row = validate_epoch(model, data, "manufacturer", "fourier", seed=5)
    after = [_stats(n) for n in networks]
    assert all(not np.allclose(a[0], b[0]) for a, b in zip(after, before))  # both were recalibrated

    # precise BN over the same generated batches, network by network, as before the shared pass
    take = int(np.ceil(RECALIBRATION_IMAGES / PASS_BATCH))
    ds = make_dataset(data, "train", "manufacturer", PASS_BATCH, shuffle=True, seed=5, cache=False).take(take)
    generated = [(model.output_generator(x, training=False), y) for x, y in ds]
    for network, stats in zip(networks, after):
        recalibrate_batch_norm(network, batch_norm_layers(network), generated)
        for got, want in zip(stats, _stats(network)):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)

    val = predict_split(model, data, "val", "manufacturer")
    assert row["val_accuracy_cotrained"] == np.mean(val["pred"] == val["labels"])
    assert row["val_accuracy_spectral"] == np.mean(val["pred_spectral"] == val["labels"])
    np.testing.assert_allclose([row["val_ssim"], row["val_psnr"]], [np.mean(val["ssim"]), np.mean(val["psnr"])], rtol=1e-6)
    assert row["val_ssim"] < 0.99  # a random generator changes the slices
    n_val = len(val["labels"])
    (x_train, y_train, _), (x_val, y_val, _) = (load_split_arrays(data, s, "manufacturer") for s in ("train", "val"))
    g = model.output_generator
    probe = probe_accuracy(fourier_features(generate(g, x_train)), y_train, fourier_features(generate(g, x_val)), y_val)
    assert abs(row["val_accuracy_probe"] - probe) <= 1.0 / n_val + 1e-9  # same slices, other order
    assert validate_epoch(model, data, "manufacturer", "none")["val_accuracy_probe"] is None
