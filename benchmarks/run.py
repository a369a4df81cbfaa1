"""geco-tf benchmarks: speed and memory against this machine's own measured limit.

One command, same measurements every time, so regressions and gains are visible::

    python benchmarks/run.py            # full run, < 20 minutes on 2 CPU cores
    python benchmarks/run.py --quick    # every key at toy sizes (the test suite runs this)

Writes ``benchmarks/results.json`` and prints a table. Sections:

1. ``peak``: one large Conv2D and one large matmul, float32, timed in this run (``peak.py``).
2. ``flops``: FLOPs per image counted from the layers (``flops.py``), per image size.
3. ``training``: images/s of the full GECO step (``GECO.train_step`` as ``geco-tf train`` builds
   it: classifier update with replay pool + generator update) at 64-512 px, float32, XLA off/on;
   mixed_float16 only where a GPU is visible. Each row runs in its own subprocess (fresh
   TensorFlow, its own peak RSS) and reports achieved GFLOP/s and the fraction of the conv peak.
4. ``profile``: a ``tf.profiler`` trace of the 256 px step, summarised by op type (``opprofile.py``).
5. ``pipeline``: images/s that tf.data reads from a dataset directory alone, against the step's
   consumption and against a DeepDicomSort-style loader (one NIfTI file per slice, SimpleITK).
6. ``inference``: slices/s for a 512 x 512 volume through the Keras generator, the SavedModel
   and the TFLite file, batch 1 and 16.
7. ``preprocessing``: the ingestion benchmark (``preprocess_vs_dcm2niix.py``), seconds per series
   against dcm2niix and peak RSS as the archive grows.
8. ``memory``: peak RSS of training at 512 x 512 at a few batch sizes (subprocesses), a linear
   fit, and the largest batch that fits in 16 GiB by extrapolation.

Wall-clock figures on a shared machine are only as good as its quietness: the load average at
start and end is recorded, and each training row also gives process CPU seconds per image,
which moves much less under load than wall time.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

#: Full-run plan: (image size, batch). Batch 8 at 512 is the issue's memory point.
TRAIN_PLAN = ((64, 32), (128, 16), (256, 8), (512, 8))
QUICK_TRAIN_PLAN = ((32, 2),)
MEMORY_SIZE, MEMORY_BATCHES = 512, (2, 4, 8)
QUICK_MEMORY_SIZE, QUICK_MEMORY_BATCHES = 32, (1, 2)
MEMORY_LIMIT_BYTES = 16 * 1024**3
TARGET_SIZE = 256
PROFILE_STEPS = 2
INFER_SIZE, INFER_SLICES = 512, 32
#: Threads: one op at a time, both cores inside it (see README: two inter-op threads on two
#: cores make two convolutions fight over the same cores).
INTER_OP_THREADS = 1
#: Every key a results.json must hold (section -> keys); ``missing_keys`` checks it.
REQUIRED_KEYS: dict[str, tuple[str, ...]] = {
    "machine": ("cpu", "logical_cores", "ram_bytes", "gpu", "tensorflow", "load_average_start", "load_average_end"),
    "peak": ("conv", "matmul"),
    "flops": ("convention",),
    "training": (),
    "profile": ("size", "compute_share", "by_type", "by_scope", "trace_dir"),
    "pipeline": ("sizes",),
    "inference": tuple(f"{m}_batch{b}" for m in ("keras", "saved_model", "tflite") for b in (1, 16)),
    "preprocessing": ("status", "summary", "per_series", "whole_preprocess"),
    "memory": ("points", "fit", "largest_batch_in_16GiB", "peak_rss_batch8_bytes"),
    "targets": (),
}
TRAINING_ROW_KEYS = (
    "size", "batch", "precision", "xla", "images_per_s", "gflop_per_image", "achieved_gflops",
    "fraction_of_conv_peak", "cpu_seconds_per_image", "peak_rss_bytes",
)
PIPELINE_KEYS = (
    "tfdata_uncached", "tfdata_cached", "dds_nifti_loader", "step_consumption_images_per_s",
    "ratio_tfdata_to_step", "ratio_tfdata_to_dds_loader",
)
TARGETS = {"train_fraction_of_conv_peak_256": 0.5, "pipeline_vs_step": 10.0, "pipeline_vs_dds_loader": 10.0}


def log(msg: str) -> None:
    """Progress on stderr, so stdout stays the table."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def peak_rss_bytes() -> int:
    """This process's own peak RSS (``VmHWM``). Not ``ru_maxrss``: Linux carries ``ru_maxrss``
    across fork/exec, so a worker started by a big parent would report the parent's size."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _quiet_tf():
    """Import TensorFlow with the thread settings every measurement uses."""
    import tensorflow as tf

    try:
        tf.config.threading.set_inter_op_parallelism_threads(INTER_OP_THREADS)
    except RuntimeError:
        pass  # already initialised (e.g. imported by a test): keep what is set
    tf.get_logger().setLevel("ERROR")
    return tf


# ------------------------------------------------------------------------------------------
# the GECO model exactly as `geco-tf train` builds it
# ------------------------------------------------------------------------------------------
def geco_config(precision: str = "float32"):
    """``geco-tf train``'s default :class:`~geco_tf.training.config.TrainConfig`, at ``precision``."""
    from geco_tf.training.config import TrainConfig

    return TrainConfig().replace(precision=precision)


