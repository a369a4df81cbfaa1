"""``geco-tf sweep``: the paper's hyper-parameter sweep (section 3.4) on KerasTuner (docs/sweep.md)."""

from __future__ import annotations

import click
from geco_tf_cli.common import output_dir

# Literal copies (checked by a test) so `geco-tf --help` does not import TensorFlow.
TARGETS = ("manufacturer", "field_strength")
PARAMS = "g_lr,c_lr,beta"
VALUES = 7
STEP_DECADES = 0.5
TRIAL_BUDGET_MINUTES = 5.0


@click.command(
    "sweep",
    epilog="""\b
Examples:
  geco-tf sweep --data data --target manufacturer --out sweeps/mf
  geco-tf sweep --data data --out sweeps/mf --resume          # after a stop: the rest
  geco-tf sweep --data data --out sweeps/quick --values 3 --trial-budget 2
  geco-tf sweep --data data --out sweeps/b --params beta --set beta=0.02
  geco-tf sweep --data data --out sweeps/p --config paper.toml --set classifier=maxpool
  geco-tf train --config sweeps/mf/best.toml --data data --target manufacturer --out runs/best

\b
Writes SWEEP/results.csv (one row per trial), SWEEP/sweep.png and SWEEP/best.toml.
Distributed over several machines (one chief, workers): see docs/sweep.md.
""",
)
@click.option("--data", "data_dir", type=click.Path(), default=None, help="Dataset directory (from synth or preprocess); required unless --resume.")
@click.option("--target", type=click.Choice(TARGETS), default=None, help="Scanner label to remove. [default: manufacturer]")
@click.option("--out", "out_dir", required=True, type=click.Path(), callback=lambda c, p, v: output_dir(v, "--out"), help="Sweep directory to write.")
@click.option("--params", default=None, metavar="A,B,...", help=f"Training settings to sweep, one at a time in this order. [default: {PARAMS}]")
@click.option("--values", type=click.IntRange(min=1), default=None, help=f"Log-spaced values per setting, centred on its default. [default: {VALUES}]")
@click.option("--step", type=click.FloatRange(min=0.0, min_open=True), default=None, help=f"Decades between neighbouring values. [default: {STEP_DECADES}]")
@click.option("--trial-budget", type=click.FloatRange(min=0.0, min_open=True), default=None, metavar="MIN", help=f"Minutes of training per trial. [default: {TRIAL_BUDGET_MINUTES:g}]")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None, metavar="FILE.toml", help="Training settings (any subset of the config's fields) given to every trial; a swept setting's value here is its centre.")
@click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE", help="A training setting given to every trial (repeatable; over --config); a swept setting's value here is its centre.")
@click.option("--resume", is_flag=True, help="Continue the sweep in --out: finished trials are not run again.")
@click.option("--max-trials", type=click.IntRange(min=1), default=None, help="Stop after this many trials (continue later with --resume).")
@click.option("--quiet", is_flag=True, help="No progress output.")
def command(data_dir, target, out_dir, params, values, step, trial_budget, config_file, assignments, resume, max_trials, quiet):
    """Sweep learning rates and beta as the GECO paper did (section 3.4).

    Each setting is swept in turn over log-spaced values around its default, the
    ones before it fixed at the best value found; each trial is a time-budgeted
    geco-tf train run scored on the VALIDATION split by the run's own best-epoch
    rule (lower is better; never the test split).
    """
    from geco_tf.progress import Progress
    from geco_tf.training.sweep import run_sweep, trial_settings

    names = None if params is None else tuple(p.strip() for p in params.split(",") if p.strip())
    summary = run_sweep(
        data_dir, out_dir, target=target, params=names, values=values, step=step,
        trial_budget=trial_budget, fixed=trial_settings(config_file, assignments), resume=resume,
        max_trials=max_trials, progress=Progress(quiet=quiet),
    )
    if summary.get("worker"):
        click.echo(f"worker: ran {summary['trials']} trial(s); the chief writes the results")
        return
    click.echo(f"trials finished: {summary['trials']} of {summary['planned_trials']}")
    for warning in summary["warnings"]:
        click.echo(f"warning: {warning}", err=True)
    click.echo(f"results: {summary['results']}")
    if not summary["complete"]:
        click.echo(f"not finished: continue with geco-tf sweep --out {out_dir} --resume")
        return
    best = ", ".join(f"{k} = {v:g}" for k, v in summary["best"].items())
    click.echo(f"best: {best} (trial {summary['best_trial']}, validation score {summary['best_score']:.4f})")
    click.echo(f"plot: {summary['plot']}")
    click.echo(f"config: {summary['config']}")
