"""``train_geco``: the library entry point behind ``geco-tf train`` (run layout: docs/runs.md).

One call builds the networks for the dataset's image size, plays the GECO game for ``epochs``
epochs (or until the time budget), validates after every epoch, keeps every epoch in
``history.csv`` and a checkpoint, and finally restores the best validation epoch (design.md:
lowest co-trained accuracy among epochs whose SSIM meets the target; with ``selection_probe``,
a probe fitted afresh after each epoch counts too) and measures it on the test split.
``resume=True`` continues a killed run after its last finished epoch.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import click
import keras
import numpy as np
import tensorflow as tf

from geco_tf.data.dataset import DatasetInfo, check_target, open_dataset
from geco_tf.data.pipeline import make_dataset
from geco_tf.errors import UserError
from geco_tf.models import Discriminator, build_classifier, build_generator, choose_padding
from geco_tf.models.background import background_level
from geco_tf.models.spectral import SpectralClassifier
from geco_tf.training.batch_norm import set_batch_norm_momentum
from geco_tf.training.distribute import describe, get_strategy
from geco_tf.training.fresh_probe import SELECTION_PROBES
from geco_tf.training.geco import GECO
from geco_tf.training.holdout import add_holdout_flags, holdout_slice_ids
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

#: The generator's fidelity term (``--fidelity``): the paper's per-pixel squared error (``mse``,
#: weight ``beta``), ``1 - SSIM`` (``ssim``, weight ``ssim_weight``), or both.
FIDELITIES = ("mse", "ssim", "mse+ssim")
#: ``--lr-schedule`` choices (:func:`learning_rate`).
LR_SCHEDULES = ("constant", "cosine")

#: Every option of :func:`train_geco` with its default (written resolved into config.json).
DEFAULTS: dict = {
    "generator": "unet",
    "classifier": "dds",
    "classifier_padding": "auto",
    "base_filters": 16,
    "depth": 3,
    "input_skip": True,
    "edit_space": "logit",
    "linear_filter": 0,
    "noise_channels": 0,
    "output_band": "auto",
    "background_gain": False,
    "zero_background": False,
    "fidelity": "mse",
    "beta": 0.001,
    "beta_scaling": "area",
    "g_lr": 1e-3,
    "c_lr": 1e-3,
    "d_lr": 5e-4,
    "adam_beta_1": 0.5,
    "critic_steps": 2,
    "classifier_snapshots": 0,
    "generator_ema": 0.0,
    "three_player": False,
    "spectral_adversary": True,
    "spectral_weight": 1.0,
    "s_lr": 1e-3,
    "no_mse": False,
    "label_smoothing": 0.1,
    "bn_momentum": 0.9,
    "disc_weight": 1.0,
    "pool_size": 512,
    "pool_fraction": 0.5,
    "classifier_holdout": 0.0,
    "classifier_shift": 0,
    "classifier_flip": False,
    "lr_schedule": "constant",
    "warmup_steps": 100,
    "epochs": 15,
    "batch_size": 32,
    "steps_per_epoch": None,
    "ssim_target": 0.972,
    "selection_probe": "fourier",
    "ssim_weight": 20.0,
    "ssim_setpoint": 0.0,
    "beta_rate": 0.05,
    "time_budget_minutes": 14.0,
    "precision": "auto",
    "strategy": "auto",
    "jit": False,
    "seed": 0,
}

#: Options a resumed run may change (everything else comes from the stored config).
RESUMABLE_OVERRIDES = ("epochs", "time_budget_minutes")


def effective_beta(beta: float, height: int, width: int, scaling: str = "area") -> float:
    """``beta`` for the image size: the pixel term is a *sum* over pixels, so at H x W it is
    (H W / 512^2) times smaller than at 512 x 512; ``area`` scaling multiplies beta back by
    512^2 / (H W) to keep the paper's balance. ``none`` uses beta as given."""
    if scaling == "none":
        return float(beta)
    if scaling != "area":
        raise UserError(f"--beta-scaling {scaling!r}: choose 'area' or 'none'")
    return float(beta) * BETA_REFERENCE_SIZE**2 / (height * width)


def fidelity_terms(fidelity: str, ssim_weight: float, no_mse: bool = False) -> tuple[bool, float]:
    """(use the pixel term, weight of the SSIM term) for ``--fidelity``; ``--no-mse`` (Table 1's
    last row) drops every fidelity term."""
    if fidelity not in FIDELITIES:
        raise UserError(f"--fidelity {fidelity!r}: choose one of {', '.join(FIDELITIES)}")
    if no_mse:
        return False, 0.0
    return "mse" in fidelity, float(ssim_weight) if "ssim" in fidelity else 0.0


