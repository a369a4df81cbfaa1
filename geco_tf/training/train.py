"""``train_geco``: the library entry point behind ``geco-tf train`` (run layout: docs/runs.md).

One call builds the networks for the dataset's image size (:func:`build_geco`), plays the GECO
game for ``config.epochs`` epochs (or until the time budget, off by default), validates after
every epoch, keeps every epoch in ``history.csv`` and a checkpoint, and finally restores the
best validation epoch (docs/method.md: lowest co-trained accuracy among epochs whose SSIM meets the
target; with ``selection_probe``, a probe fitted afresh after each epoch counts too) and
measures it on the test split. ``resume=True`` continues a killed run after its last finished
epoch. Every setting is a field of :class:`~geco_tf.training.config.TrainConfig`.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import summary_pb2

from geco_tf.data.dataset import DatasetInfo, check_target, open_dataset
from geco_tf.data.pipeline import make_dataset
from geco_tf.errors import UserError
from geco_tf.models import Discriminator, build_classifier, build_generator, choose_padding
from geco_tf.models.backbone import feature_size
from geco_tf.models.spectral import SpectralClassifier
from geco_tf.progress import QUIET, Progress
from geco_tf.training.batch_norm import set_batch_norm_momentum
from geco_tf.training.config import TrainConfig
from geco_tf.training.distribute import describe, get_strategy
from geco_tf.training.geco import GECO
from geco_tf.training.precision import precision_policy, resolve_precision, wrap_optimizer
from geco_tf.training.run import (
    RunDir,
    checkpoint_manager,
    checkpoint_path,
    first_learnt_epoch,
    learnt_accuracy,
    make_checkpoint,
    network_parts,
    select_best,
)
from geco_tf.training.validation import predict_split, validate_epoch

#: Image size for which the paper's beta (0.02) was tuned: 512 x 512 slices.
BETA_REFERENCE_SIZE = 512

#: Settings a resumed run may change (everything else comes from the stored config).
RESUMABLE_OVERRIDES = ("epochs", "time_budget_minutes")


def effective_beta(beta: float, height: int, width: int, scaling: str = "area") -> float:
    """``beta`` for the image size: the pixel term is a *sum* over pixels, so at H x W it is
    (H W / 512^2) times smaller than at 512 x 512; ``area`` scaling multiplies beta back by
    512^2 / (H W) to keep the paper's balance. ``none`` uses beta as given."""
    if scaling == "none":
        return float(beta)
    if scaling != "area":
        raise UserError(f"beta_scaling {scaling!r}: choose 'area' or 'none'")
    return float(beta) * BETA_REFERENCE_SIZE**2 / (height * width)


def resolve_output_band(
    output_band: str | tuple | None, data: DatasetInfo | None, generator: str = "unet"
) -> tuple[float, float] | None:
    """``output_band``: "off" (or None), "auto" (the dataset's common acquired band,
    :meth:`DatasetInfo.acquired_band`; off without a dataset, when it records none, or for a
    generator other than the U-Net, the only one with the layer), or (rows, columns) fractions
    of Nyquist, also as the text "ROWS,COLS"."""
    if output_band in (None, "off"):
        return None
    if output_band == "auto":
        return data.acquired_band() if generator == "unet" and data is not None else None
    if isinstance(output_band, str):
        output_band = output_band.replace("x", ",").split(",")
    try:
        rows, cols = (float(b) for b in output_band)
    except (TypeError, ValueError):
        raise UserError(f"output_band {output_band!r}: use auto, off or ROWS,COLS (fractions of Nyquist)") from None
    if not (0.0 < rows <= 1.0 and 0.0 < cols <= 1.0):
        raise UserError(f"output_band {rows:g},{cols:g}: both fractions must be in (0, 1]")
    if generator != "unet":
        raise UserError(f"output_band: only the U-Net generator has it, not generator {generator!r}")
    return rows, cols


