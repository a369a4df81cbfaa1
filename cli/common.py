"""Options and helpers shared by several commands."""

from __future__ import annotations

import click

from geco_tf.data.dataset import TARGETS

target_option = click.option(
    "--target",
    type=click.Choice(TARGETS),
    default="manufacturer",
    show_default=True,
    help="Scanner label to remove / classify.",
)


def output_dir(value: str, option: str) -> str:
    """Refuse an output path that exists as a file (one clear line, exit 2)."""
    from pathlib import Path

    path = Path(value)
    if path.exists() and not path.is_dir():
        raise click.BadParameter(f"{path} exists and is a file, not a directory", param_hint=option)
    return value