def resolve_options(options: dict, size: int) -> dict:
    """``options`` (all keys of :data:`DEFAULTS`) plus what they mean for ``size`` x ``size``
    slices on this machine: ``beta_effective``, ``use_mse``, ``ssim_weight_resolved``,
    ``precision_resolved``, ``classifier_padding_resolved`` (what ``_build`` and config.json use)."""
    opts = dict(options)
    if not 1 <= int(opts["critic_steps"]) <= 5:
        raise UserError(f"--critic-steps {opts['critic_steps']}: use 1 to 5")
    opts["beta_effective"] = effective_beta(opts["beta"], size, size, opts["beta_scaling"])
    opts["use_mse"], opts["ssim_weight_resolved"] = fidelity_terms(opts["fidelity"], opts["ssim_weight"], opts["no_mse"])
    opts["precision_resolved"] = resolve_precision(opts["precision"])
    padding = opts["classifier_padding"]
    opts["classifier_padding_resolved"] = choose_padding(size) if padding == "auto" else padding
    if opts["selection_probe"] not in SELECTION_PROBES:
        raise UserError(f"--selection-probe {opts['selection_probe']!r}: choose one of {', '.join(SELECTION_PROBES)}")
    return opts


def resolve_output_band(output_band, data: DatasetInfo, generator: str = "unet") -> tuple[float, float] | None:
    """``--output-band``: "off" (or None), "auto" (the dataset's common acquired band,
    :meth:`DatasetInfo.acquired_band`; off when the dataset does not record one, or for a
    ``generator`` other than the U-Net, the only one with the layer), or (rows, columns)
    fractions of Nyquist, also as the text "ROWS,COLS"."""
    if output_band in (None, "off"):
        return None
    if output_band == "auto":
        return data.acquired_band() if generator == "unet" else None
    if isinstance(output_band, str):
        output_band = output_band.replace("x", ",").split(",")
    try:
        rows, cols = (float(b) for b in output_band)
    except (TypeError, ValueError):
        raise UserError(f"--output-band {output_band!r}: use auto, off or ROWS,COLS (fractions of Nyquist)") from None
    if not (0.0 < rows <= 1.0 and 0.0 < cols <= 1.0):
        raise UserError(f"--output-band {rows:g},{cols:g}: both fractions must be in (0, 1]")
    return rows, cols


def resolve_background_level(background_gain: bool, data: DatasetInfo, target: str) -> list[float] | None:
    """``--background-gain``: the air's noise level (centre, spread) on the training split, which
    :class:`~geco_tf.models.background.BackgroundGain` standardises by; None when off. Computed
    from the data each time, so a resumed run rebuilds the same generator."""
    if not background_gain:
        return None
    batches = make_dataset(data, "train", target, batch_size=256, cache=False)
    return list(background_level(images for images, _ in batches))


def resolve_data_options(opts: dict, data: DatasetInfo, target: str) -> dict:
    """``opts`` with the options that depend on the dataset resolved (``output_band_resolved``,
    ``background_level_resolved``, ``steps_per_epoch_resolved``): what :func:`_build` needs
    besides :func:`resolve_options`."""
    n_train = data.count("train", target)
    steps = n_train // opts["batch_size"]
    if opts["steps_per_epoch"]:
        steps = min(steps, int(opts["steps_per_epoch"])) if steps else int(opts["steps_per_epoch"])
    if steps < 1:
        raise UserError(
            f"{data.path}: {n_train} training slices is less than one batch of --batch-size {opts['batch_size']}"
        )
    return {
        **opts,
        "output_band_resolved": resolve_output_band(opts["output_band"], data, opts["generator"]),
        "background_level_resolved": resolve_background_level(opts["background_gain"], data, target),
        "steps_per_epoch_resolved": steps,
    }


def learning_rate(lr: float, schedule: str, updates: int | None = None) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """Adam's learning rate for ``--lr-schedule``: ``constant``, or ``cosine`` decay to 0 over the
    ``updates`` the optimizer makes in the planned epochs (a classifier updates ``critic_steps``
    times per step, so every network is at the same point of its schedule). The schedule reads
    the optimizer's own step count, which the checkpoint keeps: a resumed run continues it."""
    if schedule == "constant":
        return float(lr)
    if schedule == "cosine":
        if not updates:
            raise ValueError("a cosine schedule needs the number of updates it decays over")
        return keras.optimizers.schedules.CosineDecay(float(lr), decay_steps=int(updates))
    raise UserError(f"--lr-schedule {schedule!r}: choose one of {', '.join(LR_SCHEDULES)}")