def steps_per_epoch(config: TrainConfig, data: DatasetInfo, target: str) -> int:
    """Training steps of one epoch: whole batches of the training split, at most
    ``config.steps_per_epoch``."""
    n_train = data.count("train", target)
    steps = n_train // config.batch_size
    if config.steps_per_epoch:
        steps = min(steps, config.steps_per_epoch) if steps else config.steps_per_epoch
    if steps < 1:
        raise UserError(f"{data.path}: {n_train} training slices is less than one batch of batch_size {config.batch_size}")
    return steps


def build_geco(
    config: TrainConfig,
    classes: list[str],
    image_size: int,
    strategy: tf.distribute.Strategy | None = None,
    data: DatasetInfo | None = None,
) -> GECO:
    """The compiled and built :class:`GECO` for ``config`` on ``image_size`` x ``image_size``
    slices of ``classes``. Call it under ``strategy.scope()`` and the precision policy
    (:func:`train_geco` does); ``data`` resolves ``output_band = "auto"`` (off without it)."""
    strategy = strategy or tf.distribute.get_strategy()
    synchronized = strategy.num_replicas_in_sync > 1
    kind = config.generator
    if kind == "unet":
        band = resolve_output_band(config.output_band, data, kind)
        gen_kwargs = {"base_filters": config.base_filters, "depth": config.depth, "input_skip": config.input_skip,
                      "output_band": band}
    elif kind == "residual":
        resolve_output_band(config.output_band, data, kind)  # refuses an explicit band
        gen_kwargs = {"base_filters": config.base_filters, "depth": config.depth}
    else:
        resolve_output_band(config.output_band, data, kind)
        gen_kwargs = {"filters": 2 * config.base_filters}
    generator = build_generator(kind, **gen_kwargs)
    padding = classifier_padding(config, image_size)
    if config.classifier == "maxpool" and feature_size(image_size, padding) < 1:
        raise UserError(
            f"classifier maxpool: {image_size}x{image_size} images are too small for its three 3x3 poolings (need >= 27 px)"
        )
    try:
        classifier = build_classifier(config.classifier, len(classes), image_size, padding=padding)
    except ValueError as exc:
        raise UserError(f"classifier {config.classifier}: {exc}") from None
    # 0.9, not Keras' 0.99: the generator changes the classifier's input every step (batch_norm.py)
    set_batch_norm_momentum(classifier, config.bn_momentum, synchronized=synchronized)
    discriminator = Discriminator(base_filters=max(8, 2 * config.base_filters)) if config.three_player else None
    spectral = None
    if config.spectral_adversary:
        spectral = SpectralClassifier(len(classes))
        set_batch_norm_momentum(spectral, config.bn_momentum, synchronized=synchronized)
    model = GECO(
        generator,
        classifier,
        num_classes=len(classes),
        beta=effective_beta(config.beta, image_size, image_size, config.beta_scaling),
        discriminator=discriminator,
        spectral_classifier=spectral,
        spectral_weight=config.spectral_weight,
        critic_steps=config.critic_steps,
        use_mse=not config.no_mse,
        label_smoothing=config.label_smoothing,
        disc_weight=config.disc_weight,
        pool_size=config.pool_size,
        pool_fraction=config.pool_fraction,
        warmup_steps=config.warmup_steps,
        image_size=image_size,
        seed=config.seed,
    )
    policy = resolve_precision(config.precision)

    def adam(lr: float) -> keras.optimizers.Optimizer:
        return wrap_optimizer(keras.optimizers.Adam(float(lr), beta_1=config.adam_beta_1), policy)

    model.compile(
        g_optimizer=adam(config.g_lr),
        c_optimizer=adam(config.c_lr),
        d_optimizer=adam(config.d_lr) if discriminator is not None else None,
        s_optimizer=adam(config.s_lr) if spectral is not None else None,
    )
    model.build((None, image_size, image_size, 1))
    return model


