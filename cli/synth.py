"""``geco-tf synth``: write the built-in multi-vendor MRI dataset."""

from __future__ import annotations

import click
from geco_tf_cli.common import output_dir

# Kept in step with geco_tf.data.synth (not imported here: `geco-tf --help` must stay fast).
DEFAULT_SIZE = 64
DEFAULT_SUBJECTS = 256
DEFAULT_SLICES_PER_SUBJECT = 8
PROTOCOLS = ("shared", "tuned", "bandwidth", "compromise")


@click.command(
    "synth",
    epilog="""\b
Examples:
  geco-tf synth --out data                       # the default demo set (64x64, ~2000 slices)
  geco-tf synth --out small --subjects 16 --slices-per-subject 4
  geco-tf synth --out data128 --size 128 --seed 1
  geco-tf synth --out data_tuned --protocol tuned  # 3T protocol tuned to look like 1.5T
""",
)
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(file_okay=True, dir_okay=True, writable=True),
    help="Dataset directory to write (created; an existing dataset there is replaced).",
)
@click.option(
    "--size",
    type=click.IntRange(min=16, max=256),
    default=DEFAULT_SIZE,
    show_default=True,
    help="Slice size in pixels (square).",
)
@click.option(
    "--subjects",
    type=click.IntRange(min=1),
    default=DEFAULT_SUBJECTS,
    show_default=True,
    help="Simulated subjects; each is scanned on one (manufacturer, field strength) pair, all 8 in turn.",
)
@click.option(
    "--slices-per-subject",
    type=click.IntRange(min=1, max=72),
    default=DEFAULT_SLICES_PER_SUBJECT,
    show_default=True,
    help="Axial slices per subject, shared out over the contrasts T1 PRE, T1 POST, T2, FLAIR.",
)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Random seed (same seed, same bytes).")
@click.option(
    "--protocol",
    type=click.Choice(PROTOCOLS),
    default="shared",
    show_default=True,
    help="shared: one protocol at 1.5T and 3T (3T shows its own contrast and twice the chemical shift). "
    "tuned: the 3T protocol matched to 1.5T as sites do (bandwidth doubled, T1w TR 650 ms, T2w TE 92 ms), "
    "so field strength is a subtle signature. bandwidth: only the 3T bandwidth doubled. "
    "compromise: tuned, but the 3T bandwidth raised 1.5x instead of 2x. "
    "Anatomy, vendors and noise draws are the same.",
)
@click.option("--quiet", is_flag=True, help="No progress bar on stderr.")
def command(out: str, size: int, subjects: int, slices_per_subject: int, seed: int, protocol: str, quiet: bool) -> None:
    """Write the built-in multi-vendor MRI dataset to OUT.

    Anatomy comes from the MNI152 2009a template shipped with nilearn (no network), deformed per
    subject, with tumour-like lesions in about half of the subjects. Each slice is rendered as
    T1 PRE, T1 POST, T2 or FLAIR and passed through a simulated scanner: four manufacturers with
    their own k-space sampling, filters, parallel-imaging noise and coil shading, at 1.5T or 3T.
    Splits are 70/20/10 by subject. The directory layout is described in docs/data.md.
    """
    output_dir(out, "--out")
    from geco_tf.data.dataset import open_dataset
    from geco_tf.data.synth import synthesize
    from geco_tf.progress import Progress

    with Progress(quiet=quiet).bar(total=subjects, desc="synth: rendering subjects") as bar:
        path = synthesize(out, size=size, subjects=subjects, slices_per_subject=slices_per_subject, seed=seed,
                          progress=bar.update, protocol=protocol)

    data = open_dataset(path)
    counts = ", ".join(f"{split} {data.count(split)}" for split in ("train", "val", "test"))
    click.echo(f"wrote {path}: {len(data.manifest)} slices of {size}x{size} ({counts})")
    empty = [split for split in ("val", "test") if data.count(split) == 0]
    if empty:
        click.echo(
            f"note: {' and '.join(empty)} split empty: a split needs at least 3 subjects per manufacturer and "
            "field strength (--subjects 24 or more)",
            err=True,
        )