def _check_data(data: DatasetInfo, target: str) -> list[str]:
    classes = check_target(data, target)
    for split in ("train", "val"):
        if data.count(split, target) == 0:
            raise UserError(f"{data.path}: split {split!r} has no slices with a known {target!r}")
    return classes


def _build(options: dict, classes: list[str], size: int, strategy: tf.distribute.Strategy) -> GECO:
    """Networks and optimizers, created under the strategy's scope and the dtype policy."""
    gen_kind = options["generator"]
    gen_kwargs = {"base_filters": options["base_filters"], "depth": options["depth"]}
    if gen_kind == "unet":
        gen_kwargs.update(
            input_skip=options["input_skip"],
            edit_space=options["edit_space"],
            linear_filter=options["linear_filter"],
            noise_channels=options["noise_channels"],
            output_band=options["output_band_resolved"],
            background_gain=options["background_level_resolved"],
            zero_background=options["zero_background"],
        )
    else:
        unet_only = {
            "--noise-channels": options["noise_channels"],
            "--output-band": options["output_band_resolved"],
            "--background-gain": options["background_gain"],
            "--zero-background": options["zero_background"],
        }
        flag = next((f for f, on in unet_only.items() if on), None)
        if flag:
            raise UserError(f"{flag}: only the U-Net generator has it, not --generator {gen_kind}")
    if gen_kind == "multi-residual":
        gen_kwargs = {"filters": 2 * options["base_filters"]}
    try:
        generator = build_generator(gen_kind, **gen_kwargs)
    except ValueError as exc:
        raise UserError(f"--generator: {exc}") from None
    from geco_tf.models.classifiers import feature_size

    padding = options["classifier_padding_resolved"]
    if options["classifier"] == "maxpool" and feature_size(size, padding) < 1:
        raise UserError(
            f"--classifier maxpool: {size}x{size} images are too small for its three 3x3 poolings (need >= 27 px)"
        )
    try:
        classifier = build_classifier(options["classifier"], len(classes), size, padding=padding)
    except ValueError as exc:
        raise UserError(f"--classifier {options['classifier']}: {exc}") from None
    # 0.9, not Keras' 0.99: the generator changes the classifier's input every step (batch_norm.py)
    set_batch_norm_momentum(classifier, options["bn_momentum"], synchronized=strategy.num_replicas_in_sync > 1)
    discriminator = Discriminator(base_filters=max(8, 2 * options["base_filters"])) if options["three_player"] else None
    spectral = None
    if options["spectral_adversary"]:
        spectral = SpectralClassifier(len(classes))
        set_batch_norm_momentum(spectral, options["bn_momentum"], synchronized=strategy.num_replicas_in_sync > 1)
    model = GECO(
        generator,
        classifier,
        num_classes=len(classes),
        beta=options["beta_effective"],
        discriminator=discriminator,
        spectral_classifier=spectral,
        spectral_weight=options["spectral_weight"],
        critic_steps=options["critic_steps"],
        use_mse=options["use_mse"],
        label_smoothing=options["label_smoothing"],
        disc_weight=options["disc_weight"],
        pool_size=options["pool_size"],
        pool_fraction=options["pool_fraction"],
        warmup_steps=options["warmup_steps"],
        image_size=size,
        seed=options["seed"],
        ssim_weight=options["ssim_weight_resolved"],
        ssim_setpoint=options["ssim_setpoint"],
        beta_rate=options["beta_rate"],
        classifier_snapshots=options["classifier_snapshots"],
        generator_ema=options["generator_ema"],
        classifier_shift=options["classifier_shift"],
        classifier_flip=options["classifier_flip"],
    )
    policy = options["precision_resolved"]

    def adam(lr: float, updates_per_step: int = 1) -> keras.optimizers.Optimizer:
        updates = None
        if options["lr_schedule"] != "constant":
            updates = int(options["epochs"]) * int(options["steps_per_epoch_resolved"]) * updates_per_step
        rate = learning_rate(lr, options["lr_schedule"], updates)
        return wrap_optimizer(keras.optimizers.Adam(rate, beta_1=options["adam_beta_1"]), policy)

    critic = options["critic_steps"]
    model.compile(
        g_optimizer=adam(options["g_lr"]),
        c_optimizer=adam(options["c_lr"], critic),
        d_optimizer=adam(options["d_lr"]) if discriminator is not None else None,
        s_optimizer=adam(options["s_lr"], critic) if spectral is not None else None,
    )
    model.build((None, size, size, 1))
    return model


