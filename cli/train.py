"""``geco-tf train``: GECO adversarial training (paper section 3.1; run layout docs/runs.md)."""

from __future__ import annotations

import click
from geco_tf_cli.common import output_dir, target_option

# Literal copies (checked by a test) so `geco-tf --help` does not import TensorFlow.
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
STRATEGIES = ("auto", "mirrored", "multiworker")
FIDELITIES = ("mse", "ssim", "mse+ssim")
SELECTION_PROBES = ("fourier", "none")
LR_SCHEDULES = ("constant", "cosine")


@click.command(
    "train",
    epilog="""\b
Examples:
  geco-tf train --data data --target manufacturer --out runs/geco
  geco-tf train --data data --target field_strength --out runs/geco-fs
  geco-tf train --data data --out runs/geco --resume            # after a kill: continue
  geco-tf train --data data --out runs/res --generator residual
  geco-tf train --data data --out runs/3p --three-player --critic-steps 1
  geco-tf train --data data --out runs/cnn-only --no-spectral-adversary
  geco-tf train --data data --out runs/ssim --fidelity ssim --ssim-setpoint 0.975
  geco-tf train --data data --out runs/big --precision mixed_float16 --strategy mirrored --jit

\b
Options measured on the built-in data and not better than the defaults there
(kept so the runs in docs/results.md can be repeated; docs/method.md says what
each one found): --edit-space pixel, --linear-filter, --noise-channels,
--background-gain, --zero-background, --classifier-snapshots,
--classifier-holdout, --classifier-shift, --classifier-flip, --lr-schedule
cosine, --generator-ema, --fidelity ssim, --ssim-setpoint.
""",
)
@click.option("--data", "data_dir", required=True, type=click.Path(), help="Dataset directory (from synth or preprocess).")
@target_option
@click.option("--out", "out_dir", required=True, type=click.Path(), help="Run directory to write (docs/runs.md).")
@click.option("--resume", is_flag=True, help="Continue the run in --out after its last finished epoch.")
@click.option("--generator", type=click.Choice(["unet", "residual", "multi-residual"]), default=None, help="Generator. [default: unet]")
@click.option("--classifier", type=click.Choice(["dds", "maxpool"]), default=None, help="Co-trained classifier. [default: dds]")
@click.option(
    "--classifier-padding",
    type=click.Choice(["auto", "valid", "same"]),
    default=None,
    help="Convolution padding of the classifier; auto = 'valid' (DeepDicomSort) when the image is large enough. [default: auto]",
)
@click.option("--base-filters", type=click.IntRange(min=1), default=None, help="Generator width. [default: 16]")
@click.option("--depth", type=click.IntRange(min=1), default=None, help="U-Net levels. [default: 3]")
@click.option(
    "--input-skip/--no-input-skip",
    default=None,
    help="U-Net starts as the identity (input added before its tanh) and learns only the edit. [default: on]",
)
@click.option(
    "--edit-space",
    type=click.Choice(["pixel", "logit"]),
    default=None,
    help="With --input-skip, the units of the U-Net's edit: logit (added before the tanh) or pixel (divided by tanh's slope; see docs/method.md). [default: logit]",
)
@click.option("--linear-filter", type=click.IntRange(min=0), default=None, help="With --input-skip, size k of a learnable k x k filter of the input added to the edit; 0 = none. [default: 0]")
@click.option("--noise-channels", type=click.IntRange(min=0), default=None, help="U-Net only: standard-normal channels drawn on every call and given to the generator beside the image, so it can write noise texture a scanner lacks (0 = deterministic; docs/method.md). [default: 0]")
@click.option(
    "--output-band",
    default=None,
    metavar="auto|off|ROWS,COLS",
    help="U-Net only: low-pass the output to the k-space band every scanner records, so no scanner's extra resolution survives. auto = the band the dataset records (the built-in data's 0.8,0.85; off when unknown), or ROWS,COLS as fractions of Nyquist (docs/method.md). [default: auto]",
)
@click.option(
    "--background-gain/--no-background-gain",
    default=None,
    help="U-Net only: scale the air around the head by a learnt per-slice gain, so the generator can raise or lower the background noise level (docs/method.md). [default: off]",
)
@click.option(
    "--zero-background/--no-zero-background",
    default=None,
    help="U-Net only: set the air around the head (3 px from the anatomy) to black in every output, so no scanner's background noise survives (docs/method.md). [default: off]",
)
@click.option("--fidelity", type=click.Choice(FIDELITIES), default=None, help="Generator's fidelity term: the paper's pixel MSE (weight --beta), 1 - SSIM (weight --ssim-weight), or both. [default: mse]")
@click.option("--beta", type=click.FloatRange(min=0), default=None, help="Weight of the pixel term at 512x512 (the paper used 0.02; see docs/method.md). [default: 0.001]")
@click.option(
    "--beta-scaling",
    type=click.Choice(["area", "none"]),
    default=None,
    help="area: beta * 512^2/(H*W) so the balance holds at any size; none: beta as given. [default: area]",
)
@click.option("--g-lr", type=click.FloatRange(min=0, min_open=True), default=None, help="Generator Adam learning rate. [default: 1e-3]")
@click.option("--c-lr", type=click.FloatRange(min=0, min_open=True), default=None, help="Classifier Adam learning rate. [default: 1e-3]")
@click.option("--d-lr", type=click.FloatRange(min=0, min_open=True), default=None, help="Discriminator learning rate. [default: 5e-4]")
@click.option("--critic-steps", type=click.IntRange(1, 5), default=None, help="Classifier updates per generator update. [default: 2]")
@click.option("--classifier-snapshots", type=click.IntRange(0, 8), default=None, help="The generator must also fool frozen copies of the co-trained classifier from the last K epochs (0 = only the live one; docs/method.md). [default: 0]")
@click.option("--classifier-holdout", type=click.FloatRange(0, 1, max_open=True), default=None, help="Share of training subjects whose slices the co-trained classifiers never learn from; the generator's adversarial terms are computed on those slices only, so it is pushed to remove what generalises across subjects, not what the classifiers memorised (0 = off: every slice plays both roles; docs/method.md). [default: 0]")
@click.option("--classifier-shift", type=click.IntRange(0, 16), default=None, help="Move each image the co-trained classifier learns from by up to this many whole pixels along each axis (reflected edges), so it cannot learn where a training subject's anatomy lies (0 = off; docs/method.md). [default: 0]")
@click.option("--classifier-flip/--no-classifier-flip", default=None, help="Mirror half of the images the co-trained classifier learns from left-right (keeps the built-in manufacturers' signatures; reverses the fat shift, a field-strength cue). [default: off]")
@click.option("--lr-schedule", type=click.Choice(LR_SCHEDULES), default=None, help="Learning rates of all networks: constant, or cosine decay to 0 over --epochs (a run the time budget stops early ends before 0). [default: constant]")
@click.option("--generator-ema", type=click.FloatRange(0, 1, max_open=True), default=None, help="Validate, keep and save an exponential moving average of the generator's weights with this decay per step (0 = the trained generator itself; docs/method.md). [default: 0]")
@click.option("--three-player", is_flag=True, default=None, help="Add the discriminator (real vs generated).")
@click.option(
    "--spectral-adversary/--no-spectral-adversary",
    default=None,
    help="Also play against a classifier of Fourier-magnitude features (docs/method.md). [default: on]",
)
@click.option("--spectral-weight", type=click.FloatRange(min=0), default=None, help="Weight of the spectral adversary's term in the generator loss. [default: 1.0]")
@click.option("--s-lr", type=click.FloatRange(min=0, min_open=True), default=None, help="Spectral adversary's Adam learning rate. [default: 1e-3]")
@click.option("--no-mse", is_flag=True, default=None, help="Drop the pixel term (Table 1's last row).")
@click.option("--label-smoothing", type=click.FloatRange(0, 0.5), default=None, help="Classifier label smoothing. [default: 0.1]")
@click.option(
    "--pool-size",
    type=click.IntRange(min=0),
    default=None,
    help="Replay pool of earlier generated images for the classifier (0 = off). [default: 512]",
)
@click.option("--pool-fraction", type=click.FloatRange(0, 1), default=None, help="Share of each classifier batch drawn from the replay pool. [default: 0.5]")
@click.option("--warmup-steps", type=click.IntRange(min=0), default=None, help="Generator steps with the pixel term only. [default: 100]")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Epochs. [default: 15]")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Global batch size. [default: 32]")
@click.option(
    "--time-budget",
    "time_budget_minutes",
    type=click.FloatRange(min=0),
    default=None,
    help="Minutes of training: no epoch starts that would end after it (0 = no limit). [default: 14]",
)
@click.option("--ssim-target", type=click.FloatRange(0, 1), default=None, help="Validation SSIM an epoch must reach to be chosen as final (0.002 above the acceptance bar of 0.97: test SSIM came out up to 0.0008 below validation; docs/method.md). [default: 0.972]")
@click.option(
    "--selection-probe",
    type=click.Choice(SELECTION_PROBES),
    default=None,
    help="After each epoch, fit this probe afresh on G(train) and score G(val); the best epoch must fool it as well as the co-trained classifiers (fourier: linear model of Fourier magnitudes, a few seconds an epoch; none = co-trained classifiers only; docs/method.md). [default: fourier]",
)
@click.option("--ssim-weight", type=click.FloatRange(min=0), default=None, help="Weight of the 1 - SSIM(X, G(X)) fidelity term (--fidelity ssim or mse+ssim). [default: 20]")
@click.option("--ssim-setpoint", type=click.FloatRange(0, 1, max_open=True), default=None, help="Scale the fidelity term every step to hold the batch SSIM here (0 = fixed weights). [default: 0]")
@click.option("--beta-rate", type=click.FloatRange(min=0), default=None, help="Gain of the --ssim-setpoint controller per step. [default: 0.05]")
@click.option("--precision", type=click.Choice(PRECISIONS), default=None, help="auto = mixed_float16 on a GPU, else float32. [default: auto]")
@click.option("--strategy", type=click.Choice(STRATEGIES), default=None, help="tf.distribute strategy (multiworker reads TF_CONFIG). [default: auto]")
@click.option("--jit", is_flag=True, default=None, help="Compile the train step with XLA.")
@click.option("--seed", type=int, default=None, help="Random seed. [default: 0]")
def command(data_dir: str, target: str, out_dir: str, resume: bool, **options) -> None:
    """Train GECO: a generator that edits slices so that a co-trained classifier cannot tell the
    scanner, while staying close to the original (SSIM, PSNR).

    Writes RUN/config.json, history.csv (every epoch), checkpoints/ (every epoch), logs/
    (TensorBoard), generator.keras, classifier.keras and spectral_classifier.keras (the best
    validation epoch: lowest co-trained accuracy, or --selection-probe's if higher, among epochs
    after the warm-up and after an adversary first showed it can see the target, with SSIM >=
    --ssim-target) and metrics.json (test split). --resume on a finished run trains nothing and
    re-applies this rule. The co-trained accuracy says how well GECO fooled its own
    adversaries; whether a fresh classifier still finds the scanner is for `geco-tf evaluate`.
    """
    # Options default to None (= the library's DEFAULTS) so a resumed run keeps its stored ones.
    output_dir(out_dir, "--out")
    from geco_tf.training.train import train_geco  # heavy: TensorFlow

    options = {k: v for k, v in options.items() if v is not None}
    metrics = train_geco(data_dir, out_dir, target=target, resume=resume, **options)
    click.echo(
        f"GECO {metrics['target']}: best epoch {metrics['best_epoch']} of {metrics['epochs_trained']} "
        f"({metrics['training_seconds'] / 60:.1f} min of training)"
    )
    click.echo(
        f"test: co-trained accuracy {metrics['accuracy_cotrained']:.4f} (chance {metrics['chance']:.2f}, "
        f"n={metrics['n_test']})  SSIM {metrics['ssim']:.4f}  PSNR {metrics['psnr']:.2f} dB"
    )
    if "accuracy_cotrained_spectral" in metrics:
        click.echo(f"test: spectral adversary's accuracy {metrics['accuracy_cotrained_spectral']:.4f}")
    if metrics["adversarial_epochs"] == 0:
        click.echo(
            "warning: every epoch ended inside the generator's warm-up; its co-trained accuracy is that of an "
            "untrained classifier, not a measure of removal: train longer (--epochs, --time-budget, --resume)",
            err=True,
        )
    elif metrics["first_learnt_epoch"] is None:
        click.echo(
            f"warning: no adversary's validation accuracy reached {metrics['learnt_accuracy']:.3f} in any epoch, so "
            "none showed it can see the target and a low accuracy is no evidence of removal; "
            "kept the highest-SSIM epoch: train longer, or check with geco-tf baseline that the target is learnable",
            err=True,
        )
    elif not metrics["ssim_target_met"]:
        click.echo(f"warning: no epoch reached validation SSIM {metrics['ssim_target']}; kept the highest-SSIM epoch", err=True)
    click.echo(f"wrote {out_dir}")
