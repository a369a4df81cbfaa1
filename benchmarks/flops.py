"""FLOPs per image, counted from the layers a model actually calls.

Why count from the layers: the fraction-of-peak figure in ``benchmarks/run.py`` is only as
honest as its numerator. Counting the multiply-adds of every convolution, transposed convolution
and dense layer the model executes (with the shapes it executes them at) gives a number that is
independent of the backend, XLA or oneDNN, so two runs on different machines are comparable.

Convention (also in ``benchmarks/README.md``):

* one multiply-add = 2 FLOPs; biases, activations, normalisation, pooling, padding and losses are
  not counted (they are memory-bound and small next to the convolutions: a few percent);
* ``Conv2D``: ``2 * Kh * Kw * Cin/groups * Cout * Hout * Wout``;
* ``Conv2DTranspose``: ``2 * Kh * Kw * Cin * Cout * Hin * Win`` (every input pixel scatters a
  ``Kh x Kw x Cout`` patch; for stride = kernel, as in the U-Net, that equals the conv formula);
* ``Dense``: ``2 * Din * Dout`` per row;
* backward of a net = 2x its forward (one pass for the input gradient, one for the weight
  gradient); a net that is only differentiated *through* (not updated) costs 1x forward more.

The GECO step (:func:`geco_step_flops`) is one classifier update on generated images plus one
generator update through the classifier; see that function for the exact sum.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import keras
import numpy as np
from keras import layers


@dataclass(frozen=True)
class LayerFlops:
    """FLOPs of one executed layer call (per image)."""

    name: str
    kind: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    flops: int


def conv2d_flops(kernel: Sequence[int], cin: int, cout: int, out_hw: Sequence[int], groups: int = 1) -> int:
    """``2 * Kh * Kw * Cin/groups * Cout * Hout * Wout`` (multiply-adds x 2, no bias)."""
    return 2 * int(kernel[0]) * int(kernel[1]) * (int(cin) // int(groups)) * int(cout) * int(out_hw[0]) * int(out_hw[1])


def conv2d_transpose_flops(kernel: Sequence[int], cin: int, cout: int, in_hw: Sequence[int]) -> int:
    """``2 * Kh * Kw * Cin * Cout * Hin * Win``: each input pixel scatters one kernel patch."""
    return 2 * int(kernel[0]) * int(kernel[1]) * int(cin) * int(cout) * int(in_hw[0]) * int(in_hw[1])


def dense_flops(din: int, dout: int, rows: int = 1) -> int:
    """``2 * Din * Dout`` per row (rows > 1 when Dense is applied to a sequence or map)."""
    return 2 * int(din) * int(dout) * int(rows)


def _layer_flops(layer: layers.Layer, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> int:
    """FLOPs for one image of a layer call, given the batch-1 input and output shapes."""
    if isinstance(layer, layers.Conv2DTranspose):
        if layer.data_format == "channels_first":
            cin, hw = in_shape[1], in_shape[2:4]
        else:
            cin, hw = in_shape[-1], in_shape[1:3]
        return conv2d_transpose_flops(layer.kernel_size, cin, layer.filters, hw)
    if isinstance(layer, layers.Conv2D):
        if layer.data_format == "channels_first":
            cin, hw = in_shape[1], out_shape[2:4]
        else:
            cin, hw = in_shape[-1], out_shape[1:3]
        return conv2d_flops(layer.kernel_size, cin, layer.filters, hw, getattr(layer, "groups", 1))
    if isinstance(layer, layers.Dense):
        rows = int(np.prod(in_shape[1:-1])) if len(in_shape) > 2 else 1
        return dense_flops(in_shape[-1], layer.units, rows)
    return 0


COUNTED = (layers.Conv2D, layers.Conv2DTranspose, layers.Dense)


def layer_flops(model: keras.Model, input_shape: Sequence[int], call: Callable | None = None) -> list[LayerFlops]:
    """Every counted layer call of ``model`` on one image of ``input_shape`` (H, W, C).

    Works for subclassed models: the model is built with one call, then the ``call`` of each
    counted leaf layer is wrapped to record its real input and output shapes during a second
    call, and unwrapped again. ``call`` (default ``model``) lets a caller run something else,
    e.g. ``lambda x: classifier(generator(x))``, with all of ``model``'s layers hooked.
    """
    import tensorflow as tf

    x = tf.zeros([1, *input_shape], dtype="float32")
    run = call or (lambda t: model(t, training=False))
    run(x)  # build: the first call may trace symbolically and would double-count
    records: list[LayerFlops] = []
    hooked: list[layers.Layer] = []
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if not isinstance(layer, COUNTED):
            continue

        def wrapped(*args, _layer=layer, _orig=layer.call, **kwargs):
            out = _orig(*args, **kwargs)
            in_shape = tuple(int(d) for d in args[0].shape)
            out_shape = tuple(int(d) for d in out.shape)
            records.append(
                LayerFlops(_layer.name, type(_layer).__name__, in_shape, out_shape, _layer_flops(_layer, in_shape, out_shape))
            )
            return out

        layer.call = wrapped
        hooked.append(layer)
    try:
        run(x)
    finally:
        for layer in hooked:
            del layer.call  # drop the instance attribute: the class method is back
    return records


def forward_flops(model: keras.Model, input_shape: Sequence[int]) -> int:
    """Forward FLOPs per image of ``model`` at ``input_shape`` (H, W, C)."""
    return sum(r.flops for r in layer_flops(model, input_shape))


def geco_step_flops(
    generator_forward: int,
    classifier_forward: int,
    classifier_steps: int = 1,
    discriminator_forward: int = 0,
    classifier_batch_factor: float = 1.0,
) -> dict[str, int]:
    """FLOPs per image of one full GECO training step (classifier update + generator update).

    * classifier update: ``G`` forward once (no gradient), then ``classifier_steps`` times ``C``
      forward and backward = ``F_G + k * 3 F_C * m``, where ``m = classifier_batch_factor`` is the
      classifier's batch relative to the step's (1.5 with a replay pool at fraction 0.5);
    * generator update: ``G`` forward + backward (``3 F_G``), ``C`` forward + input-gradient only
      (``2 F_C``: ``C`` is not updated here, so no weight gradient);
    * three-player variant: the discriminator update sees X and G(X) (``2 x 3 F_D``) and the
      generator update adds ``D`` forward + input gradient (``2 F_D``).

    This is exactly what :meth:`geco_tf.training.geco.GECO.train_step` executes.
    """
    g, c, d = int(generator_forward), int(classifier_forward), int(discriminator_forward)
    classifier_update = g + int(round(classifier_steps * 3 * c * classifier_batch_factor))
    generator_update = 3 * g + 2 * c + 2 * d
    discriminator_update = 6 * d
    return {
        "generator_forward": g,
        "classifier_forward": c,
        "discriminator_forward": d,
        "classifier_update": classifier_update,
        "generator_update": generator_update,
        "discriminator_update": discriminator_update,
        "step": classifier_update + generator_update + discriminator_update,
    }


def describe(records: Sequence[LayerFlops]) -> str:
    """A per-layer table (for the README and for checking a count by eye)."""
    total = sum(r.flops for r in records) or 1
    lines = [f"{'layer':<14}{'kind':<17}{'input':<22}{'output':<22}{'MFLOP':>10}{'share':>8}"]
    for r in records:
        lines.append(
            f"{r.name:<14}{r.kind:<17}{str(r.input_shape[1:]):<22}{str(r.output_shape[1:]):<22}"
            f"{r.flops / 1e6:>10.1f}{100 * r.flops / total:>7.1f}%"
        )
    lines.append(f"{'total':<75}{total / 1e6:>10.1f}")
    return "\n".join(lines)


def self_check() -> list[str]:
    """The counter against counts done by hand (``--self-check``; the test suite runs it in a
    subprocess): a functional model with a valid, a transposed, a grouped convolution and a dense
    layer; a subclassed U-Net whose every call must be counted once (and the hooks removed
    afterwards); and the step convention. Returns the mismatches (empty = all agree)."""
    from geco_tf.models import UNetGenerator

    problems = []

    def expect(what: str, got, want) -> None:
        if got != want:
            problems.append(f"{what}: counted {got}, by hand {want}")

    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(4, 3, padding="valid")(inputs)  # -> 6x6x4
    x = layers.Conv2DTranspose(2, 2, strides=2)(x)  # -> 12x12x2
    x = layers.Conv2D(2, 5, padding="same", groups=2)(x)  # -> 12x12x2, grouped
    outputs = layers.Dense(5)(layers.Flatten()(x))  # 288 -> 5
    tiny = keras.Model(inputs, outputs)
    hand = [2 * 3 * 3 * 3 * 4 * 6 * 6, 2 * 2 * 2 * 4 * 2 * 6 * 6, 2 * 5 * 5 * (2 // 2) * 2 * 12 * 12, 2 * 288 * 5]
    expect("functional model, per layer", [r.flops for r in layer_flops(tiny, (8, 8, 3))], hand)
    expect("functional model, total", forward_flops(tiny, (8, 8, 3)), 27360)

    gen = UNetGenerator(depth=1, base_filters=2, norm=None)
    # down0: 1->2, 2->2 at 8x8; bottleneck 2->4, 4->4 at 4x4; up0 4->2 (2x2, stride 2) from 4x4;
    # upblock0: 4->2, 2->2 at 8x8; head 2->1 (1x1) at 8x8.
    hand = [2 * 9 * 1 * 2 * 64, 2 * 9 * 2 * 2 * 64, 2 * 9 * 2 * 4 * 16, 2 * 9 * 4 * 4 * 16, 2 * 4 * 4 * 2 * 16,
            2 * 9 * 4 * 2 * 64, 2 * 9 * 2 * 2 * 64, 2 * 1 * 2 * 1 * 64]
    expect("U-Net, per layer", [r.flops for r in layer_flops(gen, (8, 8, 1))], hand)
    expect("U-Net, counted again", forward_flops(gen, (8, 8, 1)), sum(hand))

    step = geco_step_flops(10, 100, classifier_steps=2, classifier_batch_factor=1.5)
    expect("classifier update", step["classifier_update"], 10 + 2 * 3 * 100 * 1.5)
    expect("generator update", step["generator_update"], 3 * 10 + 2 * 100)
    expect("three-player step", geco_step_flops(10, 100, discriminator_forward=7)["step"], (10 + 300) + (30 + 200 + 14) + 42)
    return problems


if __name__ == "__main__":
    import argparse
    import sys

    from geco_tf.models import UNetGenerator, build_classifier

    parser = argparse.ArgumentParser(description="Per-layer FLOPs of the default GECO nets.")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--classifier", default="dds")
    parser.add_argument("--self-check", action="store_true", help="compare the counter with hand counts and exit")
    args = parser.parse_args()
    if args.self_check:
        problems = self_check()
        print("\n".join(problems) or "flops: every count agrees with the hand count")
        sys.exit(1 if problems else 0)
    gen = UNetGenerator()
    cls = build_classifier(args.classifier, 4, args.size)
    for net in (gen, cls):
        print(f"\n{net.name} at {args.size}x{args.size}")
        print(describe(layer_flops(net, (args.size, args.size, 1))))