def _epoch_dataset(
    data: DatasetInfo, target: str, options: dict, epoch: int, strategy, held_ids: np.ndarray | None = None
) -> tf.data.Dataset:
    """The training batches of one epoch: the order depends only on (seed, epoch), so a resumed
    run sees exactly the batches an uninterrupted one would. With ``held_ids`` each batch also
    carries which slices the classifiers must not learn from (``holdout.py``)."""
    ds = make_dataset(
        data,
        "train",
        target,
        options["batch_size"],
        shuffle=True,
        seed=options["seed"] * 100_003 + epoch,
        drop_remainder=True,
        with_labels=("slice_id",) if held_ids is not None else (),
    )
    if held_ids is not None:
        ds = add_holdout_flags(ds, held_ids)
    return strategy.experimental_distribute_dataset(ds)


def train_geco(
    data_dir: str | Path,
    out_dir: str | Path,
    target: str = "manufacturer",
    resume: bool = False,
    progress: bool = True,
    **options,
) -> dict:
    """Train GECO on ``data_dir`` for ``target``, writing the run directory ``out_dir``.

    ``options`` are the keys of :data:`DEFAULTS`. Returns the test metrics (also written to
    ``RUN/metrics.json``). Raises :class:`UserError` for anything the user can fix.
    """
    unknown = set(options) - set(DEFAULTS)
    if unknown:
        raise TypeError(f"unknown option(s): {', '.join(sorted(unknown))}")
    run = RunDir(out_dir)
    if resume:
        stored = run.read_config()
        overrides = {k: v for k, v in options.items() if k in RESUMABLE_OVERRIDES and v is not None}
        opts = {**DEFAULTS, **stored["options"], **overrides}
        data_dir = stored["data"]
        target = stored["target"]
    else:
        if run.has_run():
            raise UserError(f"{run.path}: already holds a run; use --resume to continue it or choose a new --out")
        opts = {**DEFAULTS, **{k: v for k, v in options.items() if v is not None}}
    data = open_dataset(data_dir)
    classes = _check_data(data, target)
    learnt = learnt_accuracy(len(classes))
    size = data.image_size
    opts = resolve_options(opts, size)
    opts = resolve_data_options(opts, data, target)
    fraction = float(opts["classifier_holdout"])
    held_ids = holdout_slice_ids(data, target, fraction, seed=int(opts["seed"])) if fraction else None

    keras.utils.set_random_seed(int(opts["seed"]))
    strategy = get_strategy(opts["strategy"])
    with precision_policy(opts["precision_resolved"]), strategy.scope():
        model = _build(opts, classes, size, strategy)
        epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
    ckpt = make_checkpoint(model, epoch_var)
    manager = checkpoint_manager(ckpt, run)

    history: list[dict] = []
    if resume and manager.latest_checkpoint:
        ckpt.restore(manager.latest_checkpoint).assert_existing_objects_matched()
        done = int(epoch_var.numpy())
        history = [r for r in run.read_history() if r["epoch"] <= done]
        run.write_history(history)
    elif resume:
        history = []
    start_epoch = int(epoch_var.numpy())

    run.create()
    config = {
        "target": target,
        "classes": classes,
        "data": str(Path(data_dir).resolve()),
        "image_size": size,
        "n_train": data.count("train", target),
        "n_val": data.count("val", target),
        "options": {k: opts[k] for k in DEFAULTS},
        "resolved": {
            "beta": opts["beta"],
            "beta_effective": opts["beta_effective"],
            "beta_rule": f"beta * {BETA_REFERENCE_SIZE}^2 / (H*W)" if opts["beta_scaling"] == "area" else "beta",
            "fidelity_terms": {"pixel_mse": opts["use_mse"], "ssim_weight": opts["ssim_weight_resolved"]},
            "classifier_padding": opts["classifier_padding_resolved"],
            "output_band": list(opts["output_band_resolved"]) if opts["output_band_resolved"] else None,
            "background_level": opts["background_level_resolved"],
            "classifier_holdout_slices": None if held_ids is None else int(len(held_ids)),
            "precision": opts["precision_resolved"],
            "strategy": describe(strategy),
            "generator_config": model.generator.get_config(),
            "classifier_config": model.classifier.get_config(),
            "discriminator_config": model.discriminator.get_config() if model.discriminator is not None else None,
        },
    }
    run.write_config(config)

    steps = opts["steps_per_epoch_resolved"]

    inner = tf.function(model.train_step, jit_compile=bool(opts["jit"]), reduce_retracing=True)

    @tf.function
    def distributed_step(batch):
        per_replica = strategy.run(inner, args=(batch,))
        return {k: strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None) for k, v in per_replica.items()}

    ema_step = tf.function(model.update_ema)
    writer = tf.summary.create_file_writer(str(run.logs))
    budget = opts["time_budget_minutes"]
    started = time.monotonic()
    epoch_times: list[float] = []
    stopped_by_budget = False
    for epoch in range(start_epoch + 1, int(opts["epochs"]) + 1):
        if budget and epoch_times:
            elapsed = time.monotonic() - started
            if elapsed + float(np.mean(epoch_times)) > budget * 60:
                stopped_by_budget = True
                break
        t0 = time.monotonic()
        sums: dict[str, float] = {}
        iterator = iter(_epoch_dataset(data, target, opts, epoch, strategy, held_ids))
        bar = click.progressbar(
            length=steps,
            label=f"epoch {epoch}/{opts['epochs']}",
            file=None if progress else _NullFile(),
            show_eta=True,
        )
        with bar:
            for _ in range(steps):
                logs = distributed_step(next(iterator))
                if model.ema_generator is not None:
                    ema_step()
                for k, v in logs.items():
                    sums[k] = sums.get(k, 0.0) + float(v)
                bar.update(1)
        val = validate_epoch(model, data, target, opts["selection_probe"], seed=opts["seed"])
        if model.snapshots:  # after precise BN: the snapshot is this epoch's classifier as validated
            model.take_snapshot()
        row = {k: v / steps for k, v in sums.items()}
        row.update(epoch=epoch, step=int(model.step_counter.numpy()), **val, seconds=time.monotonic() - t0)
        row["learning_rate"] = float(keras.ops.convert_to_numpy(model.g_optimizer.learning_rate))  # G's, at the epoch's end
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
        best, _ = select_best(history, opts["ssim_target"], opts["warmup_steps"], learnt)
        if best is not None and best["epoch"] == epoch:
            _save_networks(run, model)
        epoch_var.assign(epoch)
        manager.save(checkpoint_number=epoch)
        epoch_times.append(time.monotonic() - t0)
        if progress:
            probe = row["val_accuracy_probe"]
            click.echo(
                f"epoch {epoch}: val accuracy {row['val_accuracy_cotrained']:.3f}"
                + (f"  fresh probe {probe:.3f}" if probe is not None else "")
                + f"  SSIM {row['val_ssim']:.4f}  PSNR {row['val_psnr']:.2f}  ({row['seconds']:.0f} s)",
                err=True,
            )
    writer.close()

    if not history:
        raise UserError(f"{run.path}: no epoch was trained (epochs={opts['epochs']} already done?)")
    best, _ = select_best(history, opts["ssim_target"], opts["warmup_steps"], learnt)
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
        ssim_target=opts["ssim_target"],
        ssim_target_met=bool(best["val_ssim"] is not None and best["val_ssim"] >= opts["ssim_target"]),
        # The selection rule counts epochs from the first one at which an adversary's validation
        # accuracy reached `learnt_accuracy` (None: none ever did, so a low accuracy of the kept
        # epoch is no evidence of removal; the command warns).
        learnt_accuracy=learnt,
        first_learnt_epoch=first_learnt_epoch(history, learnt),
        # False when every epoch ended inside the warm-up (a budget too short for this machine):
        # the generator is then near the identity and the co-trained classifier untrained, so
        # its accuracy (often near chance) says nothing about removal.
        adversarial_epochs=sum(1 for r in history if r.get("step") is None or r["step"] > opts["warmup_steps"]),
        epochs_trained=len(history),
        stopped_by_time_budget=stopped_by_budget,
        training_seconds=float(sum(r["seconds"] for r in history)),
    )
    run.write_metrics(metrics)
    return metrics


def _save_networks(run: RunDir, model: GECO) -> None:
    """``generator.keras``, ``classifier.keras`` (and ``spectral_classifier.keras``), atomically."""
    run.save_model(model.output_generator, run.generator)
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
    from tensorflow.core.framework import summary_pb2

    meta = summary_pb2.SummaryMetadata(plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"))
    tf.summary.write(tag, tf.constant(float(value), tf.float32), step=step, metadata=meta)


class _NullFile:
    """A file that swallows the progress bar when ``progress=False``."""

    def write(self, _s: str) -> int:
        return 0

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False
