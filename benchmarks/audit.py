"""The two fresh audits of ``geco-tf evaluate`` on one run, without the rest of the report.

A run's co-trained accuracy says how well its generator fooled its own sparring partners; this
script asks the question a reviewer asks, in ~6 minutes instead of the report's ~25: train a new
DeepDicomSort-style classifier on G(train) and test it on G(test)
(:func:`geco_tf.evaluation.audit.audit_accuracy`), and fit the linear probe on Fourier-magnitude
features (:func:`geco_tf.evaluation.probes.fit_predict_fourier`). Usage::

    python benchmarks/audit.py --data /tmp/data --run /tmp/exp/E11
    python benchmarks/audit.py --data /tmp/data --run /tmp/exp/E24 --dds-epochs 80   # no early stop
    python benchmarks/audit.py --data /tmp/data --run /tmp/s34/m_default --epoch 12  # another epoch

``--epoch N`` audits the generator of epoch N from the run's checkpoints instead of the kept one
(what another selection rule would have kept). Prints the fidelity of G(test) to the originals,
then one line per audit: test accuracy (chance 1 / classes), its 95% interval and n_test.
"""

from __future__ import annotations

import argparse


def fresh_audits(generator, data, target: str, seed: int = 0, dds_epochs: int | None = None) -> dict:
    """The report's two fresh audits of ``generator`` on the dataset ``data`` (a ``DatasetInfo``):
    ``fourier`` (``stats.accuracy_ci`` of the Fourier-magnitude probe), ``dds``
    (``audit.audit_accuracy``), and the fidelity of G(test) to the originals (mean ``ssim``,
    ``psnr``). ``dds_epochs`` trains the DDS audit that many epochs without an early stop
    (default: the report's 40 with its early stop)."""
    from geco_tf.data.pipeline import load_split_arrays
    from geco_tf.evaluation.audit import DEFAULT_EPOCHS, PATIENCE, audit_accuracy, generate
    from geco_tf.metrics import fidelity
    from geco_tf.evaluation.probes import fit_predict_fourier
    from geco_tf.evaluation.stats import accuracy_ci

    x_train, y_train, _ = load_split_arrays(data, "train", target)
    x_test, y_test, _ = load_split_arrays(data, "test", target)
    g_test = generate(generator, x_test)
    fourier = accuracy_ci(y_test, fit_predict_fourier(generate(generator, x_train), y_train, g_test))
    fid = fidelity(x_test, g_test)
    return {
        "fourier": fourier,
        "dds": audit_accuracy(
            generator, data, target, seed=seed, epochs=dds_epochs or DEFAULT_EPOCHS, patience=dds_epochs or PATIENCE
        ),
        "ssim": float(fid["ssim"].mean()),
        "psnr": float(fid["psnr"].mean()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--run", required=True, help="a `geco-tf train` run directory")
    parser.add_argument("--target", default=None, help="default: the run's target")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--dds-epochs", type=int, default=None, help="train the DDS audit this long, no early stop (default: 40, early stop)"
    )
    parser.add_argument("--epoch", type=int, default=None, help="audit this epoch's generator (default: the kept one)")
    args = parser.parse_args(argv)

    import json
    from pathlib import Path

    from geco_tf.data.dataset import open_dataset
    from geco_tf.export.load import load_generator

    target = args.target or json.loads((Path(args.run) / "config.json").read_text())["target"]
    generator = load_generator(args.run)
    label = args.run
    if args.epoch is not None:
        from epoch_probe import restore_generator  # benchmarks/ is on the path when run as a script

        try:
            generator = restore_generator(generator, args.run, args.epoch)
        except FileNotFoundError as error:
            parser.error(str(error))
        label = f"{args.run} epoch {args.epoch}"
    result = fresh_audits(generator, open_dataset(args.data), target, seed=args.seed, dds_epochs=args.dds_epochs)
    fourier, dds = result["fourier"], result["dds"]
    print(f"{label}: G(test) SSIM {result['ssim']:.4f}  PSNR {result['psnr']:.2f} dB", flush=True)
    low, high = fourier["ci95"]
    print(f"{label}: Fourier audit {fourier['accuracy']:.3f} [{low:.3f}, {high:.3f}] n_test {fourier['n']}", flush=True)
    low, high = dds["ci95"]
    print(
        f"{label}: DDS audit {dds['accuracy']:.3f} [{low:.3f}, {high:.3f}] n_test {dds['n_test']} "
        f"(best epoch {dds['best_epoch']} of {dds['epochs_run']}, chance {dds['chance']:.3f})",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
