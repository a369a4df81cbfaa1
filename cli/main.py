"""``geco-tf``: the command group.

Each command lives in its own module of this package and exposes ``command`` (a click command).
The group discovers them lazily, so ``geco-tf --help`` does not import TensorFlow.

Exit codes: 0 success; 2 a user error (one line on stderr naming the file or option and the
reason); 1 an internal error (traceback on stderr).
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import traceback
from pathlib import Path

import click

from geco_tf.errors import UserError


class GecoGroup(click.Group):
    """Lazy command discovery plus the project's exit-code contract."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        here = str(Path(__file__).parent)
        names = [m.name for m in pkgutil.iter_modules([here]) if m.name not in {"main", "common"}]
        return sorted(name.replace("_", "-") for name in names)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.list_commands(ctx):
            return None
        module = importlib.import_module(f"{__package__}.{name.replace('-', '_')}")
        return module.command

    def main(self, args=None, prog_name=None, **extra):  # noqa: D401 - click API
        try:
            rv = super().main(args=args, prog_name=prog_name, standalone_mode=False, **extra)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("error: aborted", err=True)
            sys.exit(1)
        except click.UsageError as exc:
            where = f"{exc.ctx.command_path}: " if exc.ctx is not None else ""
            click.echo(f"error: {where}{exc.format_message()}", err=True)
            sys.exit(2)
        except click.ClickException as exc:
            click.echo(f"error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except UserError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
        except Exception:  # internal error: keep the traceback for the bug report
            traceback.print_exc()
            click.echo("error: internal error (the traceback above belongs in a bug report)", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)


@click.group(cls=GecoGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="geco-tf")
def cli() -> None:
    """GECO: remove scanner signatures (manufacturer, field strength) from MRI slices.

    \b
    Typical session:
      geco-tf synth --out data                  # built-in multi-vendor dataset
      geco-tf baseline --data data --target manufacturer --out runs/baseline
      geco-tf train --data data --target manufacturer --out runs/geco
      geco-tf evaluate --run runs/geco --out report
      geco-tf export --run runs/geco --saved-model serving/geco --tflite geco.tflite
    """


if __name__ == "__main__":
    cli()
