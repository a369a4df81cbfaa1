"""A fresh Fourier probe for every epoch of a GECO run: does a new model still find the target?

For each epoch's checkpoint, the generator's and the co-trained classifier's weights are restored;
the Fourier-magnitude probe of the report (``geco_tf.evaluation.probes``) is fitted on G(train)
and scored on G(val) and G(test), and the co-trained classifier is scored on G(test).
The co-trained classifier's validation accuracy (``history.csv``) can be briefly low while the
signature is intact; this shows which epochs a fresh model would pass.

    python benchmarks/epoch_probe.py --data DATA --run RUN      # ~20 s per epoch on 2 cores
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def restore_generator(generator, run_dir: str | Path, epoch: int, classifier=None):
    """Load epoch ``epoch``'s generator weights (and, if given, the co-trained classifier's)
    from ``RUN/checkpoints``; returns ``generator``. Raises ``FileNotFoundError`` naming the run
    when it has no checkpoint of that epoch."""
    import tensorflow as tf

    from geco_tf.training.run import RunDir, checkpoint_path

    path = checkpoint_path(RunDir(run_dir), epoch)
    if not Path(path + ".index").is_file():
        raise FileNotFoundError(f"{run_dir}: no checkpoint of epoch {epoch}")
    parts = {"generator_weights": list(generator.weights)}
    if classifier is not None:
        parts["classifier_weights"] = list(classifier.weights)
    tf.train.Checkpoint(**parts).read(path).expect_partial()
    return generator


def epoch_probe(data_dir: str, run_dir: str, epochs: list[int] | None = None) -> list[dict]:
    """Per epoch (default: every checkpoint): ``{"epoch", "val", "test"}`` accuracies of the
    Fourier probe fitted on that epoch's G(train), and ``cotrained``: that epoch's co-trained
    classifier on G(test)."""
    import keras

    import geco_tf.models  # noqa: F401 - registers the Keras classes
    from geco_tf.data.dataset import open_dataset
    from geco_tf.data.pipeline import load_split_arrays
    from geco_tf.evaluation.audit import generate
    from geco_tf.evaluation.probes import fit_predict_linear, fourier_features
    from geco_tf.export.load import load_generator
    from geco_tf.training.run import RunDir

    run = Path(run_dir)
    target = RunDir(run).read_config()["target"]
    data = open_dataset(data_dir)
    splits = {s: load_split_arrays(data, s, target)[:2] for s in ("train", "val", "test")}
    generator = load_generator(run)
    classifier = keras.models.load_model(run / "classifier.keras", compile=False)
    if epochs is None:
        epochs = sorted(int(p.stem.split("-")[1]) for p in (run / "checkpoints").glob("ckpt-*.index"))
    rows = []
    for epoch in epochs:
        restore_generator(generator, run, epoch, classifier)
        generated = {s: generate(generator, x) for s, (x, _) in splits.items()}
        features = {s: fourier_features(g) for s, g in generated.items()}
        # one fit, scored on validation and test together
        held_out = fit_predict_linear(
            features["train"], splits["train"][1], np.concatenate([features["val"], features["test"]])
        )
        n_val = len(features["val"])
        predicted = np.argmax(classifier.predict(generated["test"], verbose=0), axis=1)
        rows.append({
            "epoch": epoch,
            "val": float(np.mean(held_out[:n_val] == splits["val"][1])),
            "test": float(np.mean(held_out[n_val:] == splits["test"][1])),
            "cotrained": float(np.mean(predicted == splits["test"][1])),
        })
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--run", required=True, help="a `geco-tf train` run directory (with checkpoints/)")
    parser.add_argument("--epochs", type=int, nargs="*", help="default: every checkpoint")
    args = parser.parse_args(argv)
    for row in epoch_probe(args.data, args.run, args.epochs):
        print(
            f"epoch {row['epoch']:3d}: Fourier probe val {row['val']:.3f} test {row['test']:.3f}; "
            f"co-trained classifier test {row['cotrained']:.3f}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
