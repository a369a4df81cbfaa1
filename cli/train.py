"""``geco-tf train``: GECO adversarial training (paper section 3.1; run layout docs/runs.md).

Every setting is a field of :class:`geco_tf.training.config.TrainConfig`; the few a user chooses
are options here, generated from the dataclass (type, default and help written once, there), and
every field is reachable with ``--preset``, ``--config FILE.toml`` and ``--set key=value``.
Precedence: preset < config file < explicit options < ``--set``.
"""

from __future__ import annotations

import textwrap

import click
from geco_tf_cli.common import output_dir, target_option

from geco_tf.progress import Progress
from geco_tf.training.config import PRESETS, TrainConfig, config_fields, field_types, preset

#: What ``--resume`` may change (a test checks it equals ``train.RESUMABLE_OVERRIDES``; this
#: module does not import TensorFlow before it must).
RESUMABLE = ("epochs", "time_budget_minutes")
#: The settings that are options of their own (what a user chooses), by field name.
OPTIONS = {
    "generator": "--generator",
    "classifier": "--classifier",
    "epochs": "--epochs",
    "time_budget_minutes": "--time-budget",
    "batch_size": "--batch-size",
    "beta": "--beta",
    "three_player": "--three-player",
    "no_mse": "--no-mse",
    "precision": "--precision",
    "strategy": "--strategy",
    "seed": "--seed",
}


def show_default(value) -> str:
    """A field's default as the help shows it (``0.001``, ``on``/``off``, ``none``)."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    return "none" if value is None else str(value)


def config_option(name: str):
    """The click option of field ``name``: its type, choices, bounds and help from the dataclass.
    Its click default is None, so an option not given leaves the preset's / file's value."""
    f, kind = config_fields()[name], field_types()[name]
    text = f"{f.metadata['help']} [default: {show_default(f.default)}]"
    if kind is bool:
        return click.option(OPTIONS[name], name, is_flag=True, default=None, help=text)
    if "choices" in f.metadata:
        kind = click.Choice(f.metadata["choices"])
    elif kind in (int, float) and ("min" in f.metadata or "max" in f.metadata):
        kind = (click.IntRange if kind is int else click.FloatRange)(f.metadata.get("min"), f.metadata.get("max"))
    return click.option(OPTIONS[name], name, type=kind, default=None, help=text)


def build_config(preset_name: str | None, config_file: str | None, options: dict, assignments: tuple[str, ...]) -> TrainConfig:
    """The run's config: preset (``default`` when not given) < ``config_file`` < explicit
    ``options`` (fields; None = not given) < ``--set`` ``assignments``."""
    config = preset(preset_name or "default")
    if config_file:
        config = config.merge_toml(config_file)
    config = config.replace(_source="options", **{k: v for k, v in options.items() if v is not None})
    return config.with_overrides(assignments)


def _assignments(assignments: tuple[str, ...]) -> dict:
    """``--set`` as ``{field: value}`` (values checked and parsed by :meth:`TrainConfig.with_overrides`)."""
    TrainConfig().with_overrides(assignments)
    return {a.partition("=")[0].strip().replace("-", "_"): a.partition("=")[2].strip() for a in assignments}


def _others() -> str:
    """The fields without an option of their own, for the epilog (wrapped, kept as is by click)."""
    names = ", ".join(name for name in config_fields() if name not in OPTIONS) + "."
    return "\b\n" + "\n".join(textwrap.wrap(names, 78))


def _with_config_options(function):
    for name in reversed(OPTIONS):
        function = config_option(name)(function)
    return function


@click.command(
    "train",
    epilog=f"""\b
Examples:
  geco-tf train --data data --target manufacturer --out runs/geco
  geco-tf train --data data --out runs/paper --preset paper      # Table 1's Core row
  geco-tf train --data data --out runs/3p --preset paper --three-player --set critic_steps=2
  geco-tf train --data data --out runs/mine --config mine.toml --set g_lr=5e-4
  geco-tf train --data data --out runs/geco --resume              # after a kill: continue
  geco-tf train --data data --out runs/big --precision mixed_float16 --strategy mirrored --set jit=true

\b
Every setting is a field of TrainConfig (docs/runs.md); those without an option of their own
are set with --set KEY=VALUE or in a --config file:

