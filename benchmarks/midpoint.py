"""Is there a vendor-free image within the SSIM bar, and can a generator compute it from one scan?

The built-in simulator can render the same anatomy through every manufacturer's acquisition, which
real data cannot. Two measurements use that:

1. **Midpoint.** For each manufacturer, SSIM between its render of a slice and the mean of the four
   manufacturers' renders of the same slice (independent noise). The mean depends on the anatomy
   only, so it carries no manufacturer at all; if it lies within SSIM 0.97 of every render, an
   image that passes the acquisition bar (audit <= 0.40 at SSIM >= 0.97) *exists* for each input.
   Printed beside it: the same manufacturer with a new noise draw (what noise alone costs).
2. **Paired oracle** (``--paired``). GECO's U-Net (defaults: depth 3, 16 filters, input skip),
   trained with supervision -- pixel MSE to that midpoint, on subjects of another seed than the
   dataset's -- then measured on the dataset's test split like a GECO run: SSIM, PSNR, the Fourier
   probe and the converged DDS audit. It asks whether the midpoint can be *computed* from one
   manufacturer's image. (The regression answer is the conditional mean, which keeps what the
   input's manufacturer could not see -- e.g. the detail a smaller acquired matrix lost -- out of
   the output, so some manufacturer information may survive even here.) With ``--paired-target
   noise-free-mean`` it regresses to the noise-free mean of the four acquisitions instead: a
   deterministic manufacturer-free target of the anatomy (one of the references below).

Beside the midpoint it prints the SSIM to deterministic references of the same anatomy
(:func:`references`): what a perfect restoration, with or without super-resolution, would score.

    python benchmarks/midpoint.py                       # midpoint and references, ~70 s
    python benchmarks/midpoint.py --paired --data DATA  # + paired oracle, ~12 min on 2 cores
"""

from __future__ import annotations

import argparse
import time

import numpy as np

PAIRED_SEED = 4321  # subjects of the oracle's training set: not the dataset's (seed 0)


def renders(
    subjects: int, seed: int, size: int, draw: int, acquisitions: dict[str, dict | None] | None = None
) -> dict[str, np.ndarray]:
    """Every manufacturer's render of the same slices (8 per subject), noise draw ``draw``; or,
    with ``acquisitions`` (name -> vendor parameters, None for a manufacturer's own), each of
    those acquisitions' renders of the same slices."""
    from geco_tf.data.synth import MANUFACTURERS, SimSubject, subject_strata

    acquisitions = acquisitions or dict.fromkeys(MANUFACTURERS)
    out: dict[str, list] = {name: [] for name in acquisitions}
    for index, (manufacturer, field_strength) in enumerate(subject_strata(subjects)):
        sim = SimSubject(index, seed, manufacturer, field_strength)
        for modality, slice_index in sim.slice_plan(8):
            for v, (name, params) in enumerate(acquisitions.items()):
                rng = np.random.default_rng([seed, index, slice_index, v, draw])
                own = name if params is None else None
                out[name].append(sim.render(modality, slice_index, size, own, rng, acquisition=params)[0])
    return {name: np.stack(images)[..., None].astype(np.float32) for name, images in out.items()}


def reference_acquisition(acquired: tuple[float, float] = (1.0, 1.0)) -> dict:
    """Vendor parameters of a scanner-free reference: no noise (SNR x 1e9), no coil shading,
    apodisation, partial Fourier, parallel imaging or filter; ``acquired`` as in ``VENDORS``."""
    return {
        "acquired": list(acquired), "phase_axis": 0, "partial_fourier": 1.0, "window": {"kind": "none"},
        "pi": {"factor": 1, "g_max": 1.0, "fold": 0.0}, "coil": {"shape": "anterior", "amplitude": 0.0},
        "post": {"kind": "none"}, "max_value": 4095, "snr_factor": 1e9, "bandwidth_hz_px": 480,
    }


def noise_free(manufacturer: str, acquired: tuple[float, float] | None = None) -> dict:
    """``manufacturer``'s own acquisition without noise (SNR x 1e9); ``acquired`` replaces the
    fraction of k-space it records (e.g. the common band ``(0.8, 0.85)``)."""
    import copy

    from geco_tf.data.synth import VENDORS

    params = copy.deepcopy(VENDORS[manufacturer])
    params["snr_factor"] = 1e9
    if acquired is not None:
        params["acquired"] = list(acquired)
    return params


COMMON_BAND = (0.8, 0.85)  # the k-space every manufacturer records: GE's rows, Siemens' columns
#: The reference the paired oracle's ``noise-free-mean`` target is.
NOISE_FREE_MEAN = "noise-free mean of the four acquisitions (denoising, super-resolution to the full matrix)"


def references() -> dict[str, list[dict]]:
    """Deterministic, manufacturer-free targets -- what a *perfect* restoration could return --
    each the mean of the renders of a list of acquisitions. All depend on the anatomy alone."""
    from geco_tf.data.synth import MANUFACTURERS

    return {
        "noise-free, full matrix, no vendor effects (perfect denoising and super-resolution)": [
            reference_acquisition()],
        "noise-free, common band, no vendor effects (perfect denoising, nothing invented)": [
            reference_acquisition(COMMON_BAND)],
        NOISE_FREE_MEAN: [noise_free(m) for m in MANUFACTURERS],
        "noise-free mean of the four acquisitions in the common band (denoising, nothing invented)": [
            noise_free(m, COMMON_BAND) for m in MANUFACTURERS],
    }