def classifier_padding(config: TrainConfig, image_size: int) -> str:
    """The classifier's convolution padding: ``config.classifier_padding``, or for ``auto``
    DeepDicomSort's 'valid' when the image is large enough (:func:`choose_padding`)."""
    return choose_padding(image_size) if config.classifier_padding == "auto" else config.classifier_padding


def _check_data(data: DatasetInfo, target: str) -> list[str]:
    classes = check_target(data, target)
    for split in ("train", "val"):
        if data.count(split, target) == 0:
            raise UserError(f"{data.path}: split {split!r} has no slices with a known {target!r}")
    return classes


def _epoch_dataset(data: DatasetInfo, target: str, config: TrainConfig, epoch: int, strategy) -> tf.data.Dataset:
    """The training batches of one epoch: the order depends only on (seed, epoch), so a resumed
    run sees exactly the batches an uninterrupted one would."""
    ds = make_dataset(
        data, "train", target, config.batch_size, shuffle=True, seed=config.seed * 100_003 + epoch, drop_remainder=True
    )
    return strategy.experimental_distribute_dataset(ds)


def _run_config(config: TrainConfig, model: GECO, data: DatasetInfo, data_dir, target: str, classes, strategy) -> dict:
    """What ``RUN/config.json`` holds (docs/runs.md): the dataset, the config and what it
    resolved to on this dataset and machine."""
    size = data.image_size
    band = getattr(model.generator, "output_band", None)
    return {
        "target": target,
        "classes": classes,
        "data": str(Path(data_dir).resolve()),
        "image_size": size,
        "n_train": data.count("train", target),
        "n_val": data.count("val", target),
        "config": config.to_dict(),
        "resolved": {
            "beta": config.beta,
            "beta_effective": model.beta,
            "beta_rule": f"beta * {BETA_REFERENCE_SIZE}^2 / (H*W)" if config.beta_scaling == "area" else "beta",
            "pixel_mse": model.use_mse,
            "classifier_padding": classifier_padding(config, size),
            "output_band": list(band) if band else None,
            "steps_per_epoch": steps_per_epoch(config, data, target),
            "precision": resolve_precision(config.precision),
            "strategy": describe(strategy),
            "generator_config": model.generator.get_config(),
            "classifier_config": model.classifier.get_config(),
            "discriminator_config": model.discriminator.get_config() if model.discriminator is not None else None,
        },
    }


