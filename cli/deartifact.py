"""``geco-tf deartifact``: apply a trained generator to NIfTI volumes and DICOM series."""

from __future__ import annotations

import click


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
    help="DICOM: blank Manufacturer, ManufacturerModelName, DeviceSerialNumber, SoftwareVersions, "
    "StationName, InstitutionName and remove private tags.",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=4, show_default=True, help="Slices per model call.")
def command(model: str, input_path: str, output: str, strip_vendor_tags: bool, batch_size: int) -> None:
    """De-artifact INPUT: a NIfTI file, a DICOM file, or a directory of any depth holding both.

    NIfTI: every axial slice goes through the generator; the file keeps its affine, header and
    data type. DICOM: each series becomes a new derived series (new UIDs, ImageType
    DERIVED\\SECONDARY, same geometry, pixel data in the original representation). Inputs that
    cannot be read are listed and skipped (OUTPUT/deartifact-skipped.csv); every output file is
    written atomically.
    """
    from pathlib import Path

    from geco_tf.export.deartifact import InputSkipped, Summary, finish, plan, run_job
    from geco_tf.export.load import load_deartifactor

    jobs, skipped = plan(input_path, output)
    summary = Summary(skipped=list(skipped))
    if jobs:
        fn, description = load_deartifactor(model)
        click.echo(f"model: {description}", err=True)
        model_name = Path(model).name
        with click.progressbar(
            jobs,
            label="de-artifacting",
            item_show_func=lambda j: j.label if j else "",
            file=click.get_text_stream("stderr"),
        ) as bar:
            for job in bar:
                try:
                    summary.done.append(
                        run_job(
                            fn, job, strip_vendor_tags=strip_vendor_tags, model_name=model_name, batch_size=batch_size
                        )
                    )
                except InputSkipped as exc:
                    summary.skipped.append((job.label, str(exc)))
    for path, reason in summary.skipped:
        click.echo(f"skipped {path}: {reason}", err=True)
    skipped_csv = finish(summary, input_path, output)
    for outcome in summary.done:
        notes = f" ({'; '.join(outcome.notes)})" if outcome.notes else ""
        click.echo(f"{outcome.job.output}: {outcome.images} slices, {outcome.mode}, {outcome.seconds:.1f} s{notes}")
    tail = f"; list in {skipped_csv}" if skipped_csv else ""
    click.echo(f"done: {len(summary.done)} volume(s)/series, {len(summary.skipped)} skipped{tail}")
