"""Fitting a classifier from scratch, with one rule for the epoch that is kept.

Three things train a classifier from scratch: the DeepDicomSort baseline (``baseline.py``),
the fresh audit of ``geco-tf evaluate`` (``geco_tf.evaluation.audit``) and the report's small
CNN probes (``geco_tf.evaluation.probes``). They used to do it three ways with two best-epoch
rules; a number in the report then depended on which recipe produced it. Here is the one way:

* **Kept epoch**: the epoch with the best validation accuracy, lower validation loss breaking
  ties (:class:`KeepBestEpoch`). Why: a from-scratch run on small data can have one bad last
  epoch (validation accuracy 0.96 -> 0.49 -> 0.95 has been seen); the test split must not
  depend on where the run happened to stop.
* **Early stop** (optional): after ``patience`` epochs without a better kept epoch, never
  before ``min_epochs``. A residual scanner signature is learnt slowly (an audit at 0.26 after 8
  epochs reached 0.49 after 24), so the audit runs without one; the cheap probes use it.
* **Optimiser**: Adam, with cosine decay to zero over the run (the last epochs settle instead of
  oscillating) or a constant learning rate.
* **Progress**: one bar over the epochs with the validation accuracy, on a
  :class:`geco_tf.progress.Progress` (silent by default).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import keras
import numpy as np
import tensorflow as tf

from geco_tf.progress import QUIET, Progress

SCHEDULES = ("cosine", "constant")


@dataclass
class FitResult:
    """What :func:`fit_classifier` did: the kept epoch (1-based; 0 when there was no validation
    data and the last epoch is kept), its validation accuracy, how many epochs ran, and Keras'
    per-epoch history."""

    best_epoch: int
    best_val_accuracy: float | None
    epochs_run: int
    history: dict[str, list[float]] = field(default_factory=dict)


class KeepBestEpoch(keras.callbacks.Callback):
    """Keep the weights of the epoch with the best validation accuracy (lower validation loss
    breaks ties; the first of full ties) and restore them when training ends. With ``patience``,
    stop after that many epochs without a better epoch, but not before ``min_epochs``."""

    def __init__(self, patience: int | None = None, min_epochs: int = 0) -> None:
        super().__init__()
        self.patience = patience
        self.min_epochs = int(min_epochs)
        self.best: tuple[float, float] | None = None
        self.best_epoch = 0
        self.weights: list | None = None

    @property
    def best_val_accuracy(self) -> float | None:
        return None if self.best is None else self.best[0]

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        key = (float(logs.get("val_accuracy", 0.0)), -float(logs.get("val_loss", 0.0)))
        if self.best is None or key > self.best:
            self.best, self.best_epoch, self.weights = key, epoch + 1, self.model.get_weights()
        done = epoch + 1
        if self.patience is not None and done >= self.min_epochs and done - self.best_epoch >= self.patience:
            self.model.stop_training = True

    def on_train_end(self, logs: dict | None = None) -> None:
        if self.weights is not None:
            self.model.set_weights(self.weights)


class EpochBar(keras.callbacks.Callback):
    """A :class:`~geco_tf.progress.Progress` bar over a ``fit``'s epochs, showing the last
    validation accuracy (or training accuracy without validation data)."""

    def __init__(self, progress: Progress, epochs: int, desc: str) -> None:
        super().__init__()
        self.progress, self.epochs, self.desc = progress, epochs, desc
        self.bar = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.bar = self.progress.bar(total=self.epochs, desc=self.desc)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        key = "val_accuracy" if "val_accuracy" in logs else "accuracy"
        if key in logs:
            self.bar.set_postfix_str(f"{key} {float(logs[key]):.3f}", refresh=False)
        self.bar.update(1)

    def on_train_end(self, logs: dict | None = None) -> None:
        if self.bar is not None:
            self.bar.close()


def compile_classifier(model: keras.Model, learning_rate: float, steps: int, schedule: str = "cosine") -> None:
    """Adam (cosine decay to zero over ``steps`` optimiser steps, or constant), sparse
    categorical cross-entropy, accuracy."""
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule {schedule!r}: choose one of {', '.join(SCHEDULES)}")
    rate = keras.optimizers.schedules.CosineDecay(learning_rate, max(steps, 1)) if schedule == "cosine" else learning_rate
    model.compile(
        optimizer=keras.optimizers.Adam(rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )


def fit_classifier(
    model: keras.Model,
    train: tuple[np.ndarray, np.ndarray] | tf.data.Dataset,
    validation: tuple[np.ndarray, np.ndarray] | tf.data.Dataset | None = None,
    *,
    epochs: int,
    batch_size: int = 32,
    learning_rate: float = 1e-3,
    schedule: str = "cosine",
    patience: int | None = None,
    min_epochs: int = 0,
    shuffle: bool = True,
    progress: Progress = QUIET,
    desc: str = "training",
) -> FitResult:
    """Compile ``model`` (:func:`compile_classifier`) and fit it on ``train`` for at most
    ``epochs`` epochs; with ``validation``, keep the best epoch (:class:`KeepBestEpoch`).

    ``train`` and ``validation`` are ``(images, labels)`` arrays (batched by ``batch_size``,
    shuffled each epoch when ``shuffle``) or batched ``tf.data`` datasets of known cardinality
    (used as they are). Returns a :class:`FitResult`; the model holds the kept epoch's weights.
    """
    if isinstance(train, tf.data.Dataset):
        steps_per_epoch = int(train.cardinality())
        if steps_per_epoch < 0:
            raise ValueError("fit_classifier: the training dataset's cardinality is unknown (use assert_cardinality)")
        fit_args: dict = {"x": train, "shuffle": False}
    else:
        x, y = train
        steps_per_epoch = math.ceil(len(y) / batch_size)
        fit_args = {"x": x, "y": y, "batch_size": batch_size, "shuffle": shuffle}
    compile_classifier(model, learning_rate, epochs * steps_per_epoch, schedule)
    keep = KeepBestEpoch(patience=patience, min_epochs=min_epochs) if validation is not None else None
    callbacks = [c for c in (keep, EpochBar(progress, epochs, desc)) if c is not None]
    history = model.fit(**fit_args, epochs=epochs, validation_data=validation, callbacks=callbacks, verbose=0)
    runs = len(history.history.get("loss", []))
    if keep is None:
        return FitResult(0, None, runs, dict(history.history))
    return FitResult(keep.best_epoch, keep.best_val_accuracy, runs, dict(history.history))