def train_geco(
    data_dir: str | Path,
    out_dir: str | Path,
    target: str = "manufacturer",
    config: TrainConfig | None = None,
    resume: bool = False,
    progress: Progress | bool = QUIET,
    **overrides,
) -> dict:
    """Train GECO on ``data_dir`` for ``target``, writing the run directory ``out_dir``.

    ``config`` (default: :class:`TrainConfig`'s defaults) with ``overrides`` (field names, e.g.
    ``epochs=2``) applied. With ``resume`` the stored config is used and only ``epochs`` and
    ``time_budget_minutes`` may be overridden. ``progress``: a :class:`Progress` (an epoch bar
    and one line per epoch on stderr) or a bool (True = shown). Returns the test metrics (also
    written to ``RUN/metrics.json``). Raises :class:`UserError` for anything the user can fix.
    """
    if isinstance(progress, bool):
        progress = Progress(quiet=not progress)
    overrides = {k: v for k, v in overrides.items() if v is not None}
    run = RunDir(out_dir)
    if resume:
        stored = run.read_config()
        config = TrainConfig.from_stored(stored, str(run.config))
        config = config.replace(_source="resume", **{k: v for k, v in overrides.items() if k in RESUMABLE_OVERRIDES})
        data_dir, target = stored["data"], stored["target"]
    else:
        if run.has_run():
            raise UserError(f"{run.path}: already holds a run; use --resume to continue it or choose a new --out")
        config = (config or TrainConfig()).replace(_source="train_geco", **overrides)
    data = open_dataset(data_dir)
    classes = _check_data(data, target)
    learnt = learnt_accuracy(len(classes))
    steps = steps_per_epoch(config, data, target)

    keras.utils.set_random_seed(config.seed)
    strategy = get_strategy(config.strategy)
    with precision_policy(resolve_precision(config.precision)), strategy.scope():
        model = build_geco(config, classes, data.image_size, strategy, data)
        epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
    ckpt = make_checkpoint(model, epoch_var)
    manager = checkpoint_manager(ckpt, run)

    history: list[dict] = []
    if resume and manager.latest_checkpoint:
        ckpt.restore(manager.latest_checkpoint).assert_existing_objects_matched()
        history = [r for r in run.read_history() if r["epoch"] <= int(epoch_var.numpy())]
        run.write_history(history)
    start_epoch = int(epoch_var.numpy())
    run.create()
    run.write_config(_run_config(config, model, data, data_dir, target, classes, strategy))

    inner = tf.function(model.train_step, jit_compile=config.jit, reduce_retracing=True)

    @tf.function
    def distributed_step(batch):
        per_replica = strategy.run(inner, args=(batch,))
        return {k: strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None) for k, v in per_replica.items()}

    writer = tf.summary.create_file_writer(str(run.logs))
    budget = config.time_budget_minutes
    started = time.monotonic()
    epoch_times: list[float] = []
    stopped_by_budget = False
    for epoch in range(start_epoch + 1, config.epochs + 1):
        if budget and epoch_times and time.monotonic() - started + float(np.mean(epoch_times)) > budget * 60:
            stopped_by_budget = True
            break
        t0 = time.monotonic()
        sums: dict[str, float] = {}
        iterator = iter(_epoch_dataset(data, target, config, epoch, strategy))
        with progress.bar(total=steps, desc=f"epoch {epoch}/{config.epochs}") as bar:
            for _ in range(steps):
                for k, v in distributed_step(next(iterator)).items():
                    sums[k] = sums.get(k, 0.0) + float(v)
                bar.update(1)
        val = validate_epoch(model, data, target, config.selection_probe, seed=config.seed)
        row = {k: v / steps for k, v in sums.items()}
        row.update(epoch=epoch, step=int(model.step_counter.numpy()), **val, seconds=time.monotonic() - t0)
        row["learning_rate"] = float(keras.ops.convert_to_numpy(model.g_optimizer.learning_rate))
        for k in ("gen_loss", "gen_adv_loss", "gen_mse", "cls_loss", "cls_accuracy"):
            row.setdefault(k, None)
        if not all(math.isfinite(row[k]) for k in ("gen_loss", "cls_loss")):
            raise RuntimeError(f"epoch {epoch}: losses are not finite ({row['gen_loss']}, {row['cls_loss']})")
        history.append(row)
        with writer.as_default(step=epoch):
            for k, v in row.items():
                if k != "epoch" and isinstance(v, (int, float)):
                    _scalar_summary(k, v, epoch)
        writer.flush()
        run.write_history(history)
        best, _ = select_best(history, config.ssim_target, config.warmup_steps, learnt)
        if best is not None and best["epoch"] == epoch:
            _save_networks(run, model)
        epoch_var.assign(epoch)
        manager.save(checkpoint_number=epoch)
        epoch_times.append(time.monotonic() - t0)
        progress.note(_epoch_line(row))
    writer.close()

    if not history:
        raise UserError(f"{run.path}: no epoch was trained (epochs={config.epochs} already done?)")
    best, _ = select_best(history, config.ssim_target, config.warmup_steps, learnt)
    # The final networks are those of the best epoch, restored from its own checkpoint (this
    # also covers a run killed after saving generator.keras but before its checkpoint).
    parts = network_parts(model)
    parts.pop("discriminator_weights", None)
    tf.train.Checkpoint(**parts).read(
        checkpoint_path(run, best["epoch"])
    ).assert_existing_objects_matched().expect_partial()
    _save_networks(run, model)
    metrics = test_metrics(model, data, target, classes)
    metrics.update(
        best_epoch=int(best["epoch"]),
        ssim_target=config.ssim_target,
        ssim_target_met=bool(best["val_ssim"] is not None and best["val_ssim"] >= config.ssim_target),
        # The selection rule counts epochs from the first one at which an adversary's validation
        # accuracy reached `learnt_accuracy` (None: none ever did, so a low accuracy of the kept
        # epoch is no evidence of removal; the command warns).
        learnt_accuracy=learnt,
        first_learnt_epoch=first_learnt_epoch(history, learnt),
        # False when every epoch ended inside the warm-up (a budget too short for this machine):
        # the generator is then near the identity and the co-trained classifier untrained, so
        # its accuracy (often near chance) says nothing about removal.
        adversarial_epochs=sum(1 for r in history if r.get("step") is None or r["step"] > config.warmup_steps),
        epochs_trained=len(history),
        stopped_by_time_budget=stopped_by_budget,
        training_seconds=float(sum(r["seconds"] for r in history)),
    )
    run.write_metrics(metrics)
    return metrics


