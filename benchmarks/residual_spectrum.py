"""Where in the spectrum does the scanner signature survive a GECO generator?

The report's Fourier audit concatenates two feature sets; this script fits the same linear probe
(:func:`geco_tf.evaluation.probes.fit_predict_linear`) on each alone, on original and on generated
slices (train split -> test split), so one can tell an *isotropic* residue (radial log-power
profile: apodisation, noise colour) from an *anisotropic* one (coarse 2-D spectrum: an acquired
matrix or a partial-Fourier side along one axis). Usage::

    python benchmarks/residual_spectrum.py --data /tmp/data --run /tmp/acc/manufacturer

Prints one line per (feature set, images) with the test accuracy (chance 1 / classes).
"""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--run", required=True, help="a `geco-tf train` run directory")
    parser.add_argument("--target", default=None, help="default: the run's target")
    args = parser.parse_args(argv)

    import json
    from pathlib import Path

    import numpy as np

    from geco_tf.data.dataset import open_dataset
    from geco_tf.data.pipeline import load_split_arrays
    from geco_tf.evaluation.audit import generate
    from geco_tf.evaluation.probes import FOURIER_BINS, block_spectrum, fit_predict_linear, radial_spectrum
    from geco_tf.export.load import load_generator

    target = args.target or json.loads((Path(args.run) / "config.json").read_text())["target"]
    data = open_dataset(args.data)
    x_train, y_train, _ = load_split_arrays(data, "train", target)
    x_test, y_test, _ = load_split_arrays(data, "test", target)
    generator = load_generator(args.run)
    images = {"X": (x_train, x_test), "G(X)": (generate(generator, x_train), generate(generator, x_test))}
    features = {
        f"coarse 2-D spectrum ({FOURIER_BINS // 4}x{FOURIER_BINS // 4} blocks)": lambda a: block_spectrum(a, FOURIER_BINS // 4),
        f"radial log power ({FOURIER_BINS} rings)": lambda a: radial_spectrum(a, FOURIER_BINS),
    }
    print(f"{target}: {len(set(y_test.tolist()))} classes, chance {1 / (int(y_train.max()) + 1):.3f}, n_test {len(y_test)}")
    for name, feature in features.items():
        for label, (train, test) in images.items():
            acc = np.mean(fit_predict_linear(feature(train), y_train, feature(test)) == y_test)
            print(f"{name:40s} {label:5s} test accuracy {acc:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
