"""Where a training step's time goes: a ``tf.profiler`` trace, summarised by op type.

Why: a fraction-of-peak figure says *that* a step is slow, not *why*. The trace written here is
a normal TensorBoard profile (open ``logdir`` with TensorBoard's profile plugin); the summary
reads the same ``.xplane.pb`` with the protobuf classes TensorFlow ships, so no profiler plugin is
needed to get the table that ``benchmarks/run.py`` stores in ``results.json``.

Op time is the wall time of each TensorFlow op on the executor threads, so with inter-op
parallelism the sum can exceed the step time; shares are shares of that sum.
"""

from __future__ import annotations

import glob
import os
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import tensorflow as tf

#: Op types that do the counted FLOPs (convolutions, their gradients, matmuls).
COMPUTE_OPS = (
    "Conv2D",
    "Conv2DBackpropInput",
    "Conv2DBackpropFilter",
    "_MklConv2D",
    "_MklNativeConv2D",
    "_MklNativeConv2DWithBias",
    "_MklNativeConv2DBackpropInput",
    "_MklNativeConv2DBackpropFilter",
    "_MklNativeConv2DBackpropFilterWithBias",
    "_FusedConv2D",
    "_MklFusedConv2D",
    "_MklNativeFusedConv2D",
    "MatMul",
    "_MklMatMul",
    "_FusedMatMul",
    "_MklFusedMatMul",
    "_MklNativeFusedMatMul",
    "BatchMatMulV2",
)


def _is_compute(op_type: str) -> bool:
    return op_type in COMPUTE_OPS or "Conv2D" in op_type or "MatMul" in op_type


def trace(step: Callable[[], object], logdir: str | os.PathLike, steps: int = 2) -> Path:
    """Run ``step`` ``steps`` times under ``tf.profiler`` (after the caller's warm-up); return
    the ``.xplane.pb`` written under ``logdir``."""
    logdir = Path(logdir)
    logdir.mkdir(parents=True, exist_ok=True)
    before = set(glob.glob(str(logdir / "**" / "*.xplane.pb"), recursive=True))
    tf.profiler.experimental.start(str(logdir))
    try:
        for _ in range(steps):
            step()
    finally:
        tf.profiler.experimental.stop()
    new = sorted(set(glob.glob(str(logdir / "**" / "*.xplane.pb"), recursive=True)) - before)
    if not new:
        raise RuntimeError(f"tf.profiler wrote no trace under {logdir}")
    return Path(new[-1])


def summarise(xplane: str | os.PathLike, top: int = 12) -> dict:
    """Op time by op type (and by network and pass) from one ``.xplane.pb``.

    Returns ``{"total_ms", "compute_share", "by_type": [{op, ms, share}], "by_scope": {...}}``
    where ``compute_share`` is the share of op time spent in convolutions and matmuls (the
    counted FLOPs); the rest is element-wise, normalisation, pooling and optimizer work.
    """
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    space.ParseFromString(Path(xplane).read_bytes())
    by_type: dict[str, float] = defaultdict(float)
    by_scope: dict[str, float] = defaultdict(float)
    for plane in space.planes:
        if not plane.name.startswith("/host:CPU"):
            continue
        meta = plane.event_metadata
        for line in plane.lines:
            # Op events live on the executor threads; XLA clusters appear as one op each.
            if not (line.name.startswith("tf_Compute") or line.name.startswith("tf_XLA") or "XLA" in line.name):
                continue
            for event in line.events:
                m = meta[event.metadata_id]
                name = m.name
                op_type = m.display_name or (name.rsplit(":", 1)[-1] if ":" in name else "")
                if not op_type or name.startswith("ThreadpoolListener") or name.startswith("ExecutorState"):
                    continue
                ms = event.duration_ps / 1e9
                by_type[op_type] += ms
                net = "generator" if "generator" in name else "classifier" if "classifier" in name else "other"
                kind = "backward" if "gradient_tape" in name else "optimizer" if "adam" in name.lower() else "forward"
                by_scope[f"{net}/{kind}"] += ms
    total = sum(by_type.values()) or 1.0
    compute = sum(ms for op, ms in by_type.items() if _is_compute(op))
    ranked = sorted(by_type.items(), key=lambda kv: -kv[1])
    return {
        "total_ms": total,
        "compute_share": compute / total,
        "by_type": [{"op": op, "ms": ms, "share": ms / total} for op, ms in ranked[:top]],
        "by_scope": {k: {"ms": v, "share": v / total} for k, v in sorted(by_scope.items(), key=lambda kv: -kv[1])},
    }
