"""``geco-tf evaluate``: metrics, the retrained-classifier audit, figures and the HTML report."""

from __future__ import annotations

import click
from geco_tf_cli.common import output_dir


def _sigmas(ctx: click.Context, param: click.Parameter, value: str) -> tuple[float, ...]:
    try:
        sigmas = tuple(float(s) for s in value.split(",") if s.strip())
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of numbers") from None
    if not sigmas or any(s <= 0 for s in sigmas):
        raise click.BadParameter(f"{value!r}: give one or more positive sigmas, e.g. 0.5,1,2")
    return sigmas


def _kinds(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    from geco_tf.evaluation.harmonisation import BASELINE_KINDS as known  # numpy only: --help stays fast
    kinds = tuple(k.strip() for k in value.split(",") if k.strip())
    unknown = [k for k in kinds if k not in known]
    if unknown:
        raise click.BadParameter(f"unknown baseline {unknown[0]!r}: choose from {', '.join(known)}")
    return kinds


def _positive(ctx: click.Context, param: click.Parameter, value: int | None) -> int | None:
    if value is not None and value < 1:
        raise click.BadParameter(f"{value} must be at least 1")
    return value


@click.command("evaluate")
@click.option("--run", "run_dir", required=True, type=click.Path(file_okay=False), help="Run directory written by `geco-tf train`.")
@click.option("--data", "data_dir", type=click.Path(file_okay=False), default=None,
              help="Dataset directory (default: the one named in RUN/config.json).")
@click.option("--baseline", "baseline_dir", type=click.Path(file_okay=False), default=None,
              help="Run directory of `geco-tf baseline`: its classifier gives accuracy_original.")
@click.option("--out", "out_dir", required=True, callback=lambda c, p, v: output_dir(v, "--out"),
              help="Report directory: metrics.json, PNG figures, index.html.")
@click.option("--audit-epochs", type=int, default=None, callback=_positive,
              help="Epochs of the fresh DDS-style audit classifier (default: the audit's own).")
@click.option("--probe-epochs", type=int, default=40, show_default=True, callback=_positive,
              help="At most this many epochs of the small CNN probes (leakage, utility); each stops "
                   "after 8 epochs without a better accuracy on held-out training slices.")
@click.option("--sigmas", default="0.5,1,2", show_default=True, callback=_sigmas,
              help="Gaussian blur baselines, in pixels, comma-separated.")
@click.option("--baselines", default="identity,zscore,nyul,blur,kspace", show_default=True, callback=_kinds,
              help="Harmonisation baselines placed beside GECO, comma-separated.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of every audit and probe.")
@click.option("--epoch", type=int, default=None, callback=_positive,
              help="Evaluate this epoch's generator (restored from RUN/checkpoints) instead of the one the run kept.")
@click.option("--quiet", is_flag=True, help="No step lines or progress bars on stderr.")
def command(run_dir, data_dir, baseline_dir, out_dir, audit_epochs, probe_epochs, sigmas, baselines, seed, epoch,
            quiet) -> None:
    """Evaluate a GECO run on the test split and write an HTML report.

    Reports the baseline, co-trained and audit accuracies (fresh classifiers of two architectures
    trained on generated images) with 95% CIs and chance, SSIM/PSNR per modality, utility kept,
    GECO beside harmonisation baselines, and a verdict line saying whether the scanner
    signature survives. Each step and a progress bar with an estimate go to stderr.

    \b
    Examples:
      geco-tf evaluate --run runs/geco --out report
      geco-tf evaluate --run runs/geco --data data --baseline runs/baseline --out report
      geco-tf evaluate --run runs/geco --epoch 12 --out report-epoch12   # another epoch of the run
    """
    from geco_tf.evaluation.report import EVALUATE_STEPS, evaluate_run, headline_table
    from geco_tf.progress import Progress

    metrics = evaluate_run(
        run_dir, out_dir, data_dir=data_dir, baseline_dir=baseline_dir, audit_epochs=audit_epochs,
        probe_epochs=probe_epochs, sigmas=sigmas, baselines=baselines, seed=seed, epoch=epoch,
        progress=Progress(quiet=quiet, steps=EVALUATE_STEPS),
    )
    click.echo(headline_table(metrics))
    click.echo(f"report: {out_dir}/index.html")
