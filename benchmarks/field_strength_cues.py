"""Is there a field-strength-free image within the SSIM bar on the built-in data?

The same question as ``benchmarks/midpoint.py`` asks for manufacturers, for field strength. The
simulator renders the same anatomy at 1.5T and at 3T (same vendor, same noise draw), and also
with one field-strength cue at a time switched to 3T (``SimSubject.render(field=...)`` and the
subject's field strength for the tissue contrast):

* ``contrast``: relaxation times (T1, T2, gadolinium relaxivity) and FLAIR's inversion time;
* ``snr``: the noise level;
* ``b1``: the transmit-field centre brightening;
* ``chemical shift``: fat (scalp, marrow) displaced along the read-out axis, twice as far at 3T.

For each it prints the SSIM between the 1.5T render and the render with the cue at 3T, and the
SSIM from each of the two to their mean: the mean is the natural field-strength-free image of
that anatomy (it depends on the anatomy alone), so if it lies below SSIM 0.97 the bar of issue 3
(field strength <= 0.60 at SSIM >= 0.97) asks for an edit larger than the fidelity it allows.

With ``--protocol tuned`` the 3T protocol is the one sites tune to look like their 1.5T scans
(``geco_tf.data.synth.PROTOCOLS``): ``contrast`` then includes the tuned TR and TE, and
``chemical shift`` the doubled receiver bandwidth.

    python benchmarks/field_strength_cues.py                    # ~60 s
    python benchmarks/field_strength_cues.py --protocol tuned
"""

from __future__ import annotations

import argparse
import time

import numpy as np

CUES = ("contrast", "snr", "b1", "chemical shift")
#: The ``FIELDS`` keys each acquisition cue switches (contrast is the subject's field strength).
FIELD_KEYS = {"snr": ("snr",), "b1": ("b1_centre", "b1_width"), "chemical shift": ("fat_shift_hz", "bandwidth_factor")}


def render_with(cues_at_3t: tuple[str, ...], subjects: int, seed: int, size: int, protocol: str = "shared") -> np.ndarray:
    """Every subject's slices (8 each, the subject's own vendor) rendered at 1.5T except the
    ``cues_at_3t``, which take their 3T values under ``protocol``; noise draw fixed per slice."""
    from geco_tf.data.synth import SimSubject, field_parameters, subject_strata

    field = field_parameters("1.5T", protocol)
    at_3t = field_parameters("3T", protocol)
    for cue in cues_at_3t:
        for key in FIELD_KEYS.get(cue, ()):
            field[key] = at_3t[key]
    contrast = "3T" if "contrast" in cues_at_3t else "1.5T"
    images = []
    for index, (manufacturer, _) in enumerate(subject_strata(subjects)):
        sim = SimSubject(index, seed, manufacturer, contrast, protocol)
        for modality, slice_index in sim.slice_plan(8):
            rng = np.random.default_rng([seed, index, slice_index])
            images.append(sim.render(modality, slice_index, size, rng=rng, field=field)[0])
    return np.stack(images)[..., None].astype(np.float32)


def cue_ssim(subjects: int, seed: int, size: int, protocol: str = "shared") -> dict[str, dict[str, float]]:
    """Per cue (and all together): SSIM from the 1.5T render to the render with that cue at 3T,
    and the mean SSIM of the two renders to their average."""
    from geco_tf.metrics import fidelity

    base = render_with((), subjects, seed, size, protocol)
    table = {}
    for name, cues in [*((c, (c,)) for c in CUES), ("all (1.5T vs 3T)", CUES)]:
        other = render_with(cues, subjects, seed, size, protocol)
        middle = (base + other) / 2.0
        to_middle = (fidelity(base, middle)["ssim"].mean() + fidelity(other, middle)["ssim"].mean()) / 2.0
        table[name] = {"between": float(fidelity(base, other)["ssim"].mean()), "to_mean": float(to_middle)}
    return table


def main(argv: list[str] | None = None) -> int:
    from geco_tf.data.synth import DEFAULT_PROTOCOL, PROTOCOLS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=32, help="subjects (8 slices each)")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0, help="simulator seed (the built-in dataset's is 0)")
    parser.add_argument("--protocol", choices=tuple(PROTOCOLS), default=DEFAULT_PROTOCOL, help="3T protocol (geco-tf synth --protocol)")
    args = parser.parse_args(argv)
    start = time.monotonic()
    print(f"SSIM (design's definition), {args.subjects} subjects x 8 slices, size {args.size}, same noise draw, protocol {args.protocol}:")
    print(f"  {'cue at 3T':18s} {'1.5T vs cue at 3T':>18s} {'both to their mean':>19s}")
    for name, row in cue_ssim(args.subjects, args.seed, args.size, args.protocol).items():
        print(f"  {name:18s} {row['between']:18.4f} {row['to_mean']:19.4f}")
    print(f"({time.monotonic() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
