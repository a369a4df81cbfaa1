"""``geco-tf preprocess``: a DICOM tree, or NIfTI volumes with a labels CSV, to a dataset directory."""

from __future__ import annotations

import os

import click
from geco_tf_cli.common import output_dir

from geco_tf.errors import UserError
from geco_tf.progress import Progress


def _default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


@click.command("preprocess")
@click.argument("dicom_dir", required=False, type=click.Path(file_okay=False))
@click.option("--out", "out_dir", required=True, callback=lambda c, p, v: output_dir(v, "--out"),
              help="Dataset directory to write (replaced if it is already a dataset).")
@click.option("--nifti-csv", type=click.Path(dir_okay=False), default=None,
              help="Instead of DICOM_DIR: a CSV with columns path, subject, manufacturer, field_strength, modality.")
@click.option("--size", type=click.IntRange(min=16), default=512, show_default=True,
              help="Square slice size: smaller slices are zero-padded, larger ones centre-cropped (counted in dataset.json).")
@click.option("--workers", type=click.IntRange(min=1), default=_default_workers, show_default="min(4, CPUs)",
              help="Series converted in parallel; memory is about one series per worker.")
@click.option("--key-file", type=click.Path(dir_okay=False), default=None,
              help="Pseudonym key (created if missing). Default: DATA.key beside the dataset. Keep it out of the dataset.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the split by subject (every manufacturer and field strength in every split, then 70/20/10).")
@click.option("--keep-work", is_flag=True, help="Keep the per-series work area (.DATA.work beside the dataset) after success.")
@click.option("--subject-key", type=click.Choice(["patient", "study", "folder"]), default="patient", show_default=True,
              help="What tells subjects apart: PatientID (a PatientID shared by several studies, or empty, falls "
                   "back to the study, with a warning), StudyInstanceUID, or the first folder under DICOM_DIR.")
@click.option("--quiet", is_flag=True, help="No step lines, progress bars or split table (warnings are still shown).")
@click.option("--runner", type=click.Choice(["local", "beam"]), default="local", show_default=True,
              help="local: --workers processes on this machine. beam: an Apache Beam pipeline (pip install "
                   "'geco-tf[beam]'; same dataset; see docs/scale.md), the DirectRunner with 2 processes by default.")
@click.option("--beam-options", default=None, metavar="FLAGS",
              help='With --runner beam: Beam\'s own flags as one string, e.g. "--runner=FlinkRunner '
                   '--flink_master=host:8081" (see docs/scale.md).')
def command(dicom_dir, out_dir, nifti_csv, size, workers, key_file, seed, keep_work, subject_key, quiet, runner,
            beam_options) -> None:
    """Convert a DICOM export (or NIfTI volumes with labels) into a dataset directory.

    Series are found by SeriesInstanceUID in any folder layout, read with correct geometry,
    reoriented to axial, filtered (slices 90% or more pure black/white are dropped, paper 3.3),
    scaled to [-1, 1] and padded to --size. Labels come from the headers: manufacturer, field
    strength (1.5T/3T), modality (T1 PRE, T1 POST, T2, FLAIR, T2 FLAIR, OTHER). Subjects are
    keyed-hash pseudonyms; no name, birth date, accession number or UID is written. Whatever is
    left out is listed in DATA/skipped.csv with a reason. The split puts every manufacturer and
    field strength in train, val and test wherever the subjects allow it, then follows 70/20/10;
    a table of subjects and slices per split and class ends the run. A rerun after an
    interruption skips the series already converted (and redoes those whose files changed).

    \b
    Examples:
      geco-tf preprocess /archive/dicom --out data
      geco-tf preprocess /archive/dicom --out data --size 256 --workers 8 --key-file ~/keys/site.key
      geco-tf preprocess --nifti-csv volumes.csv --out data
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter is not a log line
    from geco_tf.data.preprocess import preprocess

    if (dicom_dir is None) == (nifti_csv is None):
        raise UserError("preprocess: give a DICOM_DIR or --nifti-csv FILE (exactly one)")
    pipeline = None
    if runner == "beam":
        from geco_tf.data.beam_preprocess import BeamPipeline  # raises the install line without Beam

        pipeline = BeamPipeline(beam_options)
    elif beam_options:
        raise UserError("--beam-options: only with --runner beam")
    summary = preprocess(
        out_dir,
        dicom_dir=dicom_dir,
        nifti_csv=nifti_csv,
        size=size,
        workers=workers,
        key_file=key_file,
        seed=seed,
        keep_work=keep_work,
        subject_key=subject_key,
        progress=Progress(quiet=quiet, steps=3),
        log=lambda msg: click.echo(msg, err=True),
        pipeline=pipeline,
    )
    written = summary.written
    resumed = f", {summary.n_resumed} resumed from an earlier run" if summary.n_resumed else ""
    click.echo(
        f"dataset: {out_dir}: {written.n_slices} slices of {size}x{size} from {written.n_series_ok} series{resumed}"
    )
    click.echo(
        f"skipped: {written.n_series_skipped} series and {written.n_files_skipped} file(s) in series, "
        f"reasons in {os.path.join(out_dir, 'skipped.csv')}"
    )
    created = "created; " if summary.key_created else ""
    click.echo(f"pseudonym key: {summary.key_file} ({created}keep it private, never inside the dataset)")
