"""The CLI contract: every command has --help, user errors are one line with exit code 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner
from geco_tf_cli.main import cli

EXPECTED = {"synth", "preprocess", "baseline", "train", "evaluate", "export", "deartifact", "demo"}


def test_group_lists_commands_and_each_has_help_with_examples():
    commands = set(cli.list_commands(None))
    assert EXPECTED <= commands, f"missing commands: {sorted(EXPECTED - commands)}"
    runner = CliRunner()
    for name in sorted(commands):
        result = runner.invoke(cli, [name, "--help"])
        assert result.exit_code == 0, (name, result.output)
        assert "geco-tf " + name in result.output, f"{name} --help has no example"


def help_text(command: str | None = None) -> str:
    """``geco-tf [COMMAND] --help`` as docs/cli.md shows it (80 columns)."""
    args = [command, "--help"] if command else ["--help"]
    return CliRunner().invoke(cli, args, terminal_width=80, prog_name="geco-tf").output


def docs_cli_blocks(text: str) -> dict[str | None, tuple[int, int]]:
    """Where each command's help block sits in docs/cli.md: command -> (start, end) offsets."""
    blocks = {}
    for name in [None, *sorted(cli.list_commands(None))]:
        head = "```text\nUsage: geco-tf " + (f"{name} " if name else "[OPTIONS]")
        if head not in text:
            raise AssertionError(f"docs/cli.md has no help block for `geco-tf {name}`: add a ```text block "
                                 f"starting 'Usage: geco-tf {name} ', then run python tests/cli/test_cli.py")
        start = text.index(head) + len("```text\n")
        blocks[name] = (start, text.index("```", start))
    return blocks


DOCS_CLI = Path(__file__).resolve().parents[2] / "docs" / "cli.md"


def test_docs_cli_md_is_the_current_help():
    """docs/cli.md must not drift from the options users actually have; regenerate it with
    ``python tests/cli/test_cli.py``."""
    text = DOCS_CLI.read_text()
    for name, (start, end) in docs_cli_blocks(text).items():
        assert text[start:end] == help_text(name), f"docs/cli.md: `geco-tf {name or ''} --help` is stale; run python tests/cli/test_cli.py"


def _run(*args):
    return subprocess.run([sys.executable, "-m", "geco_tf_cli.main", *args], capture_output=True, text=True)


def test_unknown_command_is_one_line_exit_2():
    proc = _run("frobnicate")
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "frobnicate" in proc.stderr


def test_help_does_not_import_tensorflow():
    code = "import sys; from geco_tf_cli.main import cli; cli.list_commands(None); print('tensorflow' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.stdout.strip() == "False"


if __name__ == "__main__":  # rewrite docs/cli.md's help blocks from the current commands
    text = DOCS_CLI.read_text()
    for name, (start, end) in sorted(docs_cli_blocks(text).items(), key=lambda kv: -kv[1][0]):
        text = text[:start] + help_text(name) + text[end:]
    DOCS_CLI.write_text(text)
