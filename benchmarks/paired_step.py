"""Before/after of the GECO step on a shared machine: model variants timed in one process.

Why: on a CPU shared with other jobs, two separate benchmark runs minutes apart differ by up to
2x in wall time, far more than most changes. Here every variant of the default GECO model (as
``geco-tf train`` builds it, via ``run.build_geco``) lives in the same process, their steps
alternate (A, B, A, B, ...) on one in-memory batch, and a burst of the peak convolution of
``peak.py`` runs after every step, so all see the same load. Reported per variant: median step,
images/s, GFLOP/s (FLOPs counted by ``flops.py``), its share of the median interleaved conv
throughput, the median of the per-round speedups against the first variant, and process CPU
seconds per step.

Variants (the layers the models are built with):

* ``keras``: what the models used before ``geco_tf/models/normalization.py`` -- Keras's
  ``BatchNormalization`` in the classifier, ``GroupNormalization(groups=-1)`` as the U-Net's
  instance norm, and per-position PReLU alphas where the classifier has 'valid' padding.
* ``fused``: the current models (fused batch and instance norm, per-channel PReLU).
* ``keras-channel``: ``keras`` with per-channel PReLU alphas (the PReLU change alone).

    python benchmarks/paired_step.py --size 256 --batch 8 --xla 0 --seconds 100
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

VARIANTS = ("keras", "fused", "keras-channel")


def _configure(variant: str) -> None:
    """Point the model modules at the layers of ``variant`` (looked up when a model is built)."""
    import keras

    import geco_tf.models.classifiers as classifiers
    import geco_tf.models.normalization as normalization
    import geco_tf.training.train as train

    original = _configure.__dict__.setdefault(
        "original",
        (normalization.BatchNormalization, normalization.InstanceNormalization, classifiers.build_classifier),
    )
    batch_norm, instance_norm, build_classifier = original
    if variant == "fused":
        normalization.BatchNormalization, normalization.InstanceNormalization = batch_norm, instance_norm
    else:
        normalization.BatchNormalization = keras.layers.BatchNormalization
        normalization.InstanceNormalization = lambda epsilon, name: keras.layers.GroupNormalization(
            groups=-1, epsilon=epsilon, name=name
        )

    def build(kind, num_classes, image_size, padding="auto", **kwargs):
        if variant == "keras":
            resolved = classifiers.choose_padding(image_size) if padding == "auto" else padding
            kwargs.setdefault("prelu", "position" if kind == "dds" and resolved == "valid" else "channel")
        return build_classifier(kind, num_classes, image_size, padding=padding, **kwargs)

    train.build_classifier = build


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--xla", type=int, default=0)
    p.add_argument("--variants", default="keras,fused", help=f"comma-separated, first is the reference: {VARIANTS}")
    p.add_argument("--seconds", type=float, default=100.0, help="timed rounds run at least this long")
    a = p.parse_args(argv)
    variants = a.variants.split(",")
    if unknown := set(variants) - set(VARIANTS):
        p.error(f"unknown variants {sorted(unknown)}")

    import run as bench  # benchmarks/run.py: the model of `geco-tf train`, thread settings

    tf = bench._quiet_tf()
    from flops import forward_flops, geco_step_flops
    from peak import CONV_KERNEL, CONV_SHAPE

    b, hw, cin, cout = CONV_SHAPE
    px = tf.random.stateless_normal([b, hw, hw, cin], seed=[1, 2])
    pw = tf.random.stateless_normal([CONV_KERNEL, CONV_KERNEL, cin, cout], seed=[3, 4])
    conv = tf.function(lambda: tf.nn.conv2d(px, pw, 1, "SAME"), autograph=False)
    conv_gflop = 2 * CONV_KERNEL**2 * cin * cout * hw * hw * b / 1e9
    conv().numpy()

    x = tf.random.stateless_uniform([a.batch, a.size, a.size, 1], seed=[1, 2], minval=-1.0, maxval=1.0)
    y = tf.random.stateless_uniform([a.batch], seed=[3, 4], minval=0, maxval=4, dtype=tf.int32)
    steps, step_gflop = {}, None
    for variant in variants:
        _configure(variant)
        model, opts = bench.build_geco(a.size)
        if step_gflop is None:  # as run.py's flops_section (the variants differ in no counted layer)
            g = forward_flops(model.generator, (a.size, a.size, 1))
            c = forward_flops(model.classifier, (a.size, a.size, 1))
            factor = 1.0 + (opts["pool_fraction"] if opts["pool_size"] else 0.0)
            step_gflop = geco_step_flops(g, c, opts["critic_steps"], 0, factor)["step"] / 1e9
        step = tf.function(model.train_step, jit_compile=bool(a.xla))
        steps[variant] = lambda step=step: float(step((x, y))["gen_loss"])
        steps[variant]()  # trace / compile
        steps[variant]()  # first real step
        bench.log(f"built and compiled {variant}")

    wall = {v: [] for v in variants}
    cpu = {v: [] for v in variants}
    conv_rates: list[float] = []
    start = time.perf_counter()
    while time.perf_counter() - start < a.seconds or len(wall[variants[0]]) < 3:
        for variant in variants:
            c, t = time.process_time(), time.perf_counter()
            steps[variant]()
            wall[variant].append(time.perf_counter() - t)
            cpu[variant].append(time.process_time() - c)
            t, n = time.perf_counter(), 0
            while time.perf_counter() - t < min(wall[variant][-1], 3.0):
                conv().numpy()
                n += 1
            conv_rates.append(n * conv_gflop / (time.perf_counter() - t))
    conv_median = statistics.median(conv_rates)
    ref = variants[0]
    out = {
        "size": a.size,
        "batch": a.batch,
        "xla": bool(a.xla),
        "step_gflop_per_image": step_gflop,
        "rounds": len(wall[ref]),
        "interleaved_conv_gflops_median": conv_median,
        "interleaved_conv_gflops_range": [min(conv_rates), max(conv_rates)],
        "variants": {},
    }
    print(
        f"{a.size} px batch {a.batch} XLA {'on' if a.xla else 'off'}: {len(wall[ref])} rounds; interleaved conv "
        f"median {conv_median:.0f} GFLOP/s (range {min(conv_rates):.0f}-{max(conv_rates):.0f})"
    )
    for variant in variants:
        median = statistics.median(wall[variant])
        gflops = a.batch * step_gflop / median
        speedup = statistics.median(r / v for r, v in zip(wall[ref], wall[variant]))
        cpu_median = statistics.median(cpu[variant])
        out["variants"][variant] = {
            "step_seconds_median": median,
            "images_per_s": a.batch / median,
            "gflops": gflops,
            "fraction_of_interleaved_conv": gflops / conv_median,
            "speedup_vs_first": speedup,
            "cpu_seconds_per_step_median": cpu_median,
        }
        print(
            f"  {variant:14s} step {median:.2f} s  {a.batch / median:.2f} img/s  {gflops:.0f} GFLOP/s "
            f"({100 * gflops / conv_median:.0f}% of the interleaved conv)  speedup vs {ref} {speedup:.2f}x  "
            f"CPU {cpu_median:.2f} s/step"
        )
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
