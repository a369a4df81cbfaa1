"""The audit: does a *fresh* classifier still find the scanner in generated images?

GECO's own classifier was trained alongside the generator, so a generator can fool it while the
signature survives for any other model (design.md, issue 6). The audit trains a new classifier
from scratch on G(train), picks its best epoch on G(val) (that helps the auditor, not GECO) and
tests it on G(test): ``accuracy_audit``. The same procedure on the original images
(``accuracy_audit_original``) measures the audit's power: an audit counts only where that is
>= 0.90.
"""

from __future__ import annotations

import math
from pathlib import Path

import keras
import numpy as np

from geco_tf.data.dataset import DatasetInfo, check_target, open_dataset
from geco_tf.data.pipeline import load_split_arrays
from geco_tf.evaluation.stats import wilson_interval
from geco_tf.models import build_classifier

#: At most this many epochs; training stops earlier after :data:`PATIENCE` epochs without a
#: better validation accuracy. Why so many: a residual signature is learnt slowly. On one GECO
#: generator the same audit reached 0.26 test accuracy in 8 epochs and 0.49 in 24 (validation
#: accuracy still rising: 0.25 at epoch 1, 0.29 at 8, 0.41 at 19, 0.46 at 23); on original
#: images it reaches 0.99 within 8. An audit stopped early flatters the generator.
DEFAULT_EPOCHS = 40
#: Epochs without a better validation accuracy before the audit stops: by default none, all
#: :data:`DEFAULT_EPOCHS` run. With 8, one audit (run E11, docs/results.md) stopped at epoch 12
#: with its best, 0.344, from epoch 4; trained all 40 epochs, the same audit found 0.620 (best
#: epoch 37). Plateaus longer than any patience tried here happen, and each flatters the
#: generator. Even 40 epochs is a lower bound: three of four audits were best at epoch 37-39.
PATIENCE = DEFAULT_EPOCHS
#: The baseline's recipe (``geco_tf.training.baseline``), which reaches 1.0 on original images:
#: Adam 1e-3 with cosine decay, batch-norm momentum 0.9 while training, then "precise BN".
DEFAULT_LEARNING_RATE = 1e-3
BN_MOMENTUM = 0.9


def generate(generator: keras.Model | None, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """G(images) in batches (float32); ``generator=None`` returns the originals."""
    if generator is None:
        return images
    out = [np.asarray(generator(images[i : i + batch_size], training=False), np.float32) for i in range(0, len(images), batch_size)]
    return np.concatenate(out) if out else images


def audit_accuracy(
    generator: keras.Model | str | Path | None,
    data: DatasetInfo | str | Path,
    target: str = "manufacturer",
    classifier: str = "dds",
    epochs: int = DEFAULT_EPOCHS,
    seed: int = 0,
    batch_size: int = 32,
    learning_rate: float = DEFAULT_LEARNING_RATE,
    patience: int = PATIENCE,
    verbose: int = 0,
) -> dict:
    """Train a fresh ``classifier`` ('dds' or 'maxpool') on G(train), test it on G(test).

    ``generator`` is a model, a ``.keras`` path, or None (the audit on original images).
    Returns ``accuracy``, ``ci95``, ``n_test``, ``chance``, ``confusion``, ``best_epoch``,
    ``val_accuracy``, ``classifier``, ``epochs`` (the maximum) and ``epochs_run`` (before the
    early stop: :data:`PATIENCE` epochs without a better validation accuracy).
    """
    if not isinstance(data, DatasetInfo):
        data = open_dataset(data)
    if isinstance(generator, (str, Path)):
        generator = keras.saving.load_model(generator, compile=False)
    classes = check_target(data, target)
    arrays = {split: load_split_arrays(data, split, target)[:2] for split in ("train", "val", "test")}
    xs = {split: generate(generator, x) for split, (x, _) in arrays.items()}
    ys = {split: y for split, (_, y) in arrays.items()}

    import tensorflow as tf

    from geco_tf.training.batch_norm import batch_norm_layers, recalibrate_batch_norm

    keras.utils.set_random_seed(seed)
    model = build_classifier(classifier, len(classes), data.image_size)
    norms = batch_norm_layers(model)
    for norm in norms:
        norm.momentum = BN_MOMENTUM  # Keras' 0.99 lags: inference predicts one class (0.25)
    steps = epochs * math.ceil(len(ys["train"]) / batch_size)
    model.compile(
        optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(learning_rate, max(steps, 1))),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=["accuracy"],
    )
    best = _BestWeights()
    stop = keras.callbacks.EarlyStopping(monitor="val_accuracy", mode="max", patience=patience)
    history = model.fit(
        xs["train"],
        ys["train"],
        batch_size=batch_size,
        epochs=epochs,
        validation_data=(xs["val"], ys["val"]),
        callbacks=[best, stop],
        shuffle=True,
        verbose=verbose,
    )
    if best.weights is not None:
        model.set_weights(best.weights)
    # Moving statistics = mean of batch statistics over G(train): the lag of a short run removed.
    recalibrate_batch_norm(model, norms, tf.data.Dataset.from_tensor_slices((xs["train"], ys["train"])).batch(64))
    probs = model.predict(xs["test"], batch_size=128, verbose=0)
    pred = probs.argmax(-1)
    y = ys["test"]
    c = len(classes)
    confusion = np.zeros((c, c), dtype=int)
    for t, p in zip(y, pred):
        confusion[int(t), int(p)] += 1
    correct = int((pred == y).sum())
    return {
        "accuracy": correct / max(len(y), 1),
        "ci95": list(wilson_interval(correct, len(y))),
        "n_test": int(len(y)),
        "chance": 1.0 / c,
        "confusion": confusion.tolist(),
        "best_epoch": best.epoch,
        "val_accuracy": best.value,
        "classifier": classifier,
        "epochs": epochs,
        "epochs_run": len(history.history.get("val_accuracy", [])),
    }


class _BestWeights(keras.callbacks.Callback):
    """Keeps the weights of the epoch with the best validation accuracy (first of ties)."""

    def __init__(self) -> None:
        super().__init__()
        self.weights = None
        self.value = -1.0
        self.epoch = 0

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        acc = float((logs or {}).get("val_accuracy", -1.0))
        if acc > self.value:
            self.value, self.epoch, self.weights = acc, epoch + 1, self.model.get_weights()