{_others()}""",
)
@click.option("--data", "data_dir", required=True, type=click.Path(), help="Dataset directory (from synth or preprocess).")
@target_option
@click.option("--out", "out_dir", required=True, type=click.Path(), help="Run directory to write (docs/runs.md).")
@click.option("--resume", is_flag=True, help="Continue the run in --out after its last finished epoch (its stored config; only --epochs and --time-budget may change).")
@click.option("--preset", "preset_name", type=click.Choice(PRESETS), default=None,
              help="Start from a shipped config: default (what measured best here) or paper (section 3.1 as written). [default: default]")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help="TOML file setting any subset of the fields (over the preset).")
@click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE",
              help="Set one field (repeatable; over everything else), e.g. --set warmup_steps=0.")
@_with_config_options
@click.option("--quiet", is_flag=True, help="No epoch bars or per-epoch lines on stderr.")
def command(
    data_dir: str,
    target: str,
    out_dir: str,
    resume: bool,
    preset_name: str | None,
    config_file: str | None,
    assignments: tuple[str, ...],
    quiet: bool,
    **options,
) -> None:
    """Train GECO: a generator that edits slices so that a co-trained classifier cannot tell the
    scanner, while staying close to the original (SSIM, PSNR).

    Writes RUN/config.json, history.csv (every epoch), checkpoints/ (every epoch), logs/
    (TensorBoard), generator.keras, classifier.keras and spectral_classifier.keras (the best
    validation epoch: lowest adversary accuracy among epochs after the warm-up and after an
    adversary first showed it can see the target, with SSIM >= ssim_target) and metrics.json
    (test split). --resume on a finished run trains nothing and re-applies this rule. The
    co-trained accuracy says how well GECO fooled its own adversaries; whether a fresh
    classifier still finds the scanner is for `geco-tf evaluate`.
    """
    output_dir(out_dir, "--out")
    if resume:
        given = {k: v for k, v in options.items() if v is not None}
        given.update(_assignments(assignments))
        fixed = sorted(set(given) - set(RESUMABLE))
        if preset_name or config_file or fixed:
            raise click.UsageError(
                "--resume continues the stored config: only --epochs and --time-budget can change "
                f"(got {', '.join(fixed) or '--preset/--config'})"
            )
    else:
        config = build_config(preset_name, config_file, options, assignments)  # errors before TensorFlow loads
    from geco_tf.training.train import train_geco  # heavy: TensorFlow

    progress = Progress(quiet=quiet)
    if resume:
        metrics = train_geco(data_dir, out_dir, resume=True, progress=progress, **given)
    else:
        metrics = train_geco(data_dir, out_dir, target=target, config=config, progress=progress)
    _report(metrics)
    click.echo(f"wrote {out_dir}")


def _report(metrics: dict) -> None:
    """The result on stdout, and what it cannot show on stderr."""
    click.echo(
        f"GECO {metrics['target']}: best epoch {metrics['best_epoch']} of {metrics['epochs_trained']} "
        f"({metrics['training_seconds'] / 60:.1f} min of training)"
    )
    click.echo(
        f"test: co-trained accuracy {metrics['accuracy_cotrained']:.4f} (chance {metrics['chance']:.2f}, "
        f"n={metrics['n_test']})  SSIM {metrics['ssim']:.4f}  PSNR {metrics['psnr']:.2f} dB"
    )
    if "accuracy_cotrained_spectral" in metrics:
        click.echo(f"test: spectral adversary's accuracy {metrics['accuracy_cotrained_spectral']:.4f}")
    if metrics["adversarial_epochs"] == 0:
        click.echo(
            "warning: every epoch ended inside the generator's warm-up; its co-trained accuracy is that of an "
            "untrained classifier, not a measure of removal: train longer (--epochs, --time-budget, --resume)",
            err=True,
        )
    elif metrics["first_learnt_epoch"] is None:
        click.echo(
            f"warning: no adversary's validation accuracy reached {metrics['learnt_accuracy']:.3f} in any epoch, so "
            "none showed it can see the target and a low accuracy is no evidence of removal; "
            "kept the highest-SSIM epoch: train longer, or check with geco-tf baseline that the target is learnable",
            err=True,
        )
    elif not metrics["ssim_target_met"]:
        click.echo(f"warning: no epoch reached validation SSIM {metrics['ssim_target']}; kept the highest-SSIM epoch", err=True)
