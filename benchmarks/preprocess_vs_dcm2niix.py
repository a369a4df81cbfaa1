"""Benchmark: our DICOM-to-axial-volume stage against dcm2niix, and the whole ``geco-tf preprocess``.

Writes synthetic MR series with pydicom (template: pydicom's real ``MR_small.dcm``; axial,
sagittal, coronal and oblique planes, 256 x 256 pixels, shuffled UID file names), then

1. per series: the time of :func:`geco_tf.data.dicom.build_series_volume` (headers, ordering,
   checks, pixel read, reorientation; in-process, best of 3) beside the time of the ``dcm2niix``
   executable converting the same folder to an uncompressed NIfTI (a process per series, as it is
   used; best of 3). Target: ours within 3x of dcm2niix.
2. the whole ``geco-tf preprocess`` (discovery, conversion in ``--workers`` processes, TFRecord
   writing at 512 x 512, TensorFlow import included) on 10 and on 40 series, each in a fresh
   process, with the peak RSS of the main process and of the largest worker: memory must stay
   flat as the number of series grows.

Run:  python benchmarks/preprocess_vs_dcm2niix.py            (about 2-3 minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

PLANES = ("axial", "sagittal", "coronal", "oblique")

RUN_ONE = r"""
import json, resource, sys, time
from geco_tf.data.preprocess import preprocess
if __name__ == "__main__":
    t = time.perf_counter()
    s = preprocess(sys.argv[2], dicom_dir=sys.argv[1], size=int(sys.argv[3]), workers=int(sys.argv[4]),
                   key_file=sys.argv[5])
    print(json.dumps({
        "seconds": time.perf_counter() - t, "stages": s.seconds, "series": s.written.n_series_ok, "slices": s.written.n_slices,
        "main_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "worker_peak_mb": s.converter_peak_rss_mb,
    }))
"""


def write_archive(root: Path, n: int, slices: int, size: int) -> list[Path]:
    from dicom_series import write_series

    folders = []
    for i in range(n):
        folder = root / f"s{i:03d}"
        write_series(
            folder, PLANES[i % 4], shape=(slices, size, size), spacing=(0.9, 0.9, 3.0), seed=i,
            patient_id=f"B{i // 2:03d}", manufacturer=("SIEMENS", "GE MEDICAL SYSTEMS", "Philips")[i % 3],
            field_strength=(1.5, 3.0)[i % 2], description="t1_se",
        )
        folders.append(folder)
    return folders


def best_of(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def dcm2niix_exe() -> str:
    import dcm2niix

    return str(getattr(dcm2niix, "bin", None) or shutil.which("dcm2niix"))


def per_series(folders: list[Path], scratch: Path) -> list[tuple[str, float, float]]:
    from geco_tf.data.dicom import build_series_volume

    exe = dcm2niix_exe()
    rows = []
    for i, folder in enumerate(folders):
        files = sorted(str(p) for p in folder.iterdir())

        def ours(files: list[str] = files) -> None:
            build_series_volume(files)

        def theirs(folder: Path = folder) -> None:
            out = Path(tempfile.mkdtemp(dir=scratch))
            subprocess.run([exe, "-z", "n", "-b", "n", "-f", "v", "-o", str(out), str(folder)], check=True,
                           capture_output=True)
            assert glob.glob(str(out / "*.nii"))
            shutil.rmtree(out)

        ours()  # warm the file cache and the imports for both
        rows.append((PLANES[i % 4], best_of(ours), best_of(theirs)))
    return rows


def whole_run(archive: Path, n: int, scratch: Path, size: int, workers: int) -> dict:
    subset = scratch / f"in{n}"
    subset.mkdir()
    for folder in sorted(archive.iterdir())[:n]:
        (subset / folder.name).symlink_to(folder)
    script = scratch / "run_one.py"
    script.write_text(RUN_ONE)
    proc = subprocess.run(
        [sys.executable, str(script), str(subset), str(scratch / f"out{n}"), str(size), str(workers),
         str(scratch / "bench.key")],
        capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-2000:])
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    shutil.rmtree(scratch / f"out{n}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--series", type=int, default=40, help="series in the big run (the small run has 10)")
    parser.add_argument("--timed", type=int, default=8, help="series timed one by one against dcm2niix")
    parser.add_argument("--slices", type=int, default=40)
    parser.add_argument("--pixels", type=int, default=256, help="rows = columns of each slice")
    parser.add_argument("--size", type=int, default=512, help="dataset slice size (--size of preprocess)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="geco-bench-"))
    try:
        t = time.perf_counter()
        folders = write_archive(scratch / "archive", args.series, args.slices, args.pixels)
        print(f"wrote {args.series} series of {args.slices} x {args.pixels}x{args.pixels} slices "
              f"in {time.perf_counter() - t:.1f} s")

        rows = per_series(folders[: args.timed], scratch)
        print("\nper series: DICOM -> axial volume (ours, in-process) vs dcm2niix (one process per series)")
        print(f"{'series':>6} {'plane':>9} {'ours s':>8} {'dcm2niix s':>10} {'ratio':>6}")
        for i, (plane, ours, theirs) in enumerate(rows):
            print(f"{i:>6} {plane:>9} {ours:>8.3f} {theirs:>10.3f} {ours / theirs:>6.2f}")
        ratios = [o / d for _, o, d in rows]
        print(f"median ratio {statistics.median(ratios):.2f}, worst {max(ratios):.2f} (target <= 3)")

        print(f"\nwhole `geco-tf preprocess` (--size {args.size}, --workers {args.workers}, fresh process each)")
        print(f"{'series':>6} {'slices':>6} {'total s':>8} {'find s':>7} {'convert s':>9} {'write s':>8} "
              f"{'s/series':>8} {'main peak MB':>12} {'worker peak MB':>14}")
        results = {}
        for n in sorted({10, args.series}):
            r = whole_run(scratch / "archive", n, scratch, args.size, args.workers)
            results[n] = r
            st = r["stages"]
            print(f"{n:>6} {r['slices']:>6} {r['seconds']:>8.1f} {st['find']:>7.2f} {st['convert']:>9.2f} "
                  f"{st['write']:>8.2f} {r['seconds'] / n:>8.2f} {r['main_peak_mb']:>12.0f} {r['worker_peak_mb']:>14.0f}")
        if len(results) == 2:
            small, big = results[10], results[args.series]
            print(f"peak RSS growth 10 -> {args.series} series: main {big['main_peak_mb'] - small['main_peak_mb']:+.0f} MB, "
                  f"worker {big['worker_peak_mb'] - small['worker_peak_mb']:+.0f} MB")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