def _epoch_line(row: dict) -> str:
    """The one line printed after each epoch."""
    probe = row["val_accuracy_probe"]
    return (
        f"epoch {row['epoch']}: val accuracy {row['val_accuracy_cotrained']:.3f}"
        + (f"  fresh probe {probe:.3f}" if probe is not None else "")
        + f"  SSIM {row['val_ssim']:.4f}  PSNR {row['val_psnr']:.2f}  ({row['seconds']:.0f} s)"
    )


def _save_networks(run: RunDir, model: GECO) -> None:
    """``generator.keras``, ``classifier.keras`` (and ``spectral_classifier.keras``), atomically."""
    run.save_model(model.generator, run.generator)
    run.save_model(model.classifier, run.classifier)
    if model.spectral_classifier is not None:
        run.save_model(model.spectral_classifier, run.path / "spectral_classifier.keras")


def test_metrics(model: GECO, data: DatasetInfo, target: str, classes: list[str]) -> dict:
    """The design's metrics that training can fill, on the test split."""
    res = predict_split(model, data, "test", target, with_labels=("modality",))
    c = len(classes)
    confusion = np.zeros((c, c), dtype=int)
    for t, p in zip(res["labels"], res["pred"]):
        confusion[int(t), int(p)] += 1
    modalities = data.classes("modality")
    per_modality = {}
    for i, name in enumerate(modalities):
        mask = res["modality"] == i
        if mask.any():
            per_modality[name] = {
                "accuracy_cotrained": float(np.mean(res["pred"][mask] == res["labels"][mask])),
                "ssim": float(np.mean(res["ssim"][mask])),
                "n": int(mask.sum()),
            }
    metrics = {
        "target": target,
        "classes": classes,
        "n_test": int(len(res["labels"])),
        "accuracy_cotrained": float(np.mean(res["pred"] == res["labels"])) if len(res["labels"]) else float("nan"),
        "chance": 1.0 / c,
        "ssim": float(np.mean(res["ssim"])),
        "psnr": float(np.mean(res["psnr"])),
        "per_modality": per_modality,
        "confusion_cotrained": confusion.tolist(),
    }
    if "pred_spectral" in res:  # the second adversary's accuracy on the same generated slices
        metrics["accuracy_cotrained_spectral"] = float(np.mean(res["pred_spectral"] == res["labels"]))
    return metrics


def _scalar_summary(tag: str, value: float, step: int) -> None:
    """A TensorBoard scalar without importing ``tensorboard`` (not a dependency): the same
    event ``tf.summary.scalar`` writes, tagged for the scalars plugin."""
    meta = summary_pb2.SummaryMetadata(plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"))
    tf.summary.write(tag, tf.constant(float(value), tf.float32), step=step, metadata=meta)
