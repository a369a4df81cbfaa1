"""``geco-tf preprocess --runner beam``: the conversion and the dataset assembly as a Beam pipeline.

:func:`geco_tf.data.preprocess.preprocess` does discovery, resumption and the summary on the
machine that runs the command (the driver) and hands the rest to a pipeline when given one;
:class:`BeamPipeline` is that pipeline::

    series (jobs not yet converted) --Reshuffle--> ConvertSeries (one series per element)
                                                          |
    records resumed from an earlier run ------------------+--> Flatten
                                                          |
                    CombineGlobally(ToList): every record, on one worker (a global step:
                    the split needs every subject's labels)
                                                          |
                    AssembleDataset: split, TFRecord shards, manifest, dataset.json, skipped.csv

``ConvertSeries`` calls :func:`geco_tf.data.preprocess.convert_job` -- the function the local
pool calls, so both runners convert a series with the same code -- then stores the scrubbed
record in the work area exactly as the local path does (the record is written last: it is the
series' completion marker, so a rerun after a failed pipeline converts only the rest).
``AssembleDataset`` calls :func:`geco_tf.data.preprocess.assemble_dataset`, whose split is a
pure function of the records and the seed; so the dataset equals the local path's bit for bit
(``dataset.json``'s creation time aside).

Paths: the work area (``.DATA.work`` beside ``--out``), the inputs and ``--out`` are read and
written with ordinary file calls, so on a cluster they must be on a file system every worker
mounts at the same path (NFS, a parallel file system, or an object store through a FUSE mount);
``gs://`` and ``s3://`` URLs are not read directly. ``docs/scale.md`` says how to run it on Flink,
Spark and Dataflow.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from geco_tf.data import privacy as P
from geco_tf.data.beam_runner import describe, fail_hook, pipeline_options, quiet_beam_logs, require_beam, run_failed
from geco_tf.data.preprocess import Assembly, Job, Summary, assemble_dataset, convert_job, preprocess, scrub_record
from geco_tf.errors import UserError
from geco_tf.io import atomic_path, write_json_atomic
from geco_tf.progress import QUIET, Progress

beam = require_beam()  # UserError with the install line when the 'beam' extra is missing

#: Where the assembly step leaves its summary for the driver (inside the work area).
RESULT_FILE = "beam-assembly.pickle"


class ConvertSeries(beam.DoFn):
    """One series -> its scrubbed record, stored in the work area (the series' completion marker)."""

    def __init__(self, work_dir: str, scrubber: P.Scrubber) -> None:
        self.work_dir = work_dir
        # The scrubber travels with the pipeline (it holds the identifiers met in the headers, in
        # memory only) so that no unscrubbed path or reason is ever written to the work area.
        self.scrubber = scrubber

    def process(self, job: Job) -> Iterator[dict[str, Any]]:
        record = convert_job(job, self.work_dir)  # the local pool's function
        record = scrub_record(record, self.scrubber)
        fail_hook(record["where"])
        write_json_atomic(Path(self.work_dir) / f"{job.id}.json", record)  # last: marks the series done
        # preprocess._started_path (private): the start count convert_job wrote, cleared as its
        # local `keep` does once the record is stored.
        (Path(self.work_dir) / f"{job.id}.started").unlink(missing_ok=True)
        yield record


class AssembleDataset(beam.DoFn):
    """Every record at once (one element: the global list) -> the dataset directory."""

    def __init__(
        self, out: str, skipped: list[tuple[str, str]], seed: int, size: int, work_dir: str, made_by: Mapping[str, Any]
    ) -> None:
        self.out, self.skipped, self.seed, self.size = out, skipped, seed, size
        self.work_dir, self.made_by = work_dir, dict(made_by)

    def process(self, records: list[dict[str, Any]]) -> Iterator[int]:
        result = assemble_dataset(
            self.out, records, self.skipped, seed=self.seed, size=self.size, work_dir=self.work_dir, made_by=self.made_by
        )
        with atomic_path(Path(self.work_dir) / RESULT_FILE) as tmp:
            tmp.write_bytes(pickle.dumps(result))
        yield result.n_slices


class BeamPipeline:
    """The ``pipeline`` of :func:`geco_tf.data.preprocess.preprocess` for ``--runner beam``.

    ``beam_options``: Beam's flags as one string (see :mod:`geco_tf.data.beam_runner`); checked
    here, before any input is read.
    """

    def __init__(self, beam_options: str | None = None) -> None:
        self.beam_options = beam_options
        pipeline_options(beam_options)

    def __call__(
        self,
        out: str | os.PathLike,
        records: Iterable[dict[str, Any]],
        skipped: Iterable[tuple[str, str]],
        *,
        jobs: Iterable[Job],
        scrubber: P.Scrubber,
        seed: int = 0,
        size: int,
        work_dir: str | os.PathLike,
        made_by: Mapping[str, Any] | None = None,
        progress: Progress = QUIET,
    ) -> Assembly:
        """Convert ``jobs``, then assemble them with the resumed ``records``; returns the assembly."""
        work = Path(work_dir)
        result_file = work / RESULT_FILE
        result_file.unlink(missing_ok=True)
        jobs = list(jobs)
        progress.note(f"{describe(self.beam_options)}: {len(jobs)} series to convert, then the dataset")
        try:
            with quiet_beam_logs(), beam.Pipeline(options=pipeline_options(self.beam_options)) as p:
                resumed = p | "records of earlier runs" >> beam.Create(list(records))
                converted = (
                    p
                    | "series" >> beam.Create(jobs)
                    | "spread over workers" >> beam.Reshuffle()
                    | "convert each series" >> beam.ParDo(ConvertSeries(str(work), scrubber))
                )
                _ = (
                    (resumed, converted)
                    | "all records" >> beam.Flatten()
                    | "gather (global)" >> beam.combiners.ToList()
                    | "split, shards, manifest" >> beam.ParDo(
                        AssembleDataset(str(out), [tuple(s) for s in skipped], seed, size, str(work), made_by or {})
                    )
                )
        except UserError:
            raise
        except Exception as exc:  # a worker's error arrives wrapped by the runner
            raise run_failed(exc) from None
        try:
            return pickle.loads(result_file.read_bytes())
        except OSError:
            raise UserError(
                f"the Beam pipeline finished but left no result in {work} (is it on a file system every worker "
                "shares?)"
            ) from None


def preprocess_beam(out: str | os.PathLike, *, beam_options: str | None = None, **kwargs: Any) -> Summary:
    """:func:`geco_tf.data.preprocess.preprocess` with the conversion and assembly on Beam."""
    return preprocess(out, pipeline=BeamPipeline(beam_options), **kwargs)
