"""Test helper imported by spawned conversion workers: a converter whose process dies (as if
killed for memory) on every input whose path contains "crash", and converts the rest."""

from __future__ import annotations

import os

from geco_tf.data.preprocess import Job, convert_job, mark_started


def convert(job: Job, work_dir: str) -> dict:
    if "crash" in job.where:
        mark_started(work_dir, job.id)  # what convert_job does first
        os._exit(9)
    return convert_job(job, work_dir)
