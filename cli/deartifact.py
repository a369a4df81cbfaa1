"""``geco-tf deartifact``: apply a trained generator to NIfTI volumes and DICOM series."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import click

from geco_tf.errors import UserError


@click.command(
    "deartifact",
    epilog="""\b
Examples:
  geco-tf deartifact --model runs/geco brain.nii.gz --out brain_geco.nii.gz
  geco-tf deartifact --model serving/geco study/ --out study_geco/ --strip-vendor-tags
  geco-tf deartifact --model runs/geco/generator.keras dicom/series1 --out cleaned/
""",
)
@click.option(
    "--model",
    required=True,
    type=click.Path(),
    help="Run directory (generator.keras), a .keras file, or an exported SavedModel (base path or version directory).",
)
@click.argument("input_path", metavar="INPUT", type=click.Path())
@click.option(
    "--out",
    "output",
    required=True,
    type=click.Path(),
    help="Output: a .nii/.nii.gz file for one NIfTI INPUT, else a directory mirroring INPUT's tree.",
)
@click.option(
    "--strip-vendor-tags",
    is_flag=True,
    help="DICOM: remove every element that tells manufacturer or field strength (Manufacturer emptied; model, "
    "station, serial, software, coil and sequence names, MagneticFieldStrength, ImagingFrequency, private groups "
    "removed) and regenerate the UIDs under one neutral root, consistently within the run.",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Replace outputs that already exist (default: finished ones are kept, other existing files are skipped).",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=4, show_default=True, help="Slices per model call.")
@click.option("--quiet", is_flag=True, help="No progress bar or skip lines on stderr.")
@click.option(
    "--runner",
    type=click.Choice(["local", "beam"]),
    default="local",
    show_default=True,
    help="local: this process. beam: an Apache Beam pipeline, one element per volume or series, the model "
    "loaded once per worker (pip install 'geco-tf[beam]'; see docs/scale.md); the DirectRunner with 2 "
    "processes by default.",
)
@click.option(
    "--beam-options",
    default=None,
    metavar="FLAGS",
    help='With --runner beam: Beam\'s own flags as one string, e.g. "--runner=FlinkRunner --flink_master=host:8081".',
)
def command(
    model: str,
    input_path: str,
    output: str,
    strip_vendor_tags: bool,
    overwrite: bool,
    batch_size: int,
    quiet: bool,
    runner: str,
    beam_options: str | None,
) -> None:
    """De-artifact INPUT: a NIfTI file, a DICOM file, or a directory of any depth holding both.

    NIfTI: every axial slice goes through the generator; the file keeps its affine, header and
    data type. DICOM: each MR series becomes a new derived series (new UIDs, ImageType
    DERIVED\\SECONDARY, same geometry, pixel data in the original representation); other
    modalities are skipped. --out must not overlap INPUT (exit 2 otherwise): the originals are
    only read. Inputs that cannot be used are listed and skipped (OUTPUT/skipped.csv); every
    output is written atomically and marked done, so a rerun into the same --out continues
    where the last one stopped.
    """
    if runner == "beam":  # without Apache Beam: one line and exit 2, before TensorFlow is imported
        from geco_tf.data.beam_runner import require_beam

        require_beam()
    from geco_tf.export.deartifact import SKIPPED_FILE, deartifact_path
    from geco_tf.progress import Progress

    progress = Progress(quiet=quiet)
    if runner == "beam":
        from geco_tf.export.beam_deartifact import deartifact_beam  # raises the install line without Beam

        run = partial(deartifact_beam, beam_options=beam_options)
    elif beam_options:
        raise UserError("--beam-options: only with --runner beam")
    else:
        run = deartifact_path
    summary = run(
        model,
        input_path,
        output,
        strip_vendor_tags=strip_vendor_tags,
        batch_size=batch_size,
        overwrite=overwrite,
        progress=progress,
    )
    for path, reason in summary.skipped:
        progress.note(f"skipped {path}: {reason}")
    for outcome in summary.done:
        notes = f" ({'; '.join(outcome.notes)})" if outcome.notes else ""
        click.echo(f"{outcome.job.output}: {outcome.images} slices, {outcome.mode}, {outcome.seconds:.1f} s{notes}")
    before = f", {len(summary.finished_before)} finished earlier (kept)" if summary.finished_before else ""
    tail = f"; list in {Path(output) / SKIPPED_FILE}" if summary.skipped and Path(output).is_dir() else ""
    click.echo(f"done: {len(summary.done)} volume(s)/series{before}, {len(summary.skipped)} skipped{tail}")
