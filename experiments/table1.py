"""Table 1 of the GECO paper, reproduced on a dataset directory (default: the built-in data).

Six rows, one ``train_geco`` run each on the ``paper`` preset (section 3.1 as written: two
players, beta 0.02 at 512 px scaled by area, Adam 5e-4, 15 epochs, nothing added; ``--preset
default`` runs the rows on this project's defaults instead) except what the row changes:

    core                      U-Net generator (the default run)
    residual                  X + alpha * G(X)
    multi-residual            three residual blocks
    three-player (1 iter)     + discriminator, 1 classifier step per generator step
    three-player (2 iter)     + discriminator, 2 classifier steps
    three-player, no MSE      + discriminator, pixel term dropped

Each row reports the test split's SSIM, PSNR and co-trained accuracy ("Acc." in the paper) of
its best validation epoch, and optionally (``--audit``) the accuracy of a classifier trained
afresh on the row's generated images. Usage::

    geco-tf synth --out /tmp/geco_data
    python experiments/table1.py --data /tmp/geco_data --out /tmp/table1 [--time-budget 14] [--audit]

Rows that already have ``metrics.json`` in ``OUT/<row>`` are read, not retrained, so the
script can be re-run after an interruption. Writes ``OUT/table1.md`` and prints it.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

ROWS: dict[str, dict] = {
    "Core GAN": {},
    "Residual GAN": {"generator": "residual"},
    "Multi-Residual GAN": {"generator": "multi-residual"},
    "Three Player GAN (1 iter)": {"three_player": True, "critic_steps": 1},
    "Three Player GAN (2 iter)": {"three_player": True, "critic_steps": 2},
    "Three Player GAN, no MSE": {"three_player": True, "no_mse": True},
}
PAPER = {
    "Core GAN": (0.986, 37.75, 0.256),
    "Residual GAN": (0.918, 18.71, 0.442),
    "Multi-Residual GAN": (0.933, 19.93, 0.514),
    "Three Player GAN (1 iter)": (0.982, 32.58, 0.396),
    "Three Player GAN (2 iter)": (0.981, 33.27, 0.378),
    "Three Player GAN, no MSE": (0.756, 17.09, 0.552),
}


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-").replace("--", "-")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--target", default="manufacturer")
    parser.add_argument("--preset", default="paper", help="training preset the rows start from (paper, default)")
    parser.add_argument("--epochs", type=int, default=None, help="default: the preset's (15)")
    parser.add_argument("--time-budget", type=float, default=None, help="minutes per row (default: no limit)")
    parser.add_argument("--rows", nargs="*", default=list(ROWS), help="subset of row names")
    parser.add_argument("--audit", action="store_true", help="also train a fresh classifier per row")
    parser.add_argument("--extra", default="{}", help="JSON of TrainConfig fields applied to every row")
    args = parser.parse_args(argv)

    from geco_tf.evaluation.audit import audit_accuracy
    from geco_tf.training.config import preset
    from geco_tf.training.train import train_geco

    base = preset(args.preset)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for name in args.rows:
        run = out / slug(name)
        metrics_file = run / "metrics.json"
        if metrics_file.exists():
            metrics = json.loads(metrics_file.read_text())
        else:
            options = {**json.loads(args.extra), **ROWS[name]}
            if args.epochs:
                options["epochs"] = args.epochs
            if args.time_budget is not None:
                options["time_budget_minutes"] = args.time_budget
            t0 = time.monotonic()
            resume = (run / "config.json").exists()
            metrics = train_geco(args.data, run, target=args.target, config=None if resume else base, resume=resume,
                                 progress=True, **options)
            metrics["wall_seconds"] = time.monotonic() - t0
        if args.audit and "accuracy_audit" not in metrics:
            metrics["accuracy_audit"] = audit_accuracy(run / "generator.keras", args.data, args.target)["accuracy"]
            metrics_file.write_text(json.dumps(metrics, indent=2))
        results[name] = metrics
        print(f"{name}: {json.dumps({k: metrics.get(k) for k in ('ssim', 'psnr', 'accuracy_cotrained')})}", flush=True)

    audit = args.audit
    lines = [
        "| Experiment | SSIM | PSNR | Acc. | " + ("Audit acc. | " if audit else "") + "best / trained epochs | paper SSIM / PSNR / Acc. |",
        "|---|---|---|---|" + ("---|" if audit else "") + "---|---|",
    ]
    for name, m in results.items():
        paper = "{:.3f} / {:.2f} / {:.3f}".format(*PAPER[name])
        audit_cell = f" {m.get('accuracy_audit', float('nan')):.3f} |" if audit else ""
        lines.append(
            f"| {name} | {m['ssim']:.3f} | {m['psnr']:.2f} | {m['accuracy_cotrained']:.3f} |{audit_cell} "
            f"{m['best_epoch']} / {m['epochs_trained']} | {paper} |"
        )
    table = "\n".join(lines)
    (out / "table1.md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
