"""The one recipe that fits a classifier from scratch (geco_tf/training/classifier_fit.py): which
epoch is kept, when training stops, and that its progress bar shows."""

from __future__ import annotations

import io

import keras
import numpy as np
import pytest

from geco_tf.progress import Progress
from geco_tf.training.classifier_fit import KeepBestEpoch, compile_classifier, fit_classifier


def _model() -> keras.Model:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    outputs = keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling2D()(inputs))
    return keras.Model(inputs, outputs)


def _data(n: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Class 1 is brighter than class 0: separable by the mean, learnt in a few epochs."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = rng.normal(0.0, 0.3, (n, 8, 8, 1)).astype(np.float32) + (2.0 * y - 1.0)[:, None, None, None]
    return x.astype(np.float32), y.astype(np.int32)


def test_the_best_validation_accuracy_is_kept_and_lower_loss_breaks_ties():
    model = _model()
    keep = KeepBestEpoch(patience=1)
    keep.set_model(model)
    logs = [(0.5, 1.0), (0.7, 0.9), (0.7, 0.8), (0.6, 0.5)]  # epoch 3: same accuracy as 2, lower loss
    for epoch, (accuracy, loss) in enumerate(logs):
        model.set_weights([np.full_like(w, epoch) for w in model.get_weights()])  # mark the epoch
        model.stop_training = False
        keep.on_epoch_end(epoch, {"val_accuracy": accuracy, "val_loss": loss})
    assert keep.best_epoch == 3 and keep.best_val_accuracy == 0.7
    assert model.stop_training  # epoch 4 was one epoch without a better one (patience 1)
    keep.on_train_end()
    assert all(np.all(w == 2) for w in model.get_weights())  # epoch 3's weights are back


@pytest.mark.slow
def test_fit_learns_keeps_the_best_epoch_and_stops_early():
    x, y = _data()
    xv, yv = _data(32, seed=1)
    model = _model()
    stream = io.StringIO()
    result = fit_classifier(model, (x, y), (xv, yv), epochs=4, batch_size=16, learning_rate=0.05,
                            progress=Progress(quiet=False, stream=stream), desc="toy classifier")
    assert result.epochs_run == 4 and 1 <= result.best_epoch <= 4
    assert result.best_val_accuracy == max(result.history["val_accuracy"])
    assert np.mean(model.predict(xv, verbose=0).argmax(1) == yv) >= 0.9
    assert "toy classifier" in stream.getvalue()  # the bar was drawn
    # With nothing to learn (learning rate 0) no epoch beats the first: patience 1 stops after
    # epoch 2, unless min_epochs holds it to 3.
    frozen = fit_classifier(_model(), (x, y), (xv, yv), epochs=5, learning_rate=0.0, schedule="constant", patience=1)
    assert (frozen.epochs_run, frozen.best_epoch) == (2, 1)
    held = fit_classifier(_model(), (x, y), (xv, yv), epochs=5, learning_rate=0.0, schedule="constant", patience=1,
                          min_epochs=3)
    assert held.epochs_run == 3
    # without validation data the last epoch is kept and there is no best epoch to report
    plain = fit_classifier(_model(), (x, y), epochs=1)
    assert (plain.best_epoch, plain.best_val_accuracy, plain.epochs_run) == (0, None, 1)


def test_unknown_schedule_is_refused():
    with pytest.raises(ValueError, match="schedule"):
        compile_classifier(_model(), 1e-3, 10, schedule="step")
