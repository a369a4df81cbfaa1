"""What the generator keeps: ``utility_retained``.

Removing the scanner is worthless if the images stop being useful. The check: learn a label that
is *not* the scanner (the modality, or lesion presence) twice with the same small CNN, same seed,
same epochs -- once on original training slices (tested on original test slices) and once on
generated training slices (tested on generated test slices), as a downstream user would use
GECO's output. ``utility_retained = accuracy_generated / accuracy_original``; 1.0 means nothing
the label needs was lost.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from geco_tf.evaluation.probes import fit_predict_cnn
from geco_tf.evaluation.stats import accuracy_ci
from geco_tf.progress import QUIET, Progress

#: Labels tried in this order; the first with at least two classes in train and test is used.
UTILITY_LABELS = ("modality", "lesion")
#: Classes pooled before the check. T1 POST is T1 PRE plus gadolinium, which shows only where a
#: lesion's barrier is broken: on a lesion-free slice the two are the same image, so even on
#: originals a classifier can only guess between them, and that coin flip (a quarter of the test
#: slices) would make the ratio jump by several points between two trainings. Pooled, the label
#: is the contrast (T1 / T2 / FLAIR), which the generator must keep.
POOLED = {"modality": {"T1 POST": "T1 PRE"}}


def pooled_labels(name: str, labels: np.ndarray, classes: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Map ``labels`` (indices into ``classes``, -1 unknown) through :data:`POOLED`; return the
    new indices and class names (a pooled class keeps the name of the class it joins, with the
    other's appended: 'T1 PRE+T1 POST')."""
    merge = POOLED.get(name, {})
    names = []
    for c in classes:
        if c in merge:
            continue
        joined = [c, *[k for k, v in merge.items() if v == c and k in classes]]
        names.append("+".join(joined))
    lookup = {}
    for i, c in enumerate(classes):
        keep = merge.get(c, c)
        lookup[i] = next(j for j, n in enumerate(names) if n.split("+")[0] == keep) if keep in classes else -1
    labels = np.asarray(labels)
    out = np.array([lookup.get(int(v), -1) if v >= 0 else -1 for v in labels], dtype=np.int64)
    return out, names


def choose_utility_label(
    train_labels: dict[str, np.ndarray], test_labels: dict[str, np.ndarray], candidates: Sequence[str] = UTILITY_LABELS
) -> str | None:
    """First label in ``candidates`` with >= 2 known classes (index >= 0) in both splits."""
    for name in candidates:
        if name not in train_labels or name not in test_labels:
            continue
        tr, te = np.asarray(train_labels[name]), np.asarray(test_labels[name])
        if len(np.unique(tr[tr >= 0])) >= 2 and len(np.unique(te[te >= 0])) >= 2:
            return name
    return None


def utility_retained(
    x_train: np.ndarray,
    g_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    g_test: np.ndarray,
    y_test: np.ndarray,
    num_classes: int,
    epochs: int = 6,
    seed: int = 0,
    progress: Progress = QUIET,
) -> dict:
    """Train the same probe on originals and on generated images; return both accuracies with
    95% CIs and their ratio.

    ``x_*`` are originals, ``g_*`` the generator's output for the same slices; ``y_*`` the
    non-scanner label (slices with label < 0 are dropped).
    """
    keep_tr, keep_te = np.asarray(y_train) >= 0, np.asarray(y_test) >= 0
    y_tr, y_te = np.asarray(y_train)[keep_tr], np.asarray(y_test)[keep_te]
    pred_orig = fit_predict_cnn(x_train[keep_tr], y_tr, x_test[keep_te], num_classes, epochs=epochs, seed=seed,
                                progress=progress, desc="utility probe on originals")
    pred_gen = fit_predict_cnn(g_train[keep_tr], y_tr, g_test[keep_te], num_classes, epochs=epochs, seed=seed,
                               progress=progress, desc="utility probe on generated")
    original, generated = accuracy_ci(y_te, pred_orig), accuracy_ci(y_te, pred_gen)
    ratio = generated["accuracy"] / original["accuracy"] if original["accuracy"] > 0 else float("nan")
    return {"utility_retained": ratio, "original": original, "generated": generated}
