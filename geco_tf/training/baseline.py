"""The DeepDicomSort transfer-learning baseline (paper section 3.2): ``geco-tf baseline``.

The paper takes DeepDicomSort's published Keras model, freezes its convolutional backbone and
trains a new dense head for three epochs to predict the manufacturer (test accuracy 0.988). It
answers "how easily can a plain classifier tell the scanner from an unmodified slice?", the number
GECO has to push down to chance.

Two modes, recorded in ``RUN/config.json`` (``dds_weights``) and ``RUN/metrics.json``
(``pretrained``):

* **With** ``dds_weights`` (the original HDF5 file): every slice is brought to 256x256 in [0, 1]
  by :func:`~geco_tf.models.deepdicomsort.dds_input_layers` inside the model (the per-position
  PReLU alphas tie the backbone to 256x256; DeepDicomSort itself resamples to 256x256), the
  backbone is loaded and frozen, and a new head (Dense 1024, Dense 1024 relu, softmax over the
  dataset's classes) is trained. Because the frozen backbone runs in inference mode, its features
  are computed once per slice and the head is trained on them: the same optimisation as training
  the whole model with a frozen backbone, at a third of the cost for three epochs.
* **Without** weights: the same architecture trained from scratch at the dataset's own size.
  At 64x64 DeepDicomSort's valid convolutions leave nothing, so the classifier uses 'same'
  padding and per-channel PReLU alphas (:func:`~geco_tf.models.classifiers.choose_padding`);
  at sizes where valid padding fits (>= ~200 px) it is exactly
  DeepDicomSort's layout. From scratch the whole network learns, so it needs more epochs than
  a head on a pretrained backbone: :data:`DEFAULT_EPOCHS_SCRATCH`.

Run directory contract: ``docs/runs.md``; user guide: ``docs/baseline.md``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from geco_tf.data.dataset import check_target, open_dataset
from geco_tf.data.pipeline import make_dataset
from geco_tf.errors import UserError
from geco_tf.io import atomic_path, write_json_atomic, write_text_atomic
from geco_tf.models.backbone import ConvBackbone, choose_padding
from geco_tf.models.classifiers import build_classifier
from geco_tf.models.deepdicomsort import (
    DENSE_UNITS,
    DROPOUT,
    ORIGINAL_INPUT_SIZE,
    DDSWeights,
    dds_input_layers,
    load_backbone,
    read_dds_hdf5,
)
from geco_tf.progress import QUIET, Progress
from geco_tf.training.batch_norm import recalibrate_batch_norm
from geco_tf.training.classifier_fit import fit_classifier

#: The paper's three epochs for a new head on the pretrained, frozen backbone.
DEFAULT_EPOCHS_PRETRAINED = 3
#: From scratch the backbone has to learn too; on the built-in 64x64 data this reaches >= 0.95.
DEFAULT_EPOCHS_SCRATCH = 16
DEFAULT_BATCH_SIZE = 32
#: DeepDicomSort's own optimiser: Adam, learning rate 1e-3.
DEFAULT_LEARNING_RATE = 1e-3
#: BN momentum while training from scratch: Keras's 0.99 lags too far behind in a few hundred
#: steps for the per-epoch validation numbers to mean anything (see recalibrate_batch_norm).
TRAINING_BN_MOMENTUM = 0.9
HISTORY_COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy")
#: Step lines :func:`run_baseline` announces on its ``progress``: prepare, train, test.
BASELINE_STEPS = 3


def default_epochs(pretrained: bool) -> int:
    """3 on the frozen pretrained backbone (the paper), more from scratch."""
    return DEFAULT_EPOCHS_PRETRAINED if pretrained else DEFAULT_EPOCHS_SCRATCH


def build_pretrained_baseline(
    num_classes: int, image_size: int, weights: DDSWeights, dropout: float = DROPOUT
) -> tuple[keras.Model, ConvBackbone]:
    """Dataset slices in [-1, 1] -> 256x256 in [0, 1] -> frozen DeepDicomSort backbone -> new head.

    A functional model of built-in Keras layers around :class:`ConvBackbone`, with the layer names
    of :class:`~geco_tf.models.classifiers.DDSClassifier` (flatten, dropout1, dense1, dense2,
    dropout2, logits, softmax), so ``baseline.keras`` loads wherever ``geco_tf.models`` is
    imported. Returns the model and its backbone.
    """
    inputs = keras.Input((image_size, image_size, 1), name="image")
    x = inputs
    for layer in dds_input_layers(image_size, ORIGINAL_INPUT_SIZE):
        x = layer(x)
    backbone = ConvBackbone("valid", None, name="backbone")
    x = layers.Flatten(name="flatten")(backbone(x))
    x = layers.Dropout(dropout, name="dropout1")(x)
    x = layers.Dense(DENSE_UNITS, name="dense1")(x)
    x = layers.Dense(DENSE_UNITS, activation="relu", name="dense2")(x)
    x = layers.Dropout(dropout, name="dropout2")(x)
    x = layers.Dense(num_classes, name="logits")(x)
    outputs = layers.Activation("softmax", dtype="float32", name="softmax")(x)
    model = keras.Model(inputs, outputs, name="dds_baseline")
    load_backbone(backbone, weights)
    freeze(backbone)
    return model, backbone


def freeze(backbone: ConvBackbone) -> None:
    """Freeze the backbone and every sublayer: no gradient updates and batch norm in inference
    mode (Keras only honours ``trainable`` on the BN layers themselves)."""
    backbone.trainable = False
    for sub in backbone.convs + backbone.norms + backbone.prelus:
        sub.trainable = False


HEAD_LAYERS = ("dropout1", "dense1", "dense2", "dropout2", "logits", "softmax")


def _head_model(model: keras.Model, features: int) -> keras.Model:
    """The head of ``model`` (sharing its layers) as a model on flattened backbone features."""
    x = h = keras.Input((features,), name="features")
    for name in HEAD_LAYERS:
        x = model.get_layer(name)(x)
    return keras.Model(h, x, name="dds_head")


def _feature_model(model: keras.Model) -> keras.Model:
    return keras.Model(model.inputs[0], model.get_layer("flatten").output, name="dds_features")


def load_baseline(run_dir: str | os.PathLike) -> keras.Model:
    """``RUN/baseline.keras`` as trained, with a pretrained backbone frozen again.

    Keras restores ``trainable=False`` on the backbone but not on its sublayers, so a model
    loaded with plain ``keras.models.load_model`` predicts identically but would train the
    backbone (and update its batch-norm statistics) if fitted further. Use this to fine-tune.
    """
    path = Path(run_dir) / "baseline.keras"
    if not path.is_file():
        raise UserError(f"{run_dir}: no baseline.keras (not a `geco-tf baseline` run directory)")
    model = keras.models.load_model(path)
    config_path = Path(run_dir) / "config.json"
    if config_path.is_file() and json.loads(config_path.read_text()).get("pretrained"):
        freeze(model.get_layer("backbone"))
    return model


def _features(extractor: keras.Model, ds, what: str, progress: Progress) -> tuple[np.ndarray, np.ndarray]:
    """Flattened frozen-backbone features and labels of one split (the backbone runs once)."""
    batches = int(ds.cardinality())
    feats, labels = [], []
    for images, y in progress.track(ds, total=batches, desc=f"backbone features of {what}"):
        feats.append(np.asarray(extractor.predict_on_batch(images)))
        labels.append(y.numpy())
    return np.concatenate(feats), np.concatenate(labels)


def _sized(ds, n: int, batch_size: int):
    """Tell Keras how many batches a split has (the label filter hides it), so epochs end cleanly."""
    return ds.apply(tf.data.experimental.assert_cardinality(math.ceil(n / batch_size)))


def run_baseline(
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    target: str = "manufacturer",
    epochs: int | None = None,
    dds_weights: str | os.PathLike | None = None,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    seed: int = 0,
    learning_rate: float = DEFAULT_LEARNING_RATE,
    progress: Progress = QUIET,
) -> dict:
    """Train the DeepDicomSort baseline on ``data_dir`` and write the run directory ``out_dir``.

    ``epochs=None`` picks :func:`default_epochs` (3 with weights, 16 from scratch). The
    classifier is fitted by :func:`geco_tf.training.classifier_fit.fit_classifier` (best
    validation epoch kept). ``progress`` shows each step and a bar over the epochs (and over the
    backbone's passes with weights). Returns the metrics written to ``RUN/metrics.json``.
    """
    log = progress.note
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{out_dir}: output exists and is a file, not a directory")
    if batch_size < 1:
        raise UserError(f"--batch-size {batch_size}: must be at least 1")
    data = open_dataset(data_dir)
    classes = check_target(data, target)
    weights = read_dds_hdf5(dds_weights) if dds_weights is not None else None
    pretrained = weights is not None
    epochs = default_epochs(pretrained) if epochs is None else int(epochs)
    if epochs < 1:
        raise UserError(f"--epochs {epochs}: must be at least 1")
    keras.utils.set_random_seed(seed)
    size = data.image_size
    n = {split: data.count(split, target) for split in ("train", "val", "test")}
    train_ds, val_ds, test_ds = (
        _sized(make_dataset(data, split, target, batch_size, shuffle=split == "train" and not pretrained, seed=seed),
               n[split], batch_size)
        for split in ("train", "val", "test")
    )
    start = time.time()

    if pretrained:
        progress.step(
            f"pretrained: DeepDicomSort weights {weights.path} (sha256 {weights.sha256[:12]}...); "
            f"{size}x{size} slices resampled to {ORIGINAL_INPUT_SIZE}x{ORIGINAL_INPUT_SIZE}, backbone frozen"
        )
        model, backbone = build_pretrained_baseline(len(classes), size, weights)
        extractor = _feature_model(model)
        x_train, y_train = _features(extractor, train_ds, "train", progress)
        x_val, y_val = _features(extractor, val_ds, "val", progress)
        x_test, y_test = _features(extractor, test_ds, "test", progress)
        head = _head_model(model, x_train.shape[1])
        progress.step(
            f"training the head: {n['train']} train / {n['val']} val slices of {target!r}, {len(classes)} classes, "
            f"{epochs} epochs"
        )
        fit = fit_classifier(
            head, (x_train, y_train), (x_val, y_val), epochs=epochs, batch_size=batch_size,
            learning_rate=learning_rate, progress=progress, desc="baseline head",
        )
        log(f"kept epoch {fit.best_epoch} (best validation accuracy {fit.best_val_accuracy:.4f})")
        progress.step("testing")
        probabilities = head.predict(x_test, batch_size=256, verbose=0)
        classifier_config = {"backbone": backbone.get_config(), "head": [model.get_layer(n).get_config() for n in HEAD_LAYERS]}
    else:
        padding = choose_padding(size)  # DeepDicomSort's own layout (per-position alphas) where it fits
        prelu = "position" if padding == "valid" else "channel"
        model = build_classifier("dds", len(classes), size, padding=padding, prelu=prelu, dropout=DROPOUT)
        progress.step(
            f"not pretrained: no --dds-weights given, the DeepDicomSort architecture from scratch "
            f"at {size}x{size} (padding {model.padding!r}), target {target!r}"
        )
        progress.step(f"training for {epochs} epochs on {n['train']} train / {n['val']} val slices")
        norms = model.backbone.norms
        for norm in norms:  # see TRAINING_BN_MOMENTUM
            norm.momentum = TRAINING_BN_MOMENTUM
        fit = fit_classifier(
            model, train_ds, val_ds, epochs=epochs, learning_rate=learning_rate, progress=progress,
            desc="baseline classifier",
        )
        log(f"kept epoch {fit.best_epoch} (best validation accuracy {fit.best_val_accuracy:.4f})")
        progress.step("recalibrating batch-norm statistics over the training split, then testing")
        recalibrate_batch_norm(model, norms, make_dataset(data, "train", target, 128))
        probabilities, y_test = [], []
        for images, y in test_ds:
            probabilities.append(model(images, training=False).numpy())
            y_test.append(y.numpy())
        probabilities, y_test = np.concatenate(probabilities), np.concatenate(y_test)
        classifier_config = model.get_config()
    seconds = time.time() - start

    predicted = probabilities.argmax(axis=1)
    confusion = np.zeros((len(classes), len(classes)), dtype=int)
    np.add.at(confusion, (y_test, predicted), 1)
    eps = 1e-7
    test_loss = float(-np.mean(np.log(np.clip(probabilities[np.arange(len(y_test)), y_test], eps, 1.0))))
    metrics = {
        "target": target,
        "classes": classes,
        "n_test": int(len(y_test)),
        "accuracy_original": float(np.mean(predicted == y_test)),
        "chance": 1.0 / len(classes),
        "confusion_original": confusion.tolist(),
        "pretrained": pretrained,
        "loss_original": test_loss,
        "epochs": epochs,
        "best_epoch": fit.best_epoch,
    }
    config = {
        "command": "baseline",
        "data_dir": str(Path(data_dir).resolve()),
        "target": target,
        "classes": classes,
        "image_size": size,
        "model_input_size": ORIGINAL_INPUT_SIZE if pretrained else size,
        "input_adapter": "bilinear resampling to 256x256, [-1, 1] -> [0, 1]" if pretrained else None,
        "dds_weights": {"path": str(weights.path.resolve()), "sha256": weights.sha256} if pretrained else None,
        "pretrained": pretrained,
        "frozen": "backbone: Conv2D/BatchNormalization/PReLU x 6 (inference mode)" if pretrained else None,
        "head_training": "on precomputed frozen-backbone features" if pretrained else None,
        "batch_norm": None if pretrained else (
            f"momentum {TRAINING_BN_MOMENTUM} while training, then moving statistics recalibrated as the mean "
            "of per-batch statistics over the training split (batch 128)"
        ),
        "classifier": "dds",
        "classifier_config": classifier_config,
        "epochs": epochs,
        "batch_size": batch_size,
        "seed": seed,
        "optimizer": {"name": "adam", "learning_rate": learning_rate, "schedule": "cosine decay to 0 over the run"},
        "kept_epoch": "best validation accuracy (validation loss breaks ties)",
        "loss": "sparse categorical cross-entropy",
        "train_slices": n["train"],
        "val_slices": n["val"],
        "seconds": round(seconds, 1),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out_dir / "config.json", config)
    write_text_atomic(out_dir / "history.csv", _history_csv(fit.history))
    with atomic_path(out_dir / "baseline.keras", suffix=".keras") as tmp:
        model.save(tmp)
    write_json_atomic(out_dir / "metrics.json", metrics)
    return metrics


def _history_csv(history: dict[str, list[float]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(HISTORY_COLUMNS)
    for i in range(len(history.get("loss", []))):
        writer.writerow([i + 1, *(f"{history[k][i]:.6f}" if k in history else "" for k in HISTORY_COLUMNS[1:])])
    return buffer.getvalue()
