"""``geco-tf demo``: the main job on the built-in data, end to end, CPU-sized.

synth -> baseline -> train -> evaluate, each by the same library function its own command uses,
then the headline table. A stage whose output is already complete in ``--out`` is not run again
(an interrupted training run is resumed), so a killed demo continues where it stopped.
"""

from __future__ import annotations

import time
from pathlib import Path

import click
from geco_tf_cli.common import output_dir

#: ``--quick``: a smoke test of the whole chain in a minute or two, not a result.
QUICK = {
    "synth": {"size": 32, "subjects": 24, "slices_per_subject": 4},
    "baseline": {"epochs": 1},
    "train": {"epochs": 1, "base_filters": 4, "depth": 2, "batch_size": 16, "warmup_steps": 0, "pool_size": 0,
              "time_budget_minutes": 0},
    "evaluate": {"audit_epochs": 1, "probe_epochs": 1, "sigmas": (1.0,), "baselines": ("identity", "blur")},
}
#: The demo's own training budget: on two CPU cores it keeps the whole demo near half an hour
#: (``geco-tf train`` has no budget unless asked for one; the demo's numbers in docs/results.md
#: were measured with this one).
DEMO_TIME_BUDGET_MINUTES = 14.0
FULL: dict[str, dict] = {
    "synth": {}, "baseline": {}, "train": {"time_budget_minutes": DEMO_TIME_BUDGET_MINUTES}, "evaluate": {},
}
#: The demo's stages, each announced as a step.
STAGES = 4


def run_demo(out: str | Path, quick: bool = False, target: str = "manufacturer", quiet: bool = False) -> dict:
    """Run the chain into ``out`` (data/, baseline/, geco/, report/) and return the report's
    metrics. ``quick`` shrinks every stage (:data:`QUICK`) to a smoke test. Each stage is a step
    line on stderr, with the stage's own steps and progress bars inside it (none with ``quiet``)."""
    from geco_tf.data.synth import DEFAULT_SUBJECTS, synthesize
    from geco_tf.evaluation.report import EVALUATE_STEPS, evaluate_run
    from geco_tf.progress import Progress
    from geco_tf.training.baseline import BASELINE_STEPS, run_baseline
    from geco_tf.training.train import train_geco

    sizes = QUICK if quick else FULL
    out = Path(out)
    data, baseline, geco, report = out / "data", out / "baseline", out / "geco", out / "report"
    out.mkdir(parents=True, exist_ok=True)
    progress = Progress(quiet=quiet, steps=STAGES)

    def stage(name: str, done: bool, run) -> None:
        if done:
            progress.step(f"[demo] {name}: already done in {out}, skipped")
            return
        progress.step(f"[demo] {name}")
        start = time.monotonic()
        run()
        progress.note(f"[demo] {name}: {time.monotonic() - start:.0f} s")

    def synth() -> None:
        subjects = sizes["synth"].get("subjects", DEFAULT_SUBJECTS)
        with Progress(quiet=quiet).bar(total=subjects, desc="rendering subjects") as bar:
            synthesize(data, **sizes["synth"], progress=bar.update)

    stage("synth (built-in multi-vendor data)", (data / "dataset.json").is_file(), synth)
    stage("baseline (DeepDicomSort-style classifier on original slices)", (baseline / "metrics.json").is_file(),
          lambda: run_baseline(data, baseline, target=target, **sizes["baseline"],
                               progress=Progress(quiet=quiet, steps=BASELINE_STEPS)))
    stage("train (GECO)", (geco / "metrics.json").is_file() and (geco / "generator.keras").is_file(),
          lambda: train_geco(data, geco, target=target, resume=(geco / "config.json").is_file(), progress=not quiet,
                             **sizes["train"]))
    metrics: dict = {}

    def evaluate() -> None:
        metrics.update(evaluate_run(geco, report, data_dir=data, baseline_dir=baseline, **sizes["evaluate"],
                                    progress=Progress(quiet=quiet, steps=EVALUATE_STEPS)))

    stage("evaluate (audit, fidelity, utility, baselines, report)", False, evaluate)
    return metrics


@click.command(
    "demo",
    epilog="""\b
Examples:
  geco-tf demo                       # the full CPU-sized run into ./geco-demo (about an hour on 2 CPU cores)
  geco-tf demo --out /tmp/demo --quick   # a one-minute smoke test of the whole chain
""",
)
@click.option("--out", "out_dir", default="geco-demo", show_default=True, callback=lambda c, p, v: output_dir(v, "--out"),
              help="Directory for data/, baseline/, geco/ and report/.")
@click.option("--quick", is_flag=True, help="Tiny sizes everywhere: checks the chain works, proves nothing.")
@click.option("--quiet", is_flag=True, help="No step lines or progress bars on stderr.")
def command(out_dir: str, quick: bool, quiet: bool) -> None:
    """The main job on the built-in data: synth, baseline, train, evaluate, then the result table.

    Runs the same library functions as `geco-tf synth`, `baseline`, `train` and `evaluate`,
    with their defaults and a training time budget of 14 minutes (CPU-sized). The report, with its verdict on whether the scanner
    signature survives a freshly trained classifier, is OUT/report/index.html.
    """
    metrics = run_demo(out_dir, quick=quick, quiet=quiet)
    from geco_tf.evaluation.report import headline_table

    click.echo("")
    if quick:
        click.echo("(--quick: tiny data and one epoch; these numbers check the chain, they are not a result)")
    click.echo(headline_table(metrics))
    click.echo(f"report: {Path(out_dir) / 'report' / 'index.html'}")