def build_geco(size: int, precision: str = "float32", num_classes: int = 4):
    """The GECO model of ``geco-tf train`` (default config) for ``size`` x ``size`` slices. No
    dataset here, so the settings resolved from one are off (no output band). Returns the
    model and its config."""
    tf = _quiet_tf()
    from geco_tf.training import train
    from geco_tf.training.precision import precision_policy

    config = geco_config(precision)
    classes = [f"class{i}" for i in range(num_classes)]
    strategy = tf.distribute.get_strategy()
    with precision_policy(precision), strategy.scope():
        model = train.build_geco(config, classes, size, strategy)
    return model, config


# ------------------------------------------------------------------------------------------
# worker: one training configuration in a fresh process
# ------------------------------------------------------------------------------------------
def train_worker(
    size: int,
    batch: int,
    xla: bool,
    precision: str,
    min_steps: int,
    min_seconds: float,
    profile_dir: str | None = None,
) -> dict:
    """Time ``GECO.train_step`` on one in-memory batch (the step alone, no input pipeline).

    Two untimed calls first (tracing/compilation, then the first real step with allocations),
    then at least ``min_steps`` timed steps and ``min_seconds``. Reports the median step.
    """
    tf = _quiet_tf()
    t0 = time.perf_counter()
    model, config = build_geco(size, precision)
    x = tf.random.stateless_uniform([batch, size, size, 1], seed=[1, 2], minval=-1.0, maxval=1.0)
    y = tf.random.stateless_uniform([batch], seed=[3, 4], minval=0, maxval=4, dtype=tf.int32)
    step = tf.function(model.train_step, jit_compile=xla)

    def run_once() -> None:
        out = step((x, y))
        float(out["gen_loss"])  # wait for the step to finish

    run_once()
    compile_s = time.perf_counter() - t0
    run_once()
    from peak import conv_peak

    # The conv peak right before and after the timed steps, in this process: on a shared
    # machine the ceiling moves with the load, and the ratio must compare like with like.
    peak_before = conv_peak(repeats=3)["gflops"]
    times: list[float] = []
    cpu0 = time.process_time()
    start = time.perf_counter()
    while len(times) < min_steps or time.perf_counter() - start < min_seconds:
        t = time.perf_counter()
        run_once()
        times.append(time.perf_counter() - t)
        if len(times) >= 50:
            break
    cpu = time.process_time() - cpu0
    rss = peak_rss_bytes()  # before the second peak measurement's buffers
    local_peak = max(peak_before, conv_peak(repeats=3)["gflops"])
    times_sorted = sorted(times)
    median = times_sorted[len(times) // 2]
    result = {
        "size": size,
        "batch": batch,
        "xla": xla,
        "precision": precision,
        "steps_timed": len(times),
        "step_seconds_median": median,
        "step_seconds_best": times_sorted[0],
        "images_per_s": batch / median,
        "images_per_s_best": batch / times_sorted[0],
        "cpu_seconds_per_image": cpu / (batch * len(times)),
        "build_and_compile_seconds": compile_s,
        "peak_rss_bytes": rss,
        "conv_peak_gflops_local": local_peak,
        "classifier_batch_factor": 1.0 + (config.pool_fraction if config.pool_size else 0.0),
    }
    if profile_dir:
        from opprofile import summarise, trace

        xplane = trace(run_once, profile_dir, steps=PROFILE_STEPS)
        result["profile"] = {"trace_dir": str(profile_dir), **summarise(xplane)}
    return result


def run_worker(args: list[str], timeout: float = 900) -> dict:
    """Run ``run.py --worker ...`` in a subprocess; return its JSON (or an error record)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", *args]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    for line in reversed(proc.stdout.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    tail = (proc.stderr or "").strip().splitlines()[-3:]
    return {"error": f"worker exit {proc.returncode}: {' | '.join(tail)}"}


def worker_main(argv: list[str]) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--size", type=int)
    p.add_argument("--batch", type=int)
    p.add_argument("--xla", type=int, default=0)
    p.add_argument("--precision", default="float32")
    p.add_argument("--min-steps", type=int, default=3)
    p.add_argument("--min-seconds", type=float, default=10.0)
    p.add_argument("--profile-dir", default=None)
    a = p.parse_args(argv)
    out = train_worker(a.size, a.batch, bool(a.xla), a.precision, a.min_steps, a.min_seconds, a.profile_dir)
    print(json.dumps(out), flush=True)


# ------------------------------------------------------------------------------------------
# sections
# ------------------------------------------------------------------------------------------
def machine_info() -> dict:
    tf = _quiet_tf()
    import psutil

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpus = tf.config.list_physical_devices("GPU")
    return {
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "ram_bytes": psutil.virtual_memory().total,
        "gpu": [g.name for g in gpus] or "no GPU",
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": __import__("keras").__version__,
        "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default (on)"),
        "inter_op_threads": INTER_OP_THREADS,
        "intra_op_threads": "default (all cores)",
        "load_average_start": load_average(),
    }


def flops_section(sizes: tuple[int, ...]) -> dict:
    """Forward FLOPs of generator and classifier and the full step, per image, per size."""
    from flops import forward_flops, geco_step_flops

    from geco_tf.training.train import classifier_padding

    out = {}
    for size in sizes:
        model, config = build_geco(size)
        g = forward_flops(model.generator, (size, size, 1))
        c = forward_flops(model.classifier, (size, size, 1))
        factor = 1.0 + (config.pool_fraction if config.pool_size else 0.0)
        out[str(size)] = geco_step_flops(g, c, config.critic_steps, 0, factor)
        out[str(size)]["classifier_padding"] = classifier_padding(config, size)
        out[str(size)]["classifier_batch_factor"] = factor
    out["convention"] = (
        "2 FLOPs per multiply-add; Conv2D, Conv2DTranspose and Dense only; step = classifier update "
        "(G forward + 3 x C forward x classifier batch factor) + generator update (3 x G forward + 2 x C forward)"
    )
    return out


def training_section(plan, quick: bool, peak_conv: float, flops: dict, profile_dir: Path) -> list[dict]:
    tf = _quiet_tf()
    rows = []
    has_gpu = bool(tf.config.list_physical_devices("GPU"))
    for size, batch in plan:
        for xla in (False, True):
            log(f"training step {size}px batch {batch} XLA {'on' if xla else 'off'}")
            args = ["--size", str(size), "--batch", str(batch), "--xla", str(int(xla))]
            if quick:
                args += ["--min-steps", "1", "--min-seconds", "0"]
            else:
                args += ["--min-steps", "2" if size >= 512 else "3", "--min-seconds", "15" if size == 256 else "8"]
            if size == (TARGET_SIZE if not quick else plan[0][0]) and not xla:
                args += ["--profile-dir", str(profile_dir)]
            row = run_worker(args)
            row.setdefault("size", size)
            row.setdefault("batch", batch)
            row.setdefault("xla", xla)
            row.setdefault("precision", "float32")
            if "images_per_s" in row:
                step_flops = flops[str(size)]["step"]
                row["gflop_per_image"] = step_flops / 1e9
                row["achieved_gflops"] = row["images_per_s"] * step_flops / 1e9
                # Against the conv peak measured in the same worker around the timed steps (same
                # load); the fraction against the run's opening peak is kept beside it.
                local = row.get("conv_peak_gflops_local") or peak_conv
                row["fraction_of_conv_peak"] = row["achieved_gflops"] / local
                row["fraction_of_run_conv_peak"] = row["achieved_gflops"] / peak_conv
                cores = os.cpu_count() or 1
                # The same work per CPU-second, scaled to all cores: what the step would reach
                # with the machine to itself (an upper bound under load).
                row["cpu_time_gflops"] = step_flops / 1e9 / row["cpu_seconds_per_image"] * cores
                log(
                    f"  {row['images_per_s']:.2f} images/s, {row['achieved_gflops']:.0f} GFLOP/s "
                    f"({100 * row['fraction_of_conv_peak']:.0f}% of conv peak), CPU-time {row['cpu_time_gflops']:.0f} GFLOP/s"
                )
            else:
                log(f"  failed: {row.get('error')}")
            rows.append(row)
        rows.append(
            {
                "size": size,
                "batch": batch,
                "precision": "mixed_float16",
                "xla": None,
                "status": "measured" if has_gpu else "skipped: no GPU",
            }
        )
        if has_gpu:  # pragma: no cover - no GPU here
            for xla in (False, True):
                rows.append(
                    run_worker(
                        ["--size", str(size), "--batch", str(batch), "--xla", str(int(xla)), "--precision", "mixed_float16"]
                    )
                )
    return rows


def _make_datasets(work: Path, sizes: tuple[int, ...], quick: bool) -> dict[int, Path]:
    """The built-in dataset at 64 px (``synthesize``), and the same slices resized for larger
    sizes, written with the same :class:`DatasetWriter` (the reader only sees TFRecords of a
    given size; the simulator at 256 px costs ~1 s per slice, too slow for this budget)."""
    import numpy as np

    from geco_tf.data.dataset import DatasetWriter, SliceRecord, open_dataset
    from geco_tf.data.synth import synthesize

    tf = _quiet_tf()
    base_size = min(64, min(sizes))
    subjects, per_subject = (8, 2) if quick else (32, 8)
    base = synthesize(work / f"data{base_size}", size=base_size, subjects=subjects, slices_per_subject=per_subject, seed=0)
    out = {base_size: Path(base)}
    data = open_dataset(base)
    from geco_tf.data.pipeline import slice_records

    records = []
    for split in ("train", "val", "test"):
        for r in slice_records(data, split):
            records.append((int(r["slice_id"]), r["image"].numpy()[..., 0]))
    rows = {int(r["slice_id"]): r for r in data.manifest}
    for size in sizes:
        if size == base_size:
            continue
        splits = {row["subject"]: row["split"] for row in data.manifest}
        with DatasetWriter(
            work / f"data{size}",
            size,
            classes={k: data.classes(k) for k in data.info["classes"]},
            splits=splits,
            made_by={"tool": "benchmarks/run.py", "from": str(base), "resized_to": size},
        ) as writer:
            for slice_id, image in records:
                row = rows[slice_id]
                big = tf.image.resize(image[..., None], [size, size], method="bilinear").numpy()[..., 0]
                writer.add(
                    SliceRecord(
                        image=np.clip(big, -1.0, 1.0),
                        subject=row["subject"],
                        manufacturer=row["manufacturer"] or None,
                        field_strength=row["field_strength"] or None,
                        modality=row["modality"] or None,
                        source_volume=row["source_volume"],
                        slice_index=int(row["slice_index"]),
                        lesion=row["lesion"] or None,
                    )
                )
        out[size] = work / f"data{size}"
    return out


def tfdata_images_per_s(data_dir: Path, batch: int, min_seconds: float, cache: bool) -> dict:
    """Images/s from ``make_dataset`` over the training split (shuffled, repeated, as training
    reads it). ``cache=False``: every image parsed from the TFRecord shards every time."""
    from geco_tf.data.dataset import open_dataset
    from geco_tf.data.pipeline import make_dataset

    data = open_dataset(data_dir)
    ds = make_dataset(data, "train", "manufacturer", batch, shuffle=True, seed=0, repeat=True, cache=cache)
    it = iter(ds)
    n_train = data.count("train", "manufacturer")
    # Warm-up: one full pass (fills the cache when on, starts the readers when off).
    for _ in range(max(1, math.ceil(n_train / batch))):
        next(it)
    images, start = 0, time.perf_counter()
    while time.perf_counter() - start < min_seconds or images < 4 * n_train:
        images += int(next(it)[0].shape[0])
        if time.perf_counter() - start > 4 * min_seconds:
            break
    seconds = time.perf_counter() - start
    return {"images_per_s": images / seconds, "images": images, "seconds": seconds, "cache": cache, "batch": batch}


def dds_loader_images_per_s(data_dir: Path, work: Path, batch: int, max_slices: int, min_seconds: float) -> dict:
    """A DeepDicomSort-style loader: one NIfTI file per slice on disk, each read with
    ``SimpleITK.ReadImage`` in a Python loop and stacked into a batch (as DDS's Keras data
    generator does), single process. The files are written first from the same slices."""
    import numpy as np
    import SimpleITK as sitk

    from geco_tf.data.dataset import open_dataset
    from geco_tf.data.pipeline import slice_records

    data = open_dataset(data_dir)
    folder = work / f"dds_nifti_{data.image_size}"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, r in enumerate(slice_records(data, "train")):
        if i >= max_slices:
            break
        path = folder / f"slice_{i:05d}.nii.gz"
        img = sitk.GetImageFromArray(r["image"].numpy()[..., 0].astype(np.float32)[None])  # 1 x H x W
        sitk.WriteImage(img, str(path))
        paths.append(path)
    labels = np.zeros(len(paths), np.int32)

    def batches():
        order = np.random.default_rng(0).permutation(len(paths))
        while True:
            for s in range(0, len(order) - batch + 1, batch):
                idx = order[s : s + batch]
                arrays = [sitk.GetArrayFromImage(sitk.ReadImage(str(paths[i])))[0] for i in idx]
                yield np.stack(arrays)[..., None].astype(np.float32), labels[idx]

    gen = batches()
    next(gen)
    images, start = 0, time.perf_counter()
    while time.perf_counter() - start < min_seconds:
        images += len(next(gen)[0])
    seconds = time.perf_counter() - start
    return {"images_per_s": images / seconds, "images": images, "seconds": seconds, "files": len(paths), "batch": batch}


def pipeline_section(work: Path, sizes: tuple[int, ...], quick: bool, training: list[dict]) -> dict:
    dirs = _make_datasets(work, sizes, quick)
    min_s = 0.5 if quick else 5.0
    out: dict = {"note": "training split of a dataset directory; tf.data alone, no training running", "sizes": {}}
    for size, data_dir in sorted(dirs.items()):
        log(f"input pipeline {size}px")
        step = next(
            (r for r in training if r.get("size") == size and r.get("xla") is False and "images_per_s" in r), None
        )
        batch = step["batch"] if step else 32
        cold = tfdata_images_per_s(data_dir, batch, min_s, cache=False)
        cached = tfdata_images_per_s(data_dir, batch, min_s, cache=True)
        dds = dds_loader_images_per_s(data_dir, work, batch, 64 if quick else 256, min_s)
        best_step = max(
            (r["images_per_s"] for r in training if r.get("size") == size and "images_per_s" in r), default=None
        )
        out["sizes"][str(size)] = {
            "tfdata_uncached": cold,
            "tfdata_cached": cached,
            "dds_nifti_loader": dds,
            "step_consumption_images_per_s": best_step,
            "ratio_tfdata_to_step": cold["images_per_s"] / best_step if best_step else None,
            "ratio_tfdata_to_dds_loader": cold["images_per_s"] / dds["images_per_s"],
        }
    return out


def inference_section(work: Path, size: int, slices: int) -> dict:
    """Slices/s for one ``size`` x ``size`` volume of ``slices`` slices, batch 1 and 16."""
    import numpy as np

    tf = _quiet_tf()
    from geco_tf.models import build_generator

    config = geco_config()
    generator = build_generator(config.generator, base_filters=config.base_filters, depth=config.depth)
    generator(tf.zeros([1, size, size, 1]))
    rng = np.random.default_rng(0)
    volume = rng.uniform(-1, 1, size=(slices, size, size, 1)).astype(np.float32)
    raw_volume = (volume + 1.0) * 500.0  # serving graphs take raw scanner units
    out: dict = {"size": size, "slices": slices}

    def timed(name: str, run_batch: Callable[[np.ndarray], object], batch: int, data: np.ndarray) -> None:
        run_batch(data[:batch])  # warm-up / trace
        start = time.perf_counter()
        for s in range(0, len(data), batch):
            run_batch(data[s : s + batch])
        out[f"{name}_batch{batch}"] = len(data) / (time.perf_counter() - start)

    keras_fn = tf.function(lambda t: generator(t, training=False), reduce_retracing=True)
    for b in (1, 16):
        log(f"inference keras batch {b}")
        timed("keras", lambda a: keras_fn(tf.constant(a)).numpy(), b, volume)

    try:
        from geco_tf.export.saved_model import export_saved_model

        sm_dir = export_saved_model(generator, work / "saved_model", version=1)
        out["saved_model_exporter"] = "geco_tf.export.saved_model.export_saved_model (raw units, normalisation in graph)"
    except ImportError:
        sm_dir = work / "saved_model" / "1"
        tf.saved_model.save(generator, str(sm_dir))
        out["saved_model_exporter"] = "tf.saved_model.save (fallback)"
    loaded = tf.saved_model.load(str(sm_dir))
    serve = loaded.signatures["serving_default"]
    input_name = next(iter(serve.structured_input_signature[1]))
    for b in (1, 16):
        log(f"inference SavedModel batch {b}")
        timed("saved_model", lambda a: [v.numpy() for v in serve(**{input_name: tf.constant(a)}).values()], b, raw_volume)

    from ai_edge_litert.interpreter import Interpreter

    tfl_path = work / "geco.tflite"
    try:
        from geco_tf.export.tflite import export_tflite

        export_tflite(generator, tfl_path, size)
        out["tflite_exporter"] = "geco_tf.export.tflite.export_tflite (batch-1 file, raw units)"
    except ImportError:
        conv = tf.lite.TFLiteConverter.from_concrete_functions(
            [keras_fn.get_concrete_function(tf.TensorSpec([1, size, size, 1], tf.float32))]
        )
        tfl_path.write_bytes(conv.convert())
        out["tflite_exporter"] = "TFLiteConverter (fallback)"
    for b in (1, 16):
        log(f"inference TFLite batch {b}")
        interp = Interpreter(model_path=str(tfl_path), num_threads=os.cpu_count())
        inp = interp.get_input_details()[0]
        mode = "native batch"
        try:
            if b != 1:
                interp.resize_tensor_input(inp["index"], [b, size, size, 1], strict=False)
            interp.allocate_tensors()
            outp = interp.get_output_details()[0]

            def run_tfl(a: np.ndarray, _i=interp, _in=inp, _out=outp, _b=b) -> object:
                if len(a) != _b:  # a short last batch: pad
                    a = np.concatenate([a, np.repeat(a[-1:], _b - len(a), 0)])
                _i.set_tensor(_in["index"], a)
                _i.invoke()
                return _i.get_tensor(_out["index"])

            timed("tflite", run_tfl, b, raw_volume)
        except (RuntimeError, ValueError) as exc:  # the file is batch-1: fall back to a loop
            mode = f"batch-1 file invoked {b} times per batch ({type(exc).__name__})"
            interp = Interpreter(model_path=str(tfl_path), num_threads=os.cpu_count())
            interp.allocate_tensors()
            inp, outp = interp.get_input_details()[0], interp.get_output_details()[0]

            def run_loop(a: np.ndarray, _i=interp, _in=inp, _out=outp) -> object:
                for image in a:
                    _i.set_tensor(_in["index"], image[None])
                    _i.invoke()
                return _i.get_tensor(_out["index"])

            timed("tflite", run_loop, b, raw_volume)
        out[f"tflite_batch{b}_mode"] = mode
    out["tflite_threads"] = os.cpu_count()
    return out


def preprocessing_in_subprocess(work: Path, quick: bool) -> dict:
    """Run :func:`preprocessing_section` in a fresh, small process (no TensorFlow imported): the
    ingestion benchmark reads each run's peak RSS with ``ru_maxrss``, which a child inherits from
    the process that forked it, so forking from this big process would inflate it."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--preprocess-worker", str(work)]
    if quick:
        cmd.append("--quick")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    for line in reversed(proc.stdout.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    return {"status": f"failed: exit {proc.returncode}: {(proc.stderr or '').strip()[-300:]}"}


def preprocessing_section(work: Path, quick: bool) -> dict:
    """The ingestion engineer's benchmark (``preprocess_vs_dcm2niix.py``), reused function by
    function: per-series time of our DICOM stage vs the dcm2niix executable, and the whole
    ``geco-tf preprocess`` on a small and a large archive (fresh process each, peak RSS)."""
    if not (HERE / "preprocess_vs_dcm2niix.py").exists():
        return {"status": "not available: benchmarks/preprocess_vs_dcm2niix.py not written yet"}
    try:
        import preprocess_vs_dcm2niix as ingest
    except Exception as exc:  # another engineer's file: report, do not crash the run
        return {"status": f"import failed: {type(exc).__name__}: {exc}"}
    if quick:
        counts, slices, pixels, size, timed = (1, 2), 4, 64, 64, 1
    else:
        counts, slices, pixels, size, timed = (10, 40), 40, 256, 512, 4
    scratch = work / "preprocessing"
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        folders = ingest.write_archive(scratch / "archive", max(counts), slices, pixels)
        log(f"preprocessing: {timed} series one by one vs dcm2niix")
        rows = ingest.per_series(folders[:timed], scratch)
        runs = {}
        for n in counts:
            log(f"preprocessing: whole `geco-tf preprocess` on {n} series")
            runs[str(n)] = ingest.whole_run(scratch / "archive", n, scratch, size, 2)
    except BaseException as exc:  # noqa: BLE001 - whole_run raises SystemExit on failure
        if isinstance(exc, KeyboardInterrupt):
            raise
        return {"status": f"failed: {type(exc).__name__}: {str(exc)[-300:]}"}
    ours = [o for _, o, _ in rows]
    theirs = [d for _, _, d in rows]
    small, big = runs[str(counts[0])], runs[str(counts[1])]
    return {
        "status": "measured",
        "archive": {"series": max(counts), "slices_per_series": slices, "pixels": pixels, "dataset_size": size},
        "per_series": [{"plane": p, "ours_s": o, "dcm2niix_s": d, "ratio": o / d} for p, o, d in rows],
        "ours_seconds_per_series_median": sorted(ours)[len(ours) // 2],
        "dcm2niix_seconds_per_series_median": sorted(theirs)[len(theirs) // 2],
        "whole_preprocess": runs,
        "summary": {
            "ours_s_per_series": sorted(ours)[len(ours) // 2],
            "dcm2niix_s_per_series": sorted(theirs)[len(theirs) // 2],
            "preprocess_s_per_series": {n: r["seconds"] / int(n) for n, r in runs.items()},
            "main_peak_mb": {n: r["main_peak_mb"] for n, r in runs.items()},
            "worker_peak_mb": {n: r["worker_peak_mb"] for n, r in runs.items()},
            "main_peak_growth_mb": big["main_peak_mb"] - small["main_peak_mb"],
        },
    }


def memory_section(size: int, batches: tuple[int, ...], training: list[dict], quick: bool) -> dict:
    """Peak RSS of the training step at ``size`` for each batch (one subprocess each, so every
    figure is a whole process: TensorFlow, model, optimizer state, replay pool, activations),
    a least-squares line RSS = a + b * batch, and the largest batch under 16 GiB from it."""
    points = []
    for b in batches:
        row = next(
            (
                r
                for r in training
                if r.get("size") == size and r.get("batch") == b and r.get("xla") is False and "peak_rss_bytes" in r
            ),
            None,
        )
        if row is None:
            log(f"memory {size}px batch {b}")
            row = run_worker(["--size", str(size), "--batch", str(b), "--min-steps", "1", "--min-seconds", "0"])
        if "peak_rss_bytes" in row:
            points.append((b, row["peak_rss_bytes"]))
    out: dict = {
        "size": size,
        "what": "peak RSS (VmHWM) of a process that builds the default GECO model and runs train_step, float32, XLA off",
        "points": [{"batch": b, "peak_rss_bytes": r} for b, r in points],
    }
    fit = linear_fit(points)
    if fit is not None:
        intercept, slope = fit
        out["fit"] = {"intercept_bytes": intercept, "bytes_per_image": slope}
        out["limit_bytes"] = MEMORY_LIMIT_BYTES
        out["largest_batch_in_16GiB"] = largest_batch(intercept, slope, MEMORY_LIMIT_BYTES)
        out["method"] = "linear extrapolation of measured peak RSS over batch size"
    rss8 = next((r for b, r in points if b == 8), None)
    out["peak_rss_batch8_bytes"] = rss8
    return out


def linear_fit(points: list[tuple[float, float]]) -> tuple[float, float] | None:
    """Least-squares ``y = a + b x`` through ``(x, y)`` points; None with fewer than 2 distinct x."""
    if len({x for x, _ in points}) < 2:
        return None
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    slope = sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x, _ in points)
    return my - slope * mx, slope


def largest_batch(intercept: float, slope: float, limit: float) -> int | None:
    """Largest integer batch with ``intercept + slope * batch <= limit`` (None if RSS does not
    grow with batch, i.e. the fit says nothing)."""
    if slope <= 0:
        return None
    return max(0, int(math.floor((limit - intercept) / slope + 1e-9)))  # exact at integer boundaries


# ------------------------------------------------------------------------------------------
# table
# ------------------------------------------------------------------------------------------
def _fmt(x, spec: str = ".2f") -> str:
    return "-" if x is None else format(x, spec)


def format_table(results: dict) -> str:
    """The human-readable summary printed by the command and pasted into docs/results.md."""
    lines = []
    m = results["machine"]
    gpu = m["gpu"] if isinstance(m["gpu"], str) else ", ".join(m["gpu"])
    lines.append(
        f"machine: {m['cpu']}, {m['logical_cores']} cores, {m['ram_bytes'] / 1024**3:.0f} GiB, {gpu}; "
        f"TF {m['tensorflow']}; load avg start {m['load_average_start']} end {m.get('load_average_end')}"
    )
    pk = results["peak"]
    lines.append(
        f"peak float32: Conv2D {pk['conv']['gflops']:.0f} GFLOP/s, MatMul {pk['matmul']['gflops']:.0f} GFLOP/s"
    )
    lines.append("")
    lines.append(
        "| size | batch | precision | XLA | images/s | GFLOP/img | GFLOP/s | conv peak then | % conv peak | CPU-time GFLOP/s | peak RSS |"
    )
    lines.append("| ---: | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results["training"]:
        if "images_per_s" not in r:
            status = r.get("status") or r.get("error", "failed")
            lines.append(f"| {r['size']} | {r['batch']} | {r['precision']} | {_xla(r)} | {status} | | | | | | |")
            continue
        lines.append(
            f"| {r['size']} | {r['batch']} | {r['precision']} | {_xla(r)} | {r['images_per_s']:.2f} | "
            f"{r['gflop_per_image']:.1f} | {r['achieved_gflops']:.0f} | {_fmt(r.get('conv_peak_gflops_local'), '.0f')} | "
            f"{100 * r['fraction_of_conv_peak']:.0f}% | "
            f"{r['cpu_time_gflops']:.0f} | {r['peak_rss_bytes'] / 1024**3:.2f} GiB |"
        )
    prof = results.get("profile") or {}
    if prof.get("compute_share") is not None:
        top = ", ".join(f"{row['op']} {100 * row['share']:.0f}%" for row in prof["by_type"][:6])
        lines.append(
            f"\nprofile ({prof.get('size')} px step, XLA off): convolutions/matmuls {100 * prof['compute_share']:.0f}% "
            f"of op time; top ops: {top}"
        )
        if prof.get("conv_ops_gflops"):
            lines.append(
                f"  inside the trace: convolution/matmul ops run at {prof['conv_ops_gflops']:.0f} GFLOP/s, "
                f"the whole step at {prof['all_ops_gflops']:.0f} GFLOP/s of op time"
            )
    lines.append("")
    lines.append("| input pipeline | tf.data uncached img/s | cached img/s | DDS NIfTI loader img/s | step img/s | tf.data / step | tf.data / DDS |")
    lines.append("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for size, p in results["pipeline"]["sizes"].items():
        lines.append(
            f"| {size} px | {p['tfdata_uncached']['images_per_s']:.0f} | {p['tfdata_cached']['images_per_s']:.0f} | "
            f"{p['dds_nifti_loader']['images_per_s']:.0f} | {_fmt(p['step_consumption_images_per_s'])} | "
            f"{_fmt(p['ratio_tfdata_to_step'], '.0f')}x | {p['ratio_tfdata_to_dds_loader']:.0f}x |"
        )
    inf = results["inference"]
    lines.append("")
    lines.append(f"| inference, {inf['size']}x{inf['size']} volume of {inf['slices']} slices | batch 1 slices/s | batch 16 slices/s |")
    lines.append("| --- | ---: | ---: |")
    for name, label in (("keras", "Keras generator"), ("saved_model", "SavedModel"), ("tflite", "TFLite")):
        lines.append(f"| {label} | {inf[f'{name}_batch1']:.2f} | {inf[f'{name}_batch16']:.2f} |")
    mem = results["memory"]
    lines.append("")
    pts = ", ".join(f"b{p['batch']}: {p['peak_rss_bytes'] / 1024**3:.2f} GiB" for p in mem["points"])
    lines.append(f"memory, training at {mem['size']}x{mem['size']}: {pts}")
    if mem.get("fit"):
        lines.append(
            f"  linear fit: {mem['fit']['intercept_bytes'] / 1024**3:.2f} GiB + {mem['fit']['bytes_per_image'] / 1024**2:.0f} MiB"
            f" per image -> largest batch in 16 GiB: {mem['largest_batch_in_16GiB']} (extrapolated)"
        )
    pre = results["preprocessing"]
    lines.append("")
    lines.extend(_preprocessing_lines(pre))
    lines.append("")
    for t in results["targets"]:
        lines.append(f"target {t['name']}: {_fmt(t['value'])} (>= {t['target']}) {'MET' if t['met'] else 'MISSED'}")
    lines.append(f"total {results['seconds_total']:.0f} s")
    return "\n".join(lines)


def _xla(row: dict) -> str:
    return "-" if row.get("xla") is None else ("on" if row["xla"] else "off")


def _preprocessing_lines(pre: dict) -> list[str]:
    if pre.get("status") != "measured":
        return [f"preprocessing: {pre.get('status', '-')}"]
    s = pre["summary"]
    lines = [
        f"preprocessing, DICOM series -> axial volume: ours {s['ours_s_per_series']:.3f} s/series, "
        f"dcm2niix {s['dcm2niix_s_per_series']:.3f} s/series (ratio {s['ours_s_per_series'] / s['dcm2niix_s_per_series']:.2f})",
        "| archive | whole preprocess s/series | main peak MB | worker peak MB |",
        "| ---: | ---: | ---: | ---: |",
    ]
    for n in s["preprocess_s_per_series"]:
        lines.append(
            f"| {n} series | {s['preprocess_s_per_series'][n]:.2f} | {s['main_peak_mb'][n]:.0f} | {s['worker_peak_mb'][n]:.0f} |"
        )
    return lines


# ------------------------------------------------------------------------------------------
def run(quick: bool = False, out_path: Path | None = None, work: Path | None = None) -> dict:
    """All sections in order; returns (and writes) the results dict."""
    started = time.perf_counter()
    own_tmp = None
    if work is None:
        own_tmp = tempfile.TemporaryDirectory(prefix="geco-bench-")
        work = Path(own_tmp.name)
    results: dict = {"quick": quick, "command": "python benchmarks/run.py" + (" --quick" if quick else "")}
    results["machine"] = machine_info()
    log("peak")
    from peak import measure_peak

    results["peak"] = measure_peak(quick=quick)
    plan = QUICK_TRAIN_PLAN if quick else TRAIN_PLAN
    sizes = tuple(s for s, _ in plan)
    log("flops")
    results["flops"] = flops_section(sizes)
    profile_dir = work / "profile" if quick else HERE / "profile"
    results["training"] = training_section(plan, quick, results["peak"]["conv"]["gflops"], results["flops"], profile_dir)
    prof_size = plan[0][0] if quick else TARGET_SIZE
    prof_row = next((r for r in results["training"] if r.get("size") == prof_size and "profile" in r), None)
    results["profile"] = {"size": prof_size, **(prof_row.pop("profile") if prof_row else {"compute_share": None})}
    if prof_row and results["profile"].get("total_ms"):
        # All counted FLOPs are in convolutions/matmuls: their rate inside the step says whether
        # the convolutions themselves are slow or the time goes elsewhere.
        prof = results["profile"]
        traced_flops = PROFILE_STEPS * prof_row["batch"] * results["flops"][str(prof_size)]["step"]
        compute_s = prof["compute_share"] * prof["total_ms"] / 1e3
        prof["steps"] = PROFILE_STEPS
        prof["batch"] = prof_row["batch"]
        prof["conv_ops_gflops"] = traced_flops / compute_s / 1e9 if compute_s else None
        prof["all_ops_gflops"] = traced_flops / (prof["total_ms"] / 1e3) / 1e9
    pipe_sizes = (32,) if quick else (64, 256)
    results["pipeline"] = pipeline_section(work, pipe_sizes, quick, results["training"])
    results["inference"] = inference_section(work, 64 if quick else INFER_SIZE, 2 if quick else INFER_SLICES)
    log("preprocessing")
    results["preprocessing"] = preprocessing_in_subprocess(work, quick)
    if quick:
        results["memory"] = memory_section(QUICK_MEMORY_SIZE, QUICK_MEMORY_BATCHES, results["training"], quick)
    else:
        results["memory"] = memory_section(MEMORY_SIZE, MEMORY_BATCHES, results["training"], quick)
    results["targets"] = targets(results, prof_size)
    results["machine"]["load_average_end"] = load_average()
    results["seconds_total"] = time.perf_counter() - started
    if out_path is not None:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = out_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(results, indent=2, default=str))
        os.replace(tmp, out_path)
    if own_tmp is not None:
        own_tmp.cleanup()
    return results


def missing_keys(results: dict) -> list[str]:
    """Keys of :data:`REQUIRED_KEYS` (and of every float32 training row, pipeline size and
    target) absent from ``results``: an empty list means the run reported every figure."""
    missing = [f"{sec}" for sec in REQUIRED_KEYS if sec not in results]
    for sec, keys in REQUIRED_KEYS.items():
        if isinstance(results.get(sec), dict):
            missing += [f"{sec}.{k}" for k in keys if k not in results[sec]]
    rows = [r for r in results.get("training", []) if r.get("precision") == "float32"]
    if not rows:
        missing.append("training[float32]")
    if {r.get("xla") for r in rows} != {True, False}:
        missing.append("training[xla on and off]")
    for r in rows:
        missing += [f"training[{r.get('size')},{r.get('xla')}].{k}" for k in TRAINING_ROW_KEYS if k not in r]
    if not any(r.get("precision") == "mixed_float16" for r in results.get("training", [])):
        missing.append("training[mixed_float16]")
    for size, p in results.get("pipeline", {}).get("sizes", {}).items():
        missing += [f"pipeline.sizes.{size}.{k}" for k in PIPELINE_KEYS if k not in p]
    names = {t["name"] for t in results.get("targets", [])}
    missing += [f"targets.{n}" for n in TARGETS if n not in names]
    return missing


def targets(results: dict, size: int) -> list[dict]:
    """The issue's three targets, each with its measured value and whether it is met."""
    rows = [r for r in results["training"] if r.get("size") == size and "fraction_of_conv_peak" in r]
    frac = max((r["fraction_of_conv_peak"] for r in rows), default=None)
    pipe = results["pipeline"]["sizes"]
    ratios_step = [p["ratio_tfdata_to_step"] for p in pipe.values() if p["ratio_tfdata_to_step"] is not None]
    ratios_dds = [p["ratio_tfdata_to_dds_loader"] for p in pipe.values()]
    out = []
    for name, value in (
        ("train_fraction_of_conv_peak_256", frac),
        ("pipeline_vs_step", min(ratios_step) if ratios_step else None),
        ("pipeline_vs_dds_loader", min(ratios_dds) if ratios_dds else None),
    ):
        target = TARGETS[name]
        out.append({"name": name, "value": value, "target": target, "met": value is not None and value >= target})
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--worker":
        worker_main(argv[1:])
        return 0
    if argv and argv[0] == "--preprocess-worker":
        print(json.dumps(preprocessing_section(Path(argv[1]), "--quick" in argv)), flush=True)
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="every key at toy sizes (about a minute)")
    parser.add_argument("--out", type=Path, default=None, help="results JSON (default benchmarks/results.json)")
    args = parser.parse_args(argv)
    out = args.out or HERE / "results.json"
    results = run(quick=args.quick, out_path=out)
    print(format_table(results))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
