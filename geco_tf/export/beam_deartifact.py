"""``geco-tf deartifact --runner beam``: one Beam element per NIfTI volume or DICOM series.

:func:`geco_tf.export.deartifact.plan` finds the jobs on the machine that runs the command (the
driver); the pipeline spreads them over the workers and each worker calls
:func:`geco_tf.export.deartifact.run_job` -- the function the local loop calls -- with a model it
loaded once, in ``DoFn.setup``::

    jobs --Reshuffle--> DeartifactJob (setup: load the model; process: run_job) --> outcomes
         --> CombineGlobally(ToList) --> the outcomes, handed back to the driver

``run_job`` writes every output atomically and its completion marker last, and skips a job whose
marker exists: so a rerun after a failed pipeline (a dead worker, a cancelled job) redoes only
what was not finished, exactly as a rerun of the local path does. The driver then writes
``OUTPUT/skipped.csv`` with :func:`geco_tf.export.deartifact.finish`.

Paths: inputs, outputs and the model are opened with ordinary file calls, so on a cluster they
must be on a file system every worker mounts at the same path (``docs/scale.md``).
"""

from __future__ import annotations

import os
import pickle
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from geco_tf.data.beam_runner import describe, fail_hook, pipeline_options, quiet_beam_logs, require_beam, run_failed
from geco_tf.errors import UserError
from geco_tf.export.deartifact import DEFAULT_BATCH, Job, Outcome, Summary, finish, plan, run_job
from geco_tf.export.load import load_deartifactor
from geco_tf.io import atomic_path
from geco_tf.progress import QUIET, Progress

beam = require_beam()  # UserError with the install line when the 'beam' extra is missing

RESULT_FILE = "outcomes.pickle"


class DeartifactJob(beam.DoFn):
    """One job -> its :class:`~geco_tf.export.deartifact.Outcome`; the model is loaded once per
    worker (``setup``), never pickled with the pipeline."""

    def __init__(self, model: str, overwrite: bool) -> None:
        self.model = model
        self.overwrite = overwrite
        self.fn: Any = None

    def setup(self) -> None:
        self.fn, _ = load_deartifactor(self.model)

    def process(self, job: Job) -> Iterator[Outcome]:
        fail_hook(job.label)
        yield run_job(self.fn, job, overwrite=self.overwrite)


class KeepOutcomes(beam.DoFn):
    """Every outcome at once (one element) -> a file the driver reads back."""

    def __init__(self, path: str) -> None:
        self.path = path

    def process(self, outcomes: list[Outcome]) -> Iterator[int]:
        with atomic_path(self.path) as tmp:
            tmp.write_bytes(pickle.dumps(outcomes))
        yield len(outcomes)


def run_on_beam(
    model: str | os.PathLike,
    jobs: list[Job],
    *,
    overwrite: bool = False,
    summary: Summary | None = None,
    beam_options: str | None = None,
    scratch: str | os.PathLike,
    progress: Progress = QUIET,
) -> Summary:
    """Run ``jobs`` in a Beam pipeline; outcomes are filed into ``summary`` in the jobs' order.

    ``scratch``: a folder every worker can write (the outcomes come back through it).
    """
    summary = summary if summary is not None else Summary()
    result = Path(scratch) / RESULT_FILE
    progress.note(f"{describe(beam_options)}: {len(jobs)} volume(s)/series")
    try:
        with quiet_beam_logs(), beam.Pipeline(options=pipeline_options(beam_options)) as p:
            _ = (
                p
                | "jobs" >> beam.Create(jobs)
                | "spread over workers" >> beam.Reshuffle()
                | "de-artifact each" >> beam.ParDo(DeartifactJob(str(model), overwrite))
                | "gather" >> beam.combiners.ToList()
                | "hand back" >> beam.ParDo(KeepOutcomes(str(result)))
            )
    except UserError:
        raise
    except Exception as exc:  # a worker's error arrives wrapped by the runner
        raise run_failed(exc) from None
    outcomes: list[Outcome] = pickle.loads(result.read_bytes())
    order = {str(job.marker): i for i, job in enumerate(jobs)}
    for outcome in sorted(outcomes, key=lambda o: order.get(str(o.job.marker), len(order))):
        summary.add(outcome)
    return summary


def deartifact_beam(
    model: str | os.PathLike,
    input_path: str | os.PathLike,
    output: str | os.PathLike,
    *,
    strip_vendor_tags: bool = False,
    batch_size: int = DEFAULT_BATCH,
    overwrite: bool = False,
    beam_options: str | None = None,
    progress: Progress = QUIET,
) -> Summary:
    """:func:`geco_tf.export.deartifact.deartifact_path` with the jobs on Beam workers.

    ``model`` must be a path (a run directory, ``.keras`` file or SavedModel) that every worker
    can open; it is loaded here once too, so a bad model is one line before any worker starts.
    """
    if not isinstance(model, (str, os.PathLike)):
        raise UserError("--runner beam: --model must be a path every worker can read")
    pipeline_options(beam_options)  # bad options: one line before the inputs are read
    jobs, skipped = plan(input_path, output, strip_vendor_tags=strip_vendor_tags, batch_size=batch_size)
    summary = Summary(skipped=list(skipped))
    if jobs:
        _, description = load_deartifactor(model)
        progress.note(f"model: {description}")
        for job in jobs:
            job.model_name = Path(model).name  # only the model's name goes into DICOM headers
        out = Path(output)
        base = out.parent if (jobs[0].kind == "nifti" and jobs[0].output == out) else out
        base.mkdir(parents=True, exist_ok=True)
        scratch = tempfile.mkdtemp(prefix=".geco-beam-", dir=base)
        try:
            run_on_beam(
                model, jobs, overwrite=overwrite, summary=summary, beam_options=beam_options, scratch=scratch,
                progress=progress,
            )
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    finish(summary, input_path, output)
    return summary
