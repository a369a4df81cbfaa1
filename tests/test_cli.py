"""The CLI contract: every command has --help, user errors are one line with exit code 2."""

from __future__ import annotations

import subprocess
import sys

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
