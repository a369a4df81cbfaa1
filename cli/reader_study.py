"""``geco-tf reader-study``: the paper's blinded radiologist survey (section 4.3, Figure 3).

``build`` writes an offline HTML kit from a run and the dataset's test split, with its key kept
outside the kit; ``score`` un-blinds the readers' exported answers. Guide: ``docs/reader-study.md``.
"""

from __future__ import annotations

import click
from geco_tf_cli.common import output_dir


@click.group("reader-study")
def command() -> None:
    """The paper's reader study: a blinded kit for radiologists, and its scoring.

    \b
    Examples:
      geco-tf reader-study build --run runs/geco --data data --out kit
      geco-tf reader-study score --key kit-key.json answers-*.csv --out study
    """


@command.command("build")
@click.option("--run", "run_dir", required=True, metavar="RUN", type=click.Path(file_okay=False), help="Run directory written by `geco-tf train`.")
@click.option("--data", "data_dir", metavar="DATA", type=click.Path(file_okay=False), default=None,
              help="Dataset directory (default: the one named in RUN/config.json); its test split is used.")
@click.option("--out", "out_dir", required=True, metavar="KIT", callback=lambda c, p, v: output_dir(v, "--out"),
              help="Kit directory to write: KIT/index.html, the one file to hand out.")
@click.option("--pairs", type=click.IntRange(0, 99), default=10, show_default=True,
              help="Part A: pairs (an image and its edit, left/right at random).")
@click.option("--ratings", type=click.IntRange(0, 99), default=20, show_default=True,
              help="Part B: single images to score 1-10, half of them edited.")
@click.option("--seed", type=int, metavar="S", default=0, show_default=True, help="Seed of the slice choice and the order (same seed: same kit).")
@click.option("--key", "key_path", metavar="KEY.json", type=click.Path(dir_okay=False), default=None,
              help="Where the key goes (default: KIT-key.json beside KIT; never inside KIT).")
@click.option("--title", default="Reader study", show_default=True, help="Heading of the page.")
@click.option("--quiet", is_flag=True, help="No progress lines on stderr.")
def build(run_dir, data_dir, out_dir, pairs, ratings, seed, key_path, title, quiet) -> None:
    """Build a blinded reader-study kit from the test split.

    One slice per subject where possible, the target's classes in turn. KIT/index.html is one
    self-contained page (images embedded; no network, no server): the reader types a name, answers
    part A (Left / Right / No difference) and part B (1-10), and exports answers-<reader>.csv.
    Answers survive closing the page. The key (which side is original, which images are edited)
    is written outside KIT; keep it from the readers.

    \b
    Examples:
      geco-tf reader-study build --run runs/geco --data data --out kit
      geco-tf reader-study build --run runs/geco --out kit --pairs 10 --ratings 20 --seed 3 --key secret/key.json
    """
    from geco_tf.evaluation.reader_study.kit import build_kit
    from geco_tf.progress import Progress

    summary = build_kit(run_dir, out_dir, data_dir=data_dir, pairs=pairs, ratings=ratings, seed=seed,
                        key_path=key_path, title=title, progress=Progress(quiet=quiet, steps=4))
    classes = ", ".join(f"{k} {v}" for k, v in summary["slices_per_class"].items())
    click.echo(f"kit: {summary['kit']} ({summary['pairs']} pairs, {summary['ratings']} images to score, "
               f"{summary['subjects']} subjects; {classes}; {summary['bytes'] / 1e3:,.0f} kB)")
    click.echo(f"key: {summary['key']} (keep it from the readers)")


@command.command("score")
@click.option("--key", "key_path", required=True, metavar="KEY.json", type=click.Path(dir_okay=False), help="The key written by `reader-study build`.")
@click.argument("answers", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--out", "out_dir", required=True, metavar="DIR", callback=lambda c, p, v: output_dir(v, "--out"),
              help="Directory for summary.json, figure3.png and table.txt.")
def score(key_path, answers, out_dir) -> None:
    """Score readers' exported answers against the key (the paper's Figure 3).

    Per reader: pairs where the original, the edit, or neither was preferred, and the mean
    quality score of originals and edits with the difference's 95% interval; over readers, a
    paired t-test on per-reader means (Wilcoxon signed-rank beside it). Writes DIR/summary.json,
    DIR/figure3.png and DIR/table.txt, and prints the table.

    \b
    Examples:
      geco-tf reader-study score --key kit-key.json answers-rad1.csv answers-rad2.csv --out study
    """
    from geco_tf.evaluation.reader_study.score import score_answers

    result = score_answers(key_path, list(answers), out_dir)
    click.echo(result["table"], nl=False)
    click.echo(f"written: {out_dir}/summary.json, {out_dir}/figure3.png, {out_dir}/table.txt")
