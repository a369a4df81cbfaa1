"""Same behaviour, proven: ``geco-tf train`` reproduces the per-epoch history recorded before the
redesign (every loss and validation number, 1e-5 relative, on CPU).

Two cases on a small built-in dataset (32x32, 24 subjects x 8 slices, seed 0), 2 epochs:

* ``default``: the default settings as they stood when the golden file was recorded (the
  adversarial terms are still inside the warm-up, so this holds the classifiers, the spectral
  adversary, the replay pool, the pixel term and validation to their old numbers);
* ``adversarial``: no warm-up and the three-player game, so the generator's adversarial terms
  and the discriminator are held too.

Each run happens in a subprocess with one CPU thread, oneDNN off and TF's op determinism on:
with two threads the same run differs by ~1% (reductions in another order), with one it is
bit-for-bit repeatable. To re-record after a change that is *meant* to alter the numbers:
``GECO_RECORD_GOLDEN=1 python -m pytest tests/training/test_golden_history.py -m slow`` in a
commit of its own that says why.
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

GOLDEN = Path(__file__).parent / "golden"
CASES = {
    "default": {},
    "adversarial": {"warmup_steps": 0, "three_player": True},
}
#: Columns that are not numbers of the game (wall-clock time).
IGNORED = {"seconds"}
RELATIVE = 1e-5

RUN = """
import json, sys
import tensorflow as tf
tf.config.experimental.enable_op_determinism()
tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)
from geco_tf.training.train import train_geco
data, out, extra = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
train_geco(data, out, target="manufacturer", progress=False, epochs=2, time_budget_minutes=0, seed=0, **extra)
"""


@pytest.fixture(scope="module")
def golden_data(tmp_path_factory):
    from geco_tf.data.synth import synthesize

    return synthesize(tmp_path_factory.mktemp("golden") / "data", size=32, subjects=24, slices_per_subject=8, seed=0)


def _history(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _train(data: Path, out: Path, extra: dict) -> Path:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "TF_ENABLE_ONEDNN_OPTS": "0", "OMP_NUM_THREADS": "1",
           "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, "-c", RUN, str(data), str(out), json.dumps(extra)],
                          capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out / "history.csv"


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_history_matches_golden(case, golden_data, tmp_path):
    history = _train(golden_data, tmp_path / "run", CASES[case])
    golden_file = GOLDEN / f"manufacturer_{case}.csv"
    if os.environ.get("GECO_RECORD_GOLDEN"):
        golden_file.write_text(history.read_text())
        pytest.skip(f"recorded {golden_file}")
    expected, got = _history(golden_file), _history(history)
    assert [r["epoch"] for r in got] == [r["epoch"] for r in expected]
    compared = 0
    for old, new in zip(expected, got):
        for column, value in old.items():
            if column in IGNORED or value == "":
                continue
            assert new.get(column, "") != "", f"epoch {old['epoch']}: {column} is no longer recorded"
            a, b = float(value), float(new[column])
            assert math.isclose(a, b, rel_tol=RELATIVE, abs_tol=1e-12), (
                f"epoch {old['epoch']} {column}: golden {a!r}, now {b!r}"
            )
            compared += 1
    assert compared >= 2 * 12  # every loss and validation number of both epochs
