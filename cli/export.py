"""``geco-tf export``: a trained generator as a TF Serving SavedModel and/or a TFLite file."""

from __future__ import annotations

from pathlib import Path

import click


@click.command(
    "export",
    epilog="""\b
Examples:
  geco-tf export --run runs/geco --saved-model serving/geco --tflite geco.tflite
  geco-tf export --run runs/geco --saved-model serving/geco --version 2
  geco-tf export --run runs/geco --tflite geco-256-f16.tflite --tflite-size 256 --quantize float16
""",
)
@click.option(
    "--run", "run", required=True, type=click.Path(), help="Run directory (holds generator.keras) or a .keras file."
)
@click.option(
    "--saved-model",
    "saved_model",
    type=click.Path(),
    default=None,
    help="TF Serving model base path: the SavedModel goes to DIR/<version>/.",
)
@click.option(
    "--version",
    "version",
    type=click.IntRange(min=0),
    default=1,
    show_default=True,
    help="SavedModel version directory.",
)
@click.option("--tflite", "tflite", type=click.Path(), default=None, help="TFLite (LiteRT) file to write.")
@click.option(
    "--tflite-size",
    type=click.IntRange(min=1),
    default=None,
    help="Square input size of the TFLite file. Default: the run's training size (config.json image_size), else 64.",
)
@click.option(
    "--quantize",
    type=click.Choice(["dynamic", "float16"]),
    default=None,
    help="TFLite weights: 'dynamic' = int8 (4x smaller, int8 kernels, less exact), 'float16' (2x smaller, near float32).",
)
def command(
    run: str, saved_model: str | None, version: int, tflite: str | None, tflite_size: int | None, quantize: str | None
) -> None:
    """Export the run's final generator for deployment.

    The SavedModel's serving_default signature takes `images`, float32 [batch, height, width, 1]
    raw slices of any size in the scanner's units, and returns `deartifacted` of the same shape
    and units: intensity normalisation, padding, the generator, cropping and the inverse scaling
    all run inside the graph (see docs/serving.md). The TFLite file holds the same graph at one
    fixed size, batch 1.
    """
    if saved_model is None and tflite is None:
        raise click.UsageError("give --saved-model DIR and/or --tflite FILE")
    from geco_tf.export.generator import DEFAULT_IMAGE_SIZE, load_generator, training_image_size
    from geco_tf.export.saved_model import export_saved_model
    from geco_tf.export.tflite import export_tflite

    generator = load_generator(run)
    if saved_model is not None:
        path = export_saved_model(generator, saved_model, version=version)
        click.echo(f"SavedModel: {path} (signature serving_default: images -> deartifacted)")
    if tflite is not None:
        if tflite_size is None:
            tflite_size = training_image_size(run) if Path(run).is_dir() else DEFAULT_IMAGE_SIZE
        path = export_tflite(generator, tflite, size=tflite_size, quantize=quantize)
        kind = {"dynamic": "dynamic-range int8 weights", "float16": "float16 weights"}.get(quantize or "", "float32")
        click.echo(f"TFLite: {path} ([1, {tflite_size}, {tflite_size}, 1], {kind})")
