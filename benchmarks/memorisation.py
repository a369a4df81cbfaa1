"""Does a run's co-trained classifier know the training subjects? Its accuracy on G(x) of the
training, validation and test splits (the run's kept generator and classifier, inference mode,
the batch-norm statistics the run saved after precise BN).

    python benchmarks/memorisation.py --data /tmp/data --run RUN      # ~20 s at 64 px

Every training subject was scanned on one scanner, so a classifier right far more often on
G(train) than on G(val) has learnt training subjects' anatomy, which the generator must keep,
besides the scanner signature. With ``--classifier-holdout`` the training slices are also split
into those the classifiers learnt from and the held-out ones.
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
    args = parser.parse_args()

    import keras
    import numpy as np

    import geco_tf.models  # noqa: F401 - registers the layers for loading
    from geco_tf.data.dataset import open_dataset
    from geco_tf.data.pipeline import make_dataset
    from geco_tf.training.holdout import holdout_slice_ids

    data = open_dataset(args.data)
    for run in map(Path, args.run):
        config = json.loads((run / "config.json").read_text())
        target = config["target"]
        generator = keras.saving.load_model(run / "generator.keras", compile=False)
        classifier = keras.saving.load_model(run / "classifier.keras", compile=False)
        fraction = float(config["options"].get("classifier_holdout", 0.0) or 0.0)
        held = set(holdout_slice_ids(data, target, fraction, int(config["options"]["seed"])).tolist())
        parts: dict[str, list[bool]] = {}
        for split in ("train", "val", "test"):
            for x, y, extra in make_dataset(data, split, target, 64, with_labels=("slice_id",), cache=False):
                right = np.argmax(classifier(generator(x, training=False), training=False), -1) == y.numpy()
                for ok, sid in zip(right, extra["slice_id"].numpy()):
                    name = split if split != "train" or not held else ("train, held out" if sid in held else "train, learnt")
                    parts.setdefault(name, []).append(bool(ok))
        summary = "  ".join(f"{name} {np.mean(v):.3f} (n={len(v)})" for name, v in parts.items())
        print(f"{run}: co-trained accuracy on G(x): {summary}")


if __name__ == "__main__":
    main()
