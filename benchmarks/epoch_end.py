"""Time the end of a GECO epoch: the separate passes of G (precise BN per classifier, validation,
fresh probe) against ``validate_epoch``'s shared ones, on a model built as ``geco-tf train``
builds it (untrained weights: the cost does not depend on them).

    python benchmarks/epoch_end.py --data /tmp/data --repeats 3     # ~2 min on 2 cores

Alternates the two ways ``--repeats`` times (after one untimed call of each) and prints each
time and the medians, so a shared machine's slow spells hit both.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--target", default="manufacturer")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import math

    import tensorflow as tf

    from geco_tf.data.dataset import open_dataset
    from geco_tf.data.pipeline import make_dataset
    from geco_tf.training.batch_norm import batch_norm_layers, recalibrate_batch_norm
    from geco_tf.training.fresh_probe import fresh_probe_accuracy
    from geco_tf.training.train import DEFAULTS, _build, resolve_data_options, resolve_options
    from geco_tf.training.validation import RECALIBRATION_IMAGES, predict_split, validate_epoch

    data = open_dataset(args.data)
    opts = resolve_data_options(resolve_options(dict(DEFAULTS), data.image_size), data, args.target)
    model = _build(opts, data.classes(args.target), data.image_size, tf.distribute.get_strategy())

    def separate() -> None:
        """What each epoch did before validate_epoch: G once per measurement."""
        ds = make_dataset(data, "train", args.target, 64, shuffle=True, seed=0, cache=False)
        ds = ds.take(math.ceil(RECALIBRATION_IMAGES / 64))
        generate = tf.function(lambda x: model.output_generator(x, training=False))
        for network in (model.classifier, model.spectral_classifier):
            recalibrate_batch_norm(network, batch_norm_layers(network), ((generate(x), y) for x, y in ds))
        predict_split(model, data, "val", args.target)
        fresh_probe_accuracy(model.output_generator, data, args.target)

    def shared() -> None:
        validate_epoch(model, data, args.target, "fourier")

    ways = {"separate passes": separate, "validate_epoch": shared}
    times: dict[str, list[float]] = {name: [] for name in ways}
    for fn in ways.values():
        fn()  # untimed: traces, first file reads
    for _ in range(args.repeats):
        for name, fn in ways.items():
            t0 = time.monotonic()
            fn()
            times[name].append(time.monotonic() - t0)
    n = data.count("train", args.target), data.count("val", args.target)
    print(f"end of an epoch, {args.target}, {n[0]} training / {n[1]} validation slices of {data.image_size} px:")
    for name, ts in times.items():
        print(f"  {name:16s} median {statistics.median(ts):5.1f} s   ({', '.join(f'{t:.1f}' for t in ts)})")


if __name__ == "__main__":
    main()
