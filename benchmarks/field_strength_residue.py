"""Which field-strength cue does a generator leave behind? Linear probes on hand-made cue features.

A fresh classifier (``benchmarks/audit.py``) says *whether* the field strength survives in G's
output, not *which* of the simulator's cues carries it (``docs/data.md``, "Field strength and
protocol"). This script measures hand-made features per slice, each set aimed at one cue:

* ``noise_head`` and ``noise_air``: log of the median absolute high-pass residual (image minus
  its 3 x 3 mean) inside the head, and log of its standard deviation in the air: the SNR differs
  by field strength. Kept apart because a generator edits the two very differently: with the
  default ``--edit-space logit`` an edit is damped ~50x in the air (tanh's slope near -1);
* ``b1``: mean of the head's centre (radius < 0.25 of the field of view) and of a ring
  (0.45-0.7), each over the head's median: the transmit-field centre brightening;
* ``contrast``: the 10, 25, 75 and 90 % quantiles of the head's intensities over its median:
  tissue contrast (relaxation times, TR/TE).

For each feature set, a linear probe (``geco_tf.evaluation.probes.fit_predict_linear``) is
fitted on the training slices of each (modality, manufacturer) cell, since both change every
feature, and scored on that cell's validation and test slices; the accuracy is over all cells.
Run on the originals and on G(x), it shows which cue G removed and which survived. A second line
per generator gives, per manufacturer, how much noisier the air of class 0 (1.5T) is than that of
class 1 (3T), in log units (median ``noise_air``): what ``--background-gain`` is for.

    python benchmarks/field_strength_residue.py --data /tmp/data_compromise --run RUN   # ~30 s
"""

from __future__ import annotations

import argparse

import keras
import numpy as np
from scipy import ndimage

from geco_tf.data.dataset import open_dataset
from geco_tf.data.pipeline import load_split_arrays
from geco_tf.evaluation.audit import generate
from geco_tf.evaluation.probes import fit_predict_linear

#: Pixels above this (images in [0, 1]) count as head.
HEAD_THRESHOLD = 0.08


def cue_features(images: np.ndarray) -> dict[str, np.ndarray]:
    """The feature sets of the module docstring for images [N, H, W, 1] in [-1, 1]."""
    x = (images[..., 0].astype(np.float64) + 1.0) / 2.0
    head = x > HEAD_THRESHOLD
    air = ~ndimage.binary_dilation(head, structure=np.ones((1, 3, 3)), iterations=3)
    residual = x - ndimage.uniform_filter(x, size=(1, 3, 3))
    h, w = x.shape[1:]
    yy, xx = np.mgrid[:h, :w]
    radius = np.hypot(yy - (h - 1) / 2, xx - (w - 1) / 2) / (h / 2)
    centre, ring = radius < 0.25, (radius > 0.45) & (radius < 0.7)
    noise_head, noise_air, b1, contrast = [], [], [], []
    for i in range(len(x)):
        inside = x[i][head[i]] if head[i].any() else np.ones(2)
        median = np.median(inside) + 1e-6
        noise_head.append([np.log(np.median(np.abs(residual[i][head[i]])) + 1e-6) if head[i].any() else 0.0])
        noise_air.append([np.log(np.std(residual[i][air[i]]) + 1e-6) if air[i].sum() > 10 else 0.0])
        b1.append([
            np.mean(x[i][head[i] & c]) / median if (head[i] & c).any() else 1.0 for c in (centre, ring)
        ])
        contrast.append(np.quantile(inside, [0.1, 0.25, 0.75, 0.9]) / median)
    return {
        "noise_head": np.array(noise_head),
        "noise_air": np.array(noise_air),
        "b1": np.array(b1),
        "contrast": np.array(contrast),
    }


def load_parts(data_dir: str, target: str = "field_strength") -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Images, labels and (modality, manufacturer) cell per part: ``fit`` = train, ``score`` =
    val + test; read once and shared by every generator scored."""
    data = open_dataset(data_dir)
    parts = {}
    for part, splits in (("fit", ("train",)), ("score", ("val", "test"))):
        loaded = [load_split_arrays(data, split, target, with_labels=("modality", "manufacturer")) for split in splits]
        parts[part] = (
            np.concatenate([x for x, _, _ in loaded]),
            np.concatenate([y for _, y, _ in loaded]),
            np.concatenate([extra["modality"] * 100 + extra["manufacturer"] for _, _, extra in loaded]),
        )
    return parts


def cue_accuracies(parts: dict, generator: keras.Model | None) -> tuple[dict[str, float], dict]:
    """Probe accuracy per feature set (and ``all`` together) on G(score), fitted on G(fit); and
    the features of both parts."""
    features = {}
    for part, (images, _, _) in parts.items():
        features[part] = cue_features(generate(generator, images))
        features[part]["all"] = np.concatenate(list(features[part].values()), axis=1)
    (_, y_fit, cells_fit), (_, y_score, cells_score) = parts["fit"], parts["score"]
    result = {}
    for cue in features["fit"]:
        correct = 0
        for cell in np.unique(cells_fit):
            fit, score = cells_fit == cell, cells_score == cell
            if score.any():
                pred = fit_predict_linear(features["fit"][cue][fit], y_fit[fit], features["score"][cue][score])
                correct += int((pred == y_score[score]).sum())
        result[cue] = correct / len(y_score)
    return result, features


def air_noise_gaps(parts: dict, features: dict) -> dict[int, float]:
    """Per manufacturer (index): median ``noise_air`` of class 0 minus that of class 1 over the
    score part, in log units (for field strength: how much noisier the 1.5T air is than 3T's)."""
    _, y, cells = parts["score"]
    noise = features["score"]["noise_air"][:, 0]
    manufacturer = cells % 100
    return {
        int(m): float(np.median(noise[(manufacturer == m) & (y == 0)]) - np.median(noise[(manufacturer == m) & (y == 1)]))
        for m in np.unique(manufacturer)
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--run", action="append", default=[], help="run directory (repeatable)")
    parser.add_argument("--target", default="field_strength")
    args = parser.parse_args()
    parts = load_parts(args.data, args.target)
    for name, path in [("originals", None)] + [(run, f"{run}/generator.keras") for run in args.run]:
        generator = keras.saving.load_model(path, compile=False) if path else None
        acc, features = cue_accuracies(parts, generator)
        print(f"{name}: " + "  ".join(f"{k} {v:.3f}" for k, v in acc.items()), flush=True)
        gaps = air_noise_gaps(parts, features)
        print(f"{name}: air-noise gap (log, class 0 - class 1) per manufacturer: "
              + "  ".join(f"{m} {g:+.3f}" for m, g in gaps.items()), flush=True)


if __name__ == "__main__":
    main()
