"""What removing the scanner signature costs in fidelity, without any learning.

Runs hand-made harmonisers (``geco_tf.evaluation.harmonisation``) over a dataset and measures,
on the test split, the fidelity to the originals (SSIM, PSNR) and what a fresh classifier still
finds: the converged DDS-style audit (``geco_tf.evaluation.audit``) and the Fourier linear probe.
Optionally a GECO run's generator is measured the same way, so it sits on the same frontier.

Why: it tells whether the acceptance bar (audit <= 0.40 at SSIM >= 0.97) is within reach of
simple filtering on this data, i.e. how much a learnt generator must add to it.

    python experiments/frontier.py --data DATA [--run RUN] [--kinds identity,kspace,blur]

About 5-10 minutes per harmoniser on 2 CPU cores (the audit trains until it stops improving).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def measure(name: str, transform, data, target: str, arrays: dict) -> dict:
    """SSIM, PSNR, converged DDS audit and Fourier probe of ``transform`` on ``data``."""
    from geco_tf.evaluation.audit import audit_accuracy
    from geco_tf.evaluation.probes import fit_predict_fourier
    from geco_tf.metrics import fidelity

    class _Generator:  # the audit calls generator(batch, training=False)
        def __call__(self, images, training=False):
            return transform(np.asarray(images))

    start = time.monotonic()
    (x_train, y_train), (x_test, y_test) = arrays["train"], arrays["test"]
    g_test = transform(x_test)
    fid = fidelity(x_test, g_test)
    fourier = float(np.mean(fit_predict_fourier(transform(x_train), y_train, g_test) == y_test))
    audit = audit_accuracy(_Generator(), data, target)
    row = {
        "harmoniser": name,
        "ssim": float(np.mean(fid["ssim"])),
        "psnr": float(np.mean(fid["psnr"])),
        "audit_dds": audit["accuracy"],
        "audit_dds_epochs_run": audit["epochs_run"],
        "audit_fourier": fourier,
        "seconds": time.monotonic() - start,
    }
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="dataset directory (geco-tf synth / preprocess)")
    parser.add_argument("--target", default="manufacturer")
    parser.add_argument("--run", help="also measure this geco-tf train run's generator.keras")
    parser.add_argument("--kinds", default="identity,kspace,blur", help="harmonisers (BASELINE_KINDS)")
    parser.add_argument("--sigmas", default="0.5", help="blur sigmas, comma-separated")
    parser.add_argument("--out", help="write the rows as JSON here")
    args = parser.parse_args()

    import keras

    import geco_tf.models  # noqa: F401 - registers the generator classes for loading
    from geco_tf.data.dataset import open_dataset
    from geco_tf.data.pipeline import load_split_arrays
    from geco_tf.evaluation.harmonisation import default_baselines
    from geco_tf.training.generate import generate

    data = open_dataset(args.data)
    arrays = {split: load_split_arrays(data, split, args.target)[:2] for split in ("train", "test")}
    sigmas = [float(s) for s in args.sigmas.split(",") if s]
    rows = []
    for harmoniser in default_baselines(sigmas=sigmas, kinds=args.kinds.split(",")):
        harmoniser.fit(arrays["train"][0])
        rows.append(measure(harmoniser.label, harmoniser, data, args.target, arrays))
    if args.run:
        generator = keras.saving.load_model(f"{args.run}/generator.keras", compile=False)
        rows.append(measure(f"GECO ({args.run})", lambda x: generate(generator, x), data, args.target, arrays))
    print("\n| harmoniser | SSIM | PSNR dB | DDS audit (converged) | Fourier probe |\n| --- | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['harmoniser']} | {r['ssim']:.4f} | {r['psnr']:.2f} | {r['audit_dds']:.3f} | {r['audit_fourier']:.3f} |")
    if args.out:
        from geco_tf.io import write_json_atomic

        write_json_atomic(args.out, rows)


if __name__ == "__main__":
    main()
