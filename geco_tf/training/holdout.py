"""Training subjects the co-trained classifiers never learn from (``--classifier-holdout``).

Every training subject was scanned on one scanner, so a classifier that sees the same training
slices epoch after epoch can learn "this anatomy -> this scanner" instead of the scanner's
signature. Measured on the built-in data: the co-trained DDS-style classifier of a default run
(kept epoch 10) was right on 62% of G(train) and on 37% of G(val) and G(test). The generator's
adversarial gradient on training slices then points at what that classifier memorised, the
anatomy of training subjects, which G must keep; the fidelity budget goes to edits that cannot
generalise.

With a holdout, a seeded, class-stratified share of the training subjects is held out from the
classifiers (their slices weigh 0 in the classifiers' losses and the replay pool), and the
generator's adversarial terms are computed on those slices only. The classifiers' verdict on a
held-out slice can only come from what generalises across subjects, as on validation, so that is
what the generator is pushed to remove. The generator still edits (and is charged fidelity for)
every slice.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import tensorflow as tf

from geco_tf.data.dataset import DatasetInfo


def holdout_slice_ids(data: DatasetInfo, target: str, fraction: float, seed: int = 0) -> np.ndarray:
    """``slice_id`` of every training slice whose subject is held out from the classifiers:
    ``round(fraction * n)`` of the ``n`` training subjects of each ``target`` class (a subject's
    class is that of its first labelled slice), chosen with ``seed``."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"holdout fraction {fraction} must be in [0, 1)")
    subject_class: dict[str, str] = {}
    slices: dict[str, list[int]] = defaultdict(list)
    for row in data.rows("train"):
        if row.get(target):
            subject_class.setdefault(row["subject"], row[target])
            slices[row["subject"]].append(int(row["slice_id"]))
    by_class: dict[str, list[str]] = defaultdict(list)
    for subject, label in sorted(subject_class.items()):
        by_class[label].append(subject)
    rng = np.random.default_rng(seed)
    held: list[int] = []
    for label in sorted(by_class):
        subjects = by_class[label]
        rng.shuffle(subjects)
        for subject in subjects[: int(round(fraction * len(subjects)))]:
            held.extend(slices[subject])
    return np.array(sorted(held), dtype=np.int64)


def add_holdout_flags(ds: tf.data.Dataset, held_ids: np.ndarray) -> tf.data.Dataset:
    """Batches ``(images, labels, {"slice_id": ...})`` -> ``(images, labels, {"holdout": bool})``."""
    held = tf.constant(held_ids, tf.int64)

    def flag(images, labels, extra):
        ids = tf.cast(extra["slice_id"], tf.int64)
        return images, labels, {"holdout": tf.reduce_any(tf.equal(ids[:, None], held[None, :]), axis=1)}

    return ds.map(flag, num_parallel_calls=tf.data.AUTOTUNE)