def reference_images(subjects: int, seed: int, size: int, draw: int) -> tuple[dict, dict]:
    """Every manufacturer's renders (noise draw ``draw``) and every reference of
    :func:`references` for the same slices."""
    from geco_tf.data.synth import MANUFACTURERS

    refs = references()
    parts = {f"{name}/{i}": params for name, acqs in refs.items() for i, params in enumerate(acqs)}
    images = renders(subjects, seed, size, draw, acquisitions={**dict.fromkeys(MANUFACTURERS), **parts})
    targets = {name: np.mean([images[f"{name}/{i}"] for i in range(len(acqs))], axis=0) for name, acqs in refs.items()}
    return {m: images[m] for m in MANUFACTURERS}, targets


def reference_ssim(subjects: int, seed: int, size: int) -> dict[str, dict[str, float]]:
    """Per reference of :func:`references`: mean SSIM from each manufacturer's render to the
    reference render of the same anatomy, and the mean over manufacturers."""
    from geco_tf.metrics import fidelity

    scans, targets = reference_images(subjects, seed, size, draw=1)
    table = {}
    for name, target in targets.items():
        row = {m: float(fidelity(scan, target)["ssim"].mean()) for m, scan in scans.items()}
        table[name] = {**row, "mean": float(np.mean(list(row.values())))}
    return table


def renders_and_midpoint(subjects: int, seed: int, size: int) -> tuple[dict, dict, np.ndarray]:
    """Two independent noise draws of every manufacturer's renders, and the four-manufacturer
    mean of the second draw (the manufacturer-free image of each slice)."""
    first, second = renders(subjects, seed, size, draw=1), renders(subjects, seed, size, draw=2)
    return first, second, np.mean(list(second.values()), axis=0)


def midpoint_ssim(subjects: int, seed: int, size: int) -> dict[str, dict[str, float]]:
    """Per manufacturer: mean SSIM to the four-manufacturer mean and to itself with new noise."""
    from geco_tf.metrics import fidelity

    first, second, midpoint = renders_and_midpoint(subjects, seed, size)
    return {
        m: {
            "to_midpoint": float(fidelity(first[m], midpoint)["ssim"].mean()),
            "new_noise": float(fidelity(first[m], second[m])["ssim"].mean()),
        }
        for m in first
    }


#: Targets of the paired oracle: the noisy midpoint, or the noise-free mean of the four acquisitions.
PAIRED_TARGETS = ("midpoint", "noise-free-mean")


def paired_oracle(
    data_dir: str, subjects: int, size: int, epochs: int, seed: int = 0, target: str = "midpoint"
) -> dict:
    """Train the U-Net to map each render to ``target`` (one of :data:`PAIRED_TARGETS`); measure
    it on the dataset's test split with ``benchmarks/audit.py``'s :func:`fresh_audits` (fidelity,
    Fourier probe, DDS audit)."""
    import keras
    from audit import fresh_audits

    from geco_tf.data.dataset import open_dataset
    from geco_tf.models.generators import UNetGenerator

    if target == "midpoint":
        first, _, wanted = renders_and_midpoint(subjects, PAIRED_SEED, size)
    else:
        first, targets = reference_images(subjects, PAIRED_SEED, size, draw=1)
        wanted = targets[NOISE_FREE_MEAN]
    x = np.concatenate(list(first.values()))
    y = np.concatenate([wanted] * len(first))
    keras.utils.set_random_seed(seed)
    generator = UNetGenerator(depth=3, base_filters=16, input_skip=True)
    generator.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    generator.fit(x, y, batch_size=32, epochs=epochs, shuffle=True, verbose=2)
    return {"pairs": len(x), **fresh_audits(generator, open_dataset(data_dir), "manufacturer", seed=seed)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=32, help="subjects for the midpoint SSIM (8 slices each)")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0, help="simulator seed of the midpoint subjects")
    parser.add_argument("--paired", action="store_true", help="also train and audit the paired oracle")
    parser.add_argument("--data", help="dataset directory for the paired oracle's test (default synth)")
    parser.add_argument("--paired-subjects", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--paired-target", choices=PAIRED_TARGETS, default="midpoint",
                        help="what the oracle regresses to: the noisy four-manufacturer mean, or its noise-free version")
    args = parser.parse_args(argv)

    start = time.monotonic()
    print(f"SSIM (design's definition), {args.subjects} subjects x 8 slices, size {args.size}:")
    for manufacturer, row in midpoint_ssim(args.subjects, args.seed, args.size).items():
        print(f"  {manufacturer:20s} to the 4-manufacturer mean {row['to_midpoint']:.4f}   "
              f"same manufacturer, new noise {row['new_noise']:.4f}")
    print("SSIM to a deterministic manufacturer-free reference of the same anatomy:")
    for name, row in reference_ssim(args.subjects, args.seed, args.size).items():
        print(f"  {name}:\n    " + "  ".join(f"{m.split()[0]} {v:.4f}" for m, v in row.items()))
    print(f"({time.monotonic() - start:.0f} s)", flush=True)
    if args.paired:
        if not args.data:
            parser.error("--paired needs --data (a dataset from `geco-tf synth`)")
        result = paired_oracle(args.data, args.paired_subjects, args.size, args.epochs, target=args.paired_target)
        fourier, dds = result["fourier"], result["dds"]
        print(f"paired oracle to the {args.paired_target} ({result['pairs']} pairs, {args.epochs} epochs): test SSIM {result['ssim']:.4f} "
              f"PSNR {result['psnr']:.2f}")
        print(f"  Fourier audit {fourier['accuracy']:.3f} [{fourier['ci95'][0]:.3f}, {fourier['ci95'][1]:.3f}]")
        print(f"  DDS audit {dds['accuracy']:.3f} [{dds['ci95'][0]:.3f}, {dds['ci95'][1]:.3f}] "
              f"(best epoch {dds['best_epoch']} of {dds['epochs_run']}; chance {dds['chance']:.2f})")
        print(f"({time.monotonic() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
