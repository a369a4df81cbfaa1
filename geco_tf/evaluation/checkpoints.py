"""Another epoch of a run: its networks restored from ``RUN/checkpoints/ckpt-N``.

A run keeps the epoch its selection rule chose (``generator.keras``) and a checkpoint of every
epoch. Whether another rule would have kept a better generator is answered by auditing that
epoch's generator: ``geco-tf evaluate --run RUN --epoch N``. Only the weights are read from the
checkpoint; the architecture comes from the run's saved ``.keras`` files.
"""

from __future__ import annotations

import os
from pathlib import Path

import keras
import tensorflow as tf

from geco_tf.errors import UserError
from geco_tf.training.run import RunDir, checkpoint_path


def checkpoint_epochs(run_dir: str | os.PathLike) -> list[int]:
    """The epochs of ``run_dir`` that have a checkpoint, in order."""
    found = RunDir(run_dir).checkpoints.glob("ckpt-*.index")
    return sorted(int(p.name[len("ckpt-") : -len(".index")]) for p in found if p.name[5:-6].isdigit())


def restore_epoch(
    run_dir: str | os.PathLike, epoch: int, generator: keras.Model, classifier: keras.Model | None = None
) -> None:
    """Overwrite ``generator``'s weights (and ``classifier``'s, if given) with those of epoch
    ``epoch`` of ``run_dir``. The models must have the run's architecture (load them from
    ``RUN/generator.keras`` / ``classifier.keras``). Raises :class:`UserError` naming the run and
    the epochs it has when there is no checkpoint of ``epoch``."""
    path = checkpoint_path(RunDir(run_dir), int(epoch))
    if not Path(path + ".index").is_file():
        have = checkpoint_epochs(run_dir)
        listed = f"epochs {have[0]}-{have[-1]}" if have else "none"
        raise UserError(f"{run_dir}: no checkpoint of epoch {epoch} (checkpoints: {listed})")
    parts = {"generator_weights": list(generator.weights)}
    if classifier is not None:
        parts["classifier_weights"] = list(classifier.weights)
    tf.train.Checkpoint(**parts).read(path).expect_partial().assert_existing_objects_matched()
