"""Apache Beam as an optional engine: the one guarded import and the pipeline options.

``geco-tf preprocess`` and ``geco-tf deartifact`` run in local processes by default. With
``--runner beam`` the same per-series work runs as an Apache Beam pipeline, which the same code
sends to the DirectRunner on a laptop or to Flink, Spark or Dataflow on a cluster (see
``docs/scale.md``). Beam is the ``beam`` extra (``pip install 'geco-tf[beam]'``), not a core
dependency: this module never imports it at import time, so the local path works without it and
``--runner beam`` without it is one clear line (exit 2), not a traceback.

Options: ``--beam-options`` is a string of Beam's own flags (``"--runner=FlinkRunner
--flink_master=host:8081"``), split like a shell line. Without a ``--runner`` flag the pipeline
runs on the DirectRunner in multi-processing mode with two workers; later flags override earlier
ones, so ``--direct_num_workers=8`` or ``--direct_running_mode=in_memory`` change that default.

A test hook: when the environment variable :data:`FAIL_ENV` holds some text, every element whose
label (a series' scrubbed folder, a de-artifact job's input) contains that text raises in its
worker, as a crashing worker would; the pipeline then fails and a rerun without the variable must
finish the rest (what ``tests/data/test_beam_preprocess.py`` and
``tests/export/test_beam_deartifact.py`` check).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shlex
from collections.abc import Iterator
from types import ModuleType
from typing import Any

from geco_tf.errors import UserError

INSTALL_HINT = "--runner beam needs Apache Beam: pip install 'geco-tf[beam]'"
#: Without a ``--runner`` in ``--beam-options``: the DirectRunner, two worker processes.
DEFAULT_FLAGS = (
    "--runner=DirectRunner",
    "--direct_num_workers=2",
    "--direct_running_mode=multi_processing",
    "--default_sdk_harness_log_level=WARNING",  # the workers' start/stop chatter is not a log line
)
RUNNERS = ("local", "beam")
#: Environment variable of the failure hook (see the module docstring).
FAIL_ENV = "GECO_TF_BEAM_FAIL"


def require_beam() -> ModuleType:
    """The ``apache_beam`` module, or :class:`UserError` with the install line when it is missing."""
    # The package's one guarded import of an optional dependency: Apache Beam is the 'beam' extra,
    # so the default local runner must work (and import) without it. Nothing else imports it
    # except the two pipeline modules, which call this function first.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # Beam warns at import about cloud clients nobody asked for
    try:
        import apache_beam
    except ImportError:
        raise UserError(INSTALL_HINT) from None
    finally:
        root.setLevel(level)
    return apache_beam


@contextlib.contextmanager
def quiet_beam_logs() -> Iterator[None]:
    """Beam's own warnings (relayed worker start-up notes) off while a pipeline runs: they are
    not the command's log lines. The worker processes' own stderr is theirs and still shows."""
    logger = logging.getLogger("apache_beam")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def beam_flags(text: str | None) -> list[str]:
    """The Beam flags of one ``--beam-options`` string, after the defaults (last flag wins)."""
    try:
        given = shlex.split(text or "")
    except ValueError as exc:
        raise UserError(f"--beam-options: cannot split {text!r} ({exc})") from None
    for flag in given:
        if not flag.startswith("--"):
            raise UserError(f"--beam-options: {flag!r} is not a flag (Beam options look like --name=value)")
    return [*DEFAULT_FLAGS, *given]


def pipeline_options(text: str | None) -> Any:
    """``PipelineOptions`` for one ``--beam-options`` string (Beam must be installed)."""
    names = require_beam().options.pipeline_options
    flags = beam_flags(text)
    said = io.StringIO()
    try:
        with contextlib.redirect_stderr(said):  # argparse prints its usage, then exits
            options = names.PipelineOptions(flags)
            options.get_all_options()  # parses every option Beam knows, so a bad value stops here
            runner = options.view_as(names.StandardOptions).runner
    except (ValueError, SystemExit) as exc:
        lines = [line for line in said.getvalue().splitlines() if line.strip()]
        raise UserError(f"--beam-options: {lines[-1] if lines else exc}") from None
    if not runner:
        raise UserError("--beam-options: --runner is empty")
    return options


def describe(text: str | None) -> str:
    """One line naming the runner and its parallelism, for the step line."""
    flags = dict(f[2:].split("=", 1) for f in beam_flags(text) if "=" in f)
    runner = flags.get("runner", "DirectRunner")
    if runner == "DirectRunner":
        return f"Beam DirectRunner ({flags.get('direct_running_mode')}, {flags.get('direct_num_workers')} workers)"
    return f"Beam {runner}"


def fail_hook(label: str) -> None:
    """Raise when the failure hook's text (:data:`FAIL_ENV`) is in ``label`` (tests only)."""
    needle = os.environ.get(FAIL_ENV, "")
    if needle and needle in label:
        raise RuntimeError(f"{FAIL_ENV}: simulated worker failure")


def run_failed(exc: BaseException) -> UserError:
    """The one-line error for a pipeline that stopped: what to do, and no worker's message (it
    may hold an input path, so only the exception's type is named; the runner's log has the rest)."""
    what = "simulated worker failure" if FAIL_ENV in str(exc) else f"{type(exc).__name__}; the runner's log has the details"
    return UserError(
        f"the Beam pipeline stopped ({what}); run the same command again: finished series and outputs are kept"
    )
