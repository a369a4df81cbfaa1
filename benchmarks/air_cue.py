"""How much of what a run's co-trained classifier reads lies in the air around the head?

On the kept generator's test output G(x) (inference mode, the batch-norm statistics the run
saved), it prints the co-trained classifier's accuracy on G(x); with the air
(:func:`geco_tf.models.background.air_mask` of the input) set to black; with the air taken from
another, random test slice (the head alone carries what is left); with the head taken from another
slice (the air alone); and the share of the classifier's input gradient (of its log-likelihood of
the true class) that lies in the air, beside the air's share of the pixels; and the test SSIM of
G(x) as it is and with the air black.

    python benchmarks/air_cue.py --data /tmp/data --run RUN      # ~20 s at 64 px

Why: in the air a U-Net's edit is damped ~50x by tanh's slope at -1, so a classifier that reads
the background noise keeps finding it whatever the game does; ``--zero-background`` is the answer
that measurement led to (``docs/results.md``).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--run", required=True, action="append", help="run directory (repeatable)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random pairing of slices")
    args = parser.parse_args()

    import keras
    import numpy as np
    import tensorflow as tf

    import geco_tf.models  # noqa: F401 - registers the layers for loading
    from geco_tf.data.dataset import open_dataset
    from geco_tf.data.pipeline import load_split_arrays
    from geco_tf.evaluation.audit import generate
    from geco_tf.metrics import fidelity
    from geco_tf.models.background import air_mask

    data = open_dataset(args.data)
    for run in map(Path, args.run):
        target = json.loads((run / "config.json").read_text())["target"]
        x, y = load_split_arrays(data, "test", target)[:2]
        generator = keras.saving.load_model(run / "generator.keras", compile=False)
        classifier = keras.saving.load_model(run / "classifier.keras", compile=False)
        gx = generate(generator, x)
        air = air_mask(tf.constant(x)).numpy()
        other = np.random.default_rng(args.seed).permutation(len(x))

        def accuracy(images: np.ndarray, classifier=classifier, y=y) -> float:
            return float(np.mean(np.argmax(classifier.predict(images, batch_size=64, verbose=0), -1) == y))

        images = tf.constant(gx)
        with tf.GradientTape() as tape:
            tape.watch(images)
            p = classifier(images, training=False)
            log_likelihood = tf.reduce_sum(tf.math.log(tf.gather(p, y, batch_dims=1) + 1e-8))
        gradient = np.abs(tape.gradient(log_likelihood, images).numpy())
        black = gx * (1 - air) - air
        as_is = float(np.mean(np.argmax(p.numpy(), -1) == y))
        print(
            f"{run}: co-trained accuracy on G(test) {as_is:.3f}  air black {accuracy(black):.3f}  "
            f"air from another slice {accuracy(gx * (1 - air) + air * gx[other]):.3f}  "
            f"head from another slice {accuracy(gx * air + (1 - air) * gx[other]):.3f}  "
            f"(n={len(y)}, chance {1 / p.shape[-1]:.2f})\n"
            f"{run}: input gradient in the air {(gradient * air).sum() / gradient.sum():.3f}  "
            f"air's share of the pixels {air.mean():.3f}  test SSIM as it is {np.mean(fidelity(x, gx)['ssim']):.4f}, "
            f"with the air black {np.mean(fidelity(x, black)['ssim']):.4f}"
        )

if __name__ == "__main__":
    main()
