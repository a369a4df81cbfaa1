"""``geco-tf baseline``: the DeepDicomSort transfer-learning baseline (paper section 3.2)."""

from __future__ import annotations

import click
from geco_tf_cli.common import output_dir, target_option


@click.command(
    "baseline",
    epilog="""\b
Examples:
  geco-tf baseline --data data --target manufacturer --out runs/baseline
  geco-tf baseline --data data --target manufacturer --out runs/dds \\
      --dds-weights model_all_brain_tumor_data.hdf5 --epochs 3
  geco-tf baseline --data data --target field_strength --out runs/fs --epochs 10 --seed 1
""",
)
@click.option("--data", "data_dir", required=True, type=click.Path(), help="Dataset directory (from synth or preprocess).")
@target_option
@click.option("--out", "out_dir", required=True, type=click.Path(), help="Run directory to write.")
@click.option(
    "--epochs",
    type=click.IntRange(min=1),
    default=None,
    help="Training epochs. Default: 3 with --dds-weights (the paper), 16 from scratch.",
)
@click.option(
    "--dds-weights",
    type=click.Path(),
    default=None,
    help="DeepDicomSort's model_all_brain_tumor_data.hdf5: load and freeze its backbone "
    "(slices are resampled to 256x256). Without it the same architecture is trained from scratch.",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed (weights, shuffling, dropout).")
@click.option("--quiet", is_flag=True, help="No step lines or progress bars on stderr.")
def command(
    data_dir: str,
    target: str,
    out_dir: str,
    epochs: int | None,
    dds_weights: str | None,
    batch_size: int,
    seed: int,
    quiet: bool,
) -> None:
    """Train the DeepDicomSort baseline classifier and report its test accuracy.

    With --dds-weights, DeepDicomSort's published Keras weights are read (h5py only, every layer
    shape checked), the convolutional backbone is frozen and a new dense head is trained for the
    dataset's classes. Without weights the same architecture is trained from scratch, and the run
    says so (metrics.json: "pretrained": false). Writes RUN/config.json, history.csv,
    baseline.keras and metrics.json (accuracy_original, confusion_original).
    """
    output_dir(out_dir, "--out")
    from geco_tf.progress import Progress
    from geco_tf.training.baseline import BASELINE_STEPS, run_baseline  # heavy: TensorFlow

    metrics = run_baseline(
        data_dir,
        out_dir,
        target=target,
        epochs=epochs,
        dds_weights=dds_weights,
        batch_size=batch_size,
        seed=seed,
        progress=Progress(quiet=quiet, steps=BASELINE_STEPS),
    )
    mode = "pretrained DeepDicomSort backbone, frozen" if metrics["pretrained"] else "trained from scratch, no weights"
    click.echo(
        f"baseline: {mode}; target {metrics['target']}, {metrics['epochs']} epochs (kept epoch {metrics['best_epoch']})"
    )
    width = max(len(c) for c in metrics["classes"])
    click.echo("confusion (rows: true class, columns: predicted, same order):")
    for name, row in zip(metrics["classes"], metrics["confusion_original"]):
        click.echo(f"  {name:<{width}}  " + " ".join(f"{v:>5}" for v in row))
    click.echo(
        f"test accuracy {metrics['accuracy_original']:.4f} on {metrics['n_test']} slices "
        f"(chance {metrics['chance']:.2f}, loss {metrics['loss_original']:.4f})"
    )
    click.echo(f"wrote {out_dir}/metrics.json, baseline.keras, history.csv, config.json")
