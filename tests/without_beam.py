"""Run ``geco-tf`` in a fresh process where Apache Beam cannot be imported, as on an install
without the ``beam`` extra (shared by the preprocess and deartifact Beam tests)."""

from __future__ import annotations

import os
import subprocess
import sys

#: The one line ``--runner beam`` must end with when Beam is missing.
MISSING_BEAM = "--runner beam needs Apache Beam: pip install 'geco-tf[beam]'"


def run_without_beam(args: list[str]) -> tuple[subprocess.CompletedProcess, list[str]]:
    """``geco-tf ARGS`` with ``apache_beam`` unimportable; returns the process and its non-blank
    stderr lines."""
    code = f"import sys; sys.modules['apache_beam'] = None\nfrom geco_tf_cli.main import cli\nsys.argv = {['geco-tf', *args]!r}\ncli()\n"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    return proc, [line for line in proc.stderr.strip().splitlines() if line.strip()]
