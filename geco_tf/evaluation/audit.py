"""The audit: does a *fresh* classifier still find the scanner in generated images?

GECO's own classifier was trained alongside the generator, so a generator can fool it while the
signature survives for any other model (docs/evaluation.md). The audit trains a new classifier
from scratch on G(train), picks its best epoch on G(val) (that helps the auditor, not GECO) and
tests it on G(test): ``accuracy_audit``. The same procedure on the original images
(``accuracy_audit_original``) measures the audit's power: an audit counts only where that is
>= 0.90.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from geco_tf.data.dataset import DatasetInfo, check_target, open_dataset
from geco_tf.data.pipeline import load_split_arrays
from geco_tf.evaluation.stats import wilson_interval
from geco_tf.models import build_classifier
from geco_tf.progress import QUIET, Progress
from geco_tf.training.batch_norm import batch_norm_layers, recalibrate_batch_norm
from geco_tf.training.classifier_fit import fit_classifier
from geco_tf.training.generate import generate

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
    progress: Progress = QUIET,
) -> dict:
    """Train a fresh ``classifier`` ('dds' or 'maxpool') on G(train), test it on G(test).

    ``generator`` is a model, a ``.keras`` path, or None (the audit on original images).
    The classifier is fitted by :func:`geco_tf.training.classifier_fit.fit_classifier` (the
    package's one best-epoch rule: best validation accuracy, lower validation loss breaking
    ties), then its batch-norm statistics are recalibrated on G(train) (precise BN).
    Returns ``accuracy``, ``ci95``, ``n_test``, ``chance``, ``confusion``, ``best_epoch``,
    ``val_accuracy``, ``classifier``, ``epochs`` (the maximum) and ``epochs_run`` (before the
    early stop: ``patience`` epochs without a better validation accuracy). ``progress`` shows
    the generator passes and a bar over the audit's epochs.
    """
    if not isinstance(data, DatasetInfo):
        data = open_dataset(data)
    if isinstance(generator, (str, Path)):
        generator = keras.saving.load_model(generator, compile=False)
    classes = check_target(data, target)
    arrays = {split: load_split_arrays(data, split, target)[:2] for split in ("train", "val", "test")}
    what = "original" if generator is None else "generated"
    xs = {split: generate(generator, x, progress=progress, desc=f"G({split})") for split, (x, _) in arrays.items()}
    ys = {split: y for split, (_, y) in arrays.items()}

    keras.utils.set_random_seed(seed)
    model = build_classifier(classifier, len(classes), data.image_size)
    norms = batch_norm_layers(model)
    for norm in norms:
        norm.momentum = BN_MOMENTUM  # Keras' 0.99 lags: inference predicts one class (0.25)
    fit = fit_classifier(
        model, (xs["train"], ys["train"]), (xs["val"], ys["val"]), epochs=epochs, batch_size=batch_size,
        learning_rate=learning_rate, schedule="cosine", patience=patience, progress=progress,
        desc=f"audit {classifier} on {what} images",
    )
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
        "best_epoch": fit.best_epoch,
        "val_accuracy": fit.best_val_accuracy,
        "classifier": classifier,
        "epochs": epochs,
        "epochs_run": fit.epochs_run,
    }
