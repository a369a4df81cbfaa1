"""``--resume`` after a kill: no epoch lost or repeated, and the game state carries over."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import tensorflow as tf

from geco_tf.training.run import RunDir

pytestmark = pytest.mark.slow  # trains in a subprocess: tens of seconds

ARGS = ["--set", "base_filters=4", "--set", "depth=2", "--classifier", "maxpool", "--batch-size", "8",
        "--set", "warmup_steps=2", "--set", "pool_size=32"]


def _train(data, out, *extra, **popen):
    cmd = [sys.executable, "-m", "geco_tf_cli.main", "train", "--data", str(data), "--out", str(out), *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


@pytest.mark.benchmark  # 40-70 s on 2 cores: out of the 8-minute suite; run with python -m pytest -m benchmark
def test_resume_after_kill_continues_after_last_finished_epoch(tiny_data, tmp_path):
    out = tmp_path / "run"
    proc = _train(tiny_data, out, *ARGS, "--epochs", "4", start_new_session=True)
    first = out / "checkpoints" / "ckpt-1.index"
    deadline = time.monotonic() + 400
    while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert first.exists(), proc.communicate()[1][-2000:]
    os.killpg(proc.pid, signal.SIGKILL)  # mid-run: epoch 2 is under way (or just finished)
    proc.wait()
    done_before = len(RunDir(out).read_history())
    assert 1 <= done_before < 4

    resumed = _train(tiny_data, out, "--resume", "--epochs", "4")
    stdout, stderr = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, stderr[-2000:]
    epochs = [row["epoch"] for row in RunDir(out).read_history()]
    assert epochs == [1, 2, 3, 4]  # none lost, none repeated
    # the step counter kept counting across the kill: 4 epochs x steps per epoch
    steps_per_epoch = tf.train.load_variable(str(out / "checkpoints" / "ckpt-1"), "step/.ATTRIBUTES/VARIABLE_VALUE")
    last = tf.train.load_variable(str(out / "checkpoints" / "ckpt-4"), "step/.ATTRIBUTES/VARIABLE_VALUE")
    assert last == 4 * steps_per_epoch
    assert "best epoch" in stdout
