"""The run directory of ``geco-tf train`` (contract: ``docs/runs.md``).

Why each piece exists:

* ``history.csv`` keeps *every* finished epoch, because adversarial training oscillates and the
  final model is chosen from the whole history, not taken from the last epoch.
* ``checkpoints/ckpt-N`` is written after epoch N (N = 1, 2, ...) and all are kept: ``--resume``
  continues after the newest, and the best epoch's networks can always be re-derived from its
  own checkpoint. ``tf.train.CheckpointManager`` writes the data files first and then replaces
  the small ``checkpoint`` index atomically, so a kill leaves the previous epoch as "latest".
* ``generator.keras`` / ``classifier.keras`` are the best validation epoch's networks
  (:func:`select_best`), rewritten atomically whenever a better epoch appears.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import keras
import tensorflow as tf

from geco_tf.errors import UserError
from geco_tf.io import atomic_path, write_json_atomic, write_text_atomic

HISTORY_COLUMNS = (
    "epoch",
    "gen_loss",
    "gen_adv_loss",
    "gen_mse",
    "cls_loss",
    "cls_accuracy",
    "disc_loss",
    "spec_loss",
    "spec_accuracy",
    "gen_spec_adv_loss",
    "val_accuracy_cotrained",
    "val_accuracy_spectral",
    "val_accuracy_probe",
    "val_ssim",
    "val_psnr",
    "learning_rate",
    "seconds",
    "step",
)


class RunDir:
    """Paths and readers/writers of one training run directory."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise UserError(f"{self.path}: --out exists and is a file, not a directory")
        self.config = self.path / "config.json"
        self.history = self.path / "history.csv"
        self.checkpoints = self.path / "checkpoints"
        self.logs = self.path / "logs"
        self.generator = self.path / "generator.keras"
        self.classifier = self.path / "classifier.keras"
        self.metrics = self.path / "metrics.json"

    def has_run(self) -> bool:
        """True when a training run has already started here."""
        return self.config.exists() or self.history.exists() or self.checkpoints.exists()

    def create(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)

    # -- config ---------------------------------------------------------------------------
    def write_config(self, config: dict) -> None:
        write_json_atomic(self.config, config)

    def read_config(self) -> dict:
        try:
            return json.loads(self.config.read_text())
        except FileNotFoundError:
            raise UserError(f"{self.config}: no run to resume here (config.json missing)") from None

    # -- history --------------------------------------------------------------------------
    def read_history(self) -> list[dict]:
        """Rows of ``history.csv`` with numbers parsed (empty strings stay None)."""
        if not self.history.exists():
            return []
        with open(self.history, newline="") as f:
            rows = list(csv.DictReader(f))
        return [{k: _num(v) for k, v in row.items()} for row in rows]

    def write_history(self, rows: list[dict]) -> None:
        """Rewrite ``history.csv`` atomically with ``rows`` (all epochs so far)."""
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=HISTORY_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _fmt(row.get(k)) for k in HISTORY_COLUMNS})
        write_text_atomic(self.history, buf.getvalue())

    # -- models ---------------------------------------------------------------------------
    def save_model(self, model: keras.Model, path: Path) -> None:
        """Save a ``.keras`` file atomically (temporary name with the .keras suffix, rename)."""
        with atomic_path(path, suffix=".keras") as tmp:
            model.save(tmp)

    def write_metrics(self, metrics: dict) -> None:
        write_json_atomic(self.metrics, metrics)


def network_parts(model) -> dict:
    """The networks' variables as explicit lists.

    Keras 3 models are not trackable children of a ``tf.train.Checkpoint`` (their variables
    were saved only through the optimizers' references, and non-trainable ones such as
    batch-norm statistics not at all), so each network's ``weights`` list is tracked instead
    (its order is fixed by the architecture).
    """
    parts = {"generator_weights": list(model.generator.weights), "classifier_weights": list(model.classifier.weights)}
    if model.discriminator is not None:
        parts["discriminator_weights"] = list(model.discriminator.weights)
    if model.spectral_classifier is not None:
        parts["spectral_classifier_weights"] = list(model.spectral_classifier.weights)
    return parts


def make_checkpoint(model, epoch: tf.Variable) -> tf.train.Checkpoint:
    """Everything a resumed run needs: the networks, their optimizers, the epoch counter and the
    game state (the step counter that drives the warm-up and the pool's random stream; the
    replay pool)."""
    parts = {
        **network_parts(model),
        "g_optimizer": model.g_optimizer,
        "c_optimizer": model.c_optimizer,
        "epoch": epoch,
        "step": model.step_counter,
    }
    if model.discriminator is not None:
        parts["d_optimizer"] = model.d_optimizer
    if model.spectral_classifier is not None:
        parts["s_optimizer"] = model.s_optimizer
    if model.pool is not None:
        parts.update(pool_images=model.pool.images, pool_labels=model.pool.labels, pool_count=model.pool.count)
    return tf.train.Checkpoint(**parts)


