"""Smoke runs of ``benchmarks/``, each in its own process (no test imports a benchmark script).

Why these: every fraction-of-peak figure divides by the FLOP count, so the counter must agree
with counts done by hand (``flops.py --self-check``), and the peak it is divided by must be a
number this machine can have produced. The full harness (``run.py --quick``) takes minutes on a
loaded 2-core machine: it is marked ``benchmark`` (``python -m pytest -m benchmark``).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"


def _run(script: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, str(BENCHMARKS / script), *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)


@pytest.mark.slow
def test_flop_counter_agrees_with_the_hand_counts():
    proc = _run("flops.py", "--self-check")
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
    assert "every count agrees" in proc.stdout


@pytest.mark.slow
def test_quick_peak_is_a_rate_this_machine_can_reach():
    """At least 0.1 GFLOP/s (it ran), at most what the cores could do with two 512-bit FMA units
    each at 5 GHz (64 float32 FLOPs per cycle): a wrong FLOP count or timer would break one."""
    proc = _run("peak.py", "--quick")
    assert proc.returncode == 0, proc.stderr[-2000:]
    rates = {m.group(1): float(m.group(2)) for m in re.finditer(r"^(conv|matmul)\s+([\d.]+) GFLOP/s", proc.stdout, re.M)}
    assert set(rates) == {"conv", "matmul"}, proc.stdout
    ceiling = (os.cpu_count() or 1) * 5.0 * 64
    for name, rate in rates.items():
        assert 0.1 <= rate <= ceiling, (name, rate, ceiling)


@pytest.mark.benchmark
def test_quick_run_reports_every_key(tmp_path):
    out = tmp_path / "results.json"
    proc = _run("run.py", "--quick", "--out", str(out), timeout=1200)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(out.read_text())
    for key in ("machine", "peak", "flops", "training", "profile", "pipeline", "inference", "memory", "targets"):
        assert key in results, key
    assert "images/s" in proc.stdout
