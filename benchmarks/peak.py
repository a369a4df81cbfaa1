"""The machine's measured float32 peak, taken in the same process as the other benchmarks.

Why measure instead of quoting a datasheet: on a shared 2-core VM the clock, the vector units
TensorFlow's oneDNN build actually uses and the load from other jobs all move the ceiling. One
large convolution and one large matmul, timed the same way as the training step (``tf.function``,
warm-up first, best of a few repeats), give the ceiling this TensorFlow reaches on this machine
right now; the training step is reported as a fraction of it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import tensorflow as tf

#: One large 3x3 convolution: batch, height/width, input channels, output channels.
CONV_SHAPE = (8, 128, 128, 128)
CONV_KERNEL = 3
#: One large square matmul.
MATMUL_N = 4096


def _time_best(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Best and median wall seconds of ``fn`` after one warm-up call (best = least disturbed)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    times.sort()
    return times[0], times[len(times) // 2]


def conv_peak(
    shape: tuple[int, int, int, int] = CONV_SHAPE, kernel: int = CONV_KERNEL, repeats: int = 5
) -> dict[str, float | list[int] | str]:
    """GFLOP/s of one 'same' Conv2D, float32, NHWC (TensorFlow's CPU layout, run by oneDNN)."""
    b, hw, cin, cout = shape
    x = tf.random.stateless_normal([b, hw, hw, cin], seed=[1, 2])
    w = tf.random.stateless_normal([kernel, kernel, cin, cout], seed=[3, 4])
    conv = tf.function(lambda: tf.nn.conv2d(x, w, 1, "SAME"), autograph=False)
    flops = 2 * kernel * kernel * cin * cout * hw * hw * b
    best, median = _time_best(lambda: conv().numpy(), repeats)
    return {
        "op": "Conv2D",
        "shape_nhwc": [b, hw, hw, cin],
        "kernel": [kernel, kernel, cin, cout],
        "gflop": flops / 1e9,
        "gflops": flops / best / 1e9,
        "gflops_median": flops / median / 1e9,
    }


def matmul_peak(n: int = MATMUL_N, repeats: int = 5) -> dict[str, float | list[int] | str]:
    """GFLOP/s of one ``n x n`` by ``n x n`` float32 matmul (2 n^3 FLOPs)."""
    a = tf.random.stateless_normal([n, n], seed=[5, 6])
    b = tf.random.stateless_normal([n, n], seed=[7, 8])
    matmul = tf.function(lambda: tf.matmul(a, b), autograph=False)
    flops = 2 * n**3
    best, median = _time_best(lambda: matmul().numpy(), repeats)
    return {
        "op": "MatMul",
        "shape": [n, n, n],
        "gflop": flops / 1e9,
        "gflops": flops / best / 1e9,
        "gflops_median": flops / median / 1e9,
    }


def measure_peak(quick: bool = False) -> dict[str, dict]:
    """Conv and matmul peaks; ``quick`` uses smaller problems (for the test suite)."""
    if quick:
        return {"conv": conv_peak((2, 64, 64, 64), repeats=2), "matmul": matmul_peak(1024, repeats=2)}
    return {"conv": conv_peak(), "matmul": matmul_peak()}


if __name__ == "__main__":
    import sys

    for name, result in measure_peak(quick="--quick" in sys.argv[1:]).items():
        print(f"{name:<7} {result['gflops']:8.1f} GFLOP/s (median {result['gflops_median']:.1f})")