def checkpoint_manager(ckpt: tf.train.Checkpoint, run: RunDir) -> tf.train.CheckpointManager:
    """Keeps every epoch's checkpoint (``ckpt-<epoch>``)."""
    return tf.train.CheckpointManager(ckpt, str(run.checkpoints), max_to_keep=None, checkpoint_name="ckpt")


def checkpoint_path(run: RunDir, epoch: int) -> str:
    return str(run.checkpoints / f"ckpt-{epoch}")


def validation_leakage(row: dict) -> float:
    """How much of the target an epoch's generated validation slices still give away: the
    highest validation accuracy of its co-trained classifier, its spectral adversary (if any)
    and the fresh probe fitted after the epoch (if any, ``geco_tf/training/fresh_probe.py``).
    The generator must fool all of them; the co-trained ones alone can be briefly behind."""
    values = [row.get(k) for k in ("val_accuracy_cotrained", "val_accuracy_spectral", "val_accuracy_probe")]
    return max(v for v in values if v is not None)


#: An adversary has "learnt" the target once its validation accuracy is at least this far from
#: chance towards 1 (0.75 for two classes, 0.625 for four): see :func:`learnt_accuracy`.
LEARNT_FRACTION = 0.5


def learnt_accuracy(n_classes: int, fraction: float = LEARNT_FRACTION) -> float:
    """The validation accuracy at which an adversary has shown it can detect the target:
    ``chance + fraction * (1 - chance)``."""
    chance = 1.0 / n_classes
    return chance + fraction * (1.0 - chance)


def first_learnt_epoch(rows: list[dict], level: float | None) -> int | None:
    """The first epoch whose :func:`validation_leakage` reached ``level`` (any epoch, warm-up
    included), the first epoch when ``level`` is None, or None when no epoch did."""
    for row in rows:
        if level is None or validation_leakage(row) >= level:
            return int(row["epoch"])
    return None


def select_best(
    rows: list[dict], ssim_target: float, warmup_steps: int = 0, learnt: float | None = None
) -> tuple[dict | None, bool]:
    """The design's best-epoch rule: lowest validation accuracy of the adversaries
    (:func:`validation_leakage`; the design names the co-trained classifier, to which the
    spectral adversary and the fresh probe add their accuracies when a run has them) among
    epochs whose validation SSIM meets ``ssim_target`` (ties: the higher SSIM, then the later
    epoch).

    A low accuracy only shows removal if the adversaries could have seen the target, so two
    kinds of epoch cannot win, however low their accuracy:

    * epochs that end inside the generator's warm-up (``step`` <= ``warmup_steps``): G is the
      identity and the classifier is still learning (a run chose its first epoch, accuracy
      0.27 at SSIM 1.000, before this rule; a fresh audit then found 0.90);
    * with ``learnt`` given, epochs before the first one at which an adversary's validation
      accuracy reached ``learnt`` (:func:`first_learnt_epoch`, :func:`learnt_accuracy`): a
      field-strength run kept its epoch 3 (validation 0.513, test 0.516, chance 0.5) where the
      co-trained classifier had simply not learnt yet; it reached 0.766 in epoch 4.

    When no eligible epoch meets the target, the eligible epoch with the highest SSIM (or, if
    none is eligible, the played one, or any one) is returned and the flag is False, so the
    caller can say the rule failed instead of hiding it.
    """
    if not rows:
        return None, False
    played = [r for r in rows if r.get("step") is None or r["step"] > warmup_steps]
    start = first_learnt_epoch(rows, learnt)
    eligible = [r for r in played if start is not None and r["epoch"] >= start]
    ok = [r for r in eligible if r["val_ssim"] is not None and r["val_ssim"] >= ssim_target]
    if ok:
        return min(ok, key=lambda r: (validation_leakage(r), -r["val_ssim"], -r["epoch"])), True
    return max(eligible or played or rows, key=lambda r: (r["val_ssim"] or -1.0, r["epoch"])), False


def _num(value: str):
    if value in ("", None):
        return None
    try:
        number = float(value)
    except ValueError:
        return value
    return int(number) if number.is_integer() and "." not in value and "e" not in value.lower() else number


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.9g}"
    return str(value)
