"""Benchmark: ``geco-tf preprocess`` with the local pool against ``--runner beam`` on one machine.

Writes 40 MR series with pydicom (template: pydicom's real ``MR_small.dcm``, four planes,
shuffled UID file names; ``tests/dicom_series.py``), then runs the same command twice, each in a
fresh process:

* ``geco-tf preprocess ARCHIVE --out A --workers 2`` (the local spawn pool, two workers);
* ``geco-tf preprocess ARCHIVE --out B --runner beam`` (Beam's DirectRunner, multi-processing,
  two workers: the default of ``--runner beam``).

For each it reports the wall time and the peak memory of the command *with all its child
processes* (psutil, the process tree's summed RSS sampled every 50 ms), and it checks that the
two datasets are the same (manifest rows, shard bytes, skipped.csv). The order of the two runs
alternates over ``--repeat`` rounds so that a warm file cache favours neither.

Run:  python benchmarks/beam_vs_pool.py            (about 3-4 minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

PLANES = ("axial", "sagittal", "coronal", "oblique")
MAKERS = ("SIEMENS", "GE MEDICAL SYSTEMS", "Philips")


def write_archive(root: Path, n: int, slices: int, pixels: int) -> None:
    from dicom_series import write_series

    for i in range(n):
        write_series(
            root / f"s{i:03d}", PLANES[i % 4], shape=(slices, pixels, pixels), spacing=(0.9, 0.9, 3.0), seed=i,
            patient_id=f"B{i // 2:03d}", manufacturer=MAKERS[i % 3], field_strength=(1.5, 3.0)[(i // 3) % 2],
            description="t1_se", study_uid=f"1.2.826.0.1.3680043.8.498.{i // 2 + 1}",
        )  # fmt: skip


def measure(cmd: list[str]) -> tuple[float, float]:
    """Run ``cmd``; return (wall seconds, peak MB of the summed RSS of it and its descendants)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        root = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                break
            total = 0
            for p in procs:
                try:
                    total += p.memory_info().rss
                except psutil.NoSuchProcess:
                    pass
            peak = max(peak, total)
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err[-3000:]}")
    return seconds, peak / 1024**2


def same_dataset(a: Path, b: Path) -> bool:
    def rows(path: Path) -> list[str]:
        return sorted(path.read_text().splitlines())

    shards = sorted(p.name for p in (a / "slices").iterdir())
    return (
        rows(a / "manifest.csv") == rows(b / "manifest.csv")
        and rows(a / "skipped.csv") == rows(b / "skipped.csv")
        and shards == sorted(p.name for p in (b / "slices").iterdir())
        and all(filecmp.cmp(a / "slices" / s, b / "slices" / s, shallow=False) for s in shards)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--series", type=int, default=40)
    parser.add_argument("--slices", type=int, default=32)
    parser.add_argument("--pixels", type=int, default=192, help="rows = columns of each slice")
    parser.add_argument("--size", type=int, default=256, help="dataset slice size (--size of preprocess)")
    parser.add_argument("--repeat", type=int, default=2, help="rounds (the order of the two runs alternates)")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="geco-beam-bench-"))
    try:
        t = time.perf_counter()
        archive = scratch / "archive"
        write_archive(archive, args.series, args.slices, args.pixels)
        print(f"wrote {args.series} series of {args.slices} x {args.pixels}x{args.pixels} slices "
              f"in {time.perf_counter() - t:.1f} s", flush=True)
        geco = [sys.executable, "-m", "geco_tf_cli.main", "preprocess", str(archive), "--size", str(args.size),
                "--key-file", str(scratch / "bench.key"), "--quiet"]  # fmt: skip
        runs = {
            "local pool (--workers 2)": ["--workers", "2"],
            "Beam DirectRunner (multi_processing, 2 workers)": ["--runner", "beam"],
        }
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
        for r in range(args.repeat):
            order = list(runs) if r % 2 == 0 else list(reversed(runs))
            for name in order:
                out = scratch / f"out-{list(runs).index(name)}"
                shutil.rmtree(out, ignore_errors=True)
                seconds, peak = measure([*geco, "--out", str(out), *runs[name]])
                results[name].append((seconds, peak))
                print(f"round {r + 1}: {name}: {seconds:.1f} s, peak {peak:.0f} MB", flush=True)
        same = same_dataset(scratch / "out-0", scratch / "out-1")
        print()
        print(f"| runner ({args.series} series, {args.slices} x {args.pixels}^2, --size {args.size}) "
              "| wall time, s (best of rounds) | peak RSS with children, MB (max) |")
        print("| --- | --- | --- |")
        for name, values in results.items():
            print(f"| {name} | {min(s for s, _ in values):.1f} | {max(m for _, m in values):.0f} |")
        best = {name: min(s for s, _ in values) for name, values in results.items()}
        local, beam = best.values()
        print(f"\nBeam / local wall time: {beam / local:.2f}x; identical datasets: {same}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
