"""Training subjects the co-trained classifiers never learn from (geco_tf/training/holdout.py):
which slices are held out, what the game does with them, and a run that uses them."""

from __future__ import annotations

import csv
import json
from collections import Counter

import keras
import numpy as np
import tensorflow as tf
from test_geco import _batch, _game
from test_geco_runs import SMALL

from geco_tf.data.dataset import open_dataset
from geco_tf.data.pipeline import make_dataset
from geco_tf.training.holdout import add_holdout_flags, holdout_slice_ids
from geco_tf.training.train import train_geco


def test_holdout_takes_whole_subjects_per_class_and_the_same_ones_every_time(tiny_data):
    data = open_dataset(tiny_data)
    rows = {int(r["slice_id"]): r for r in data.rows("train")}
    held = holdout_slice_ids(data, "manufacturer", 0.5, seed=3)
    assert np.array_equal(held, holdout_slice_ids(data, "manufacturer", 0.5, seed=3))
    assert not np.array_equal(held, holdout_slice_ids(data, "manufacturer", 0.5, seed=4))
    held_subjects = {rows[i]["subject"] for i in held}
    # whole subjects: every training slice of a held subject is held
    assert set(held) == {i for i, r in rows.items() if r["subject"] in held_subjects}
    subjects = {r["subject"]: r["manufacturer"] for r in rows.values()}
    per_class = Counter(subjects.values())
    held_per_class = Counter(subjects[s] for s in held_subjects)
    assert {c: held_per_class[c] for c in per_class} == {c: int(round(0.5 * n)) for c, n in per_class.items()}
    assert len(holdout_slice_ids(data, "manufacturer", 0.0)) == 0


def test_batches_carry_the_holdout_flag_of_each_slice(tiny_data):
    data = open_dataset(tiny_data)
    held = holdout_slice_ids(data, "manufacturer", 0.5)
    ds = make_dataset(data, "train", "manufacturer", 8, with_labels=("slice_id",))
    flags = [f for _, _, extra in add_holdout_flags(ds, held) for f in extra["holdout"].numpy()]
    ids = [i for _, _, extra in ds for i in extra["slice_id"].numpy()]
    assert flags == [i in set(held) for i in ids] and any(flags) and not all(flags)


def _weights(net: keras.Model) -> list[np.ndarray]:
    return [w.numpy().copy() for w in net.trainable_weights]


def test_classifier_never_learns_held_slices_and_the_generator_is_fooled_only_there():
    x, y = _batch()
    n = int(x.shape[0])
    # every slice held out: the classifier's update has nothing to learn from; the generator
    # still gets the adversarial gradient
    model = _game(input_skip=True)
    c_before, g_before = _weights(model.classifier), _weights(model.generator)
    out = model.train_step((x, y, {"holdout": tf.ones([n], tf.bool)}))
    assert all(np.array_equal(a, b) for a, b in zip(c_before, _weights(model.classifier)))
    assert not all(np.array_equal(a, b) for a, b in zip(g_before, _weights(model.generator)))
    assert "cls_holdout_accuracy" in out and np.isfinite(float(out["gen_loss"]))
    # no slice held out: the classifier learns, and the generator's loss is its fidelity term alone
    model = _game(input_skip=True)
    c_before = _weights(model.classifier)
    out = model.train_step((x, y, {"holdout": tf.zeros([n], tf.bool)}))
    assert not all(np.array_equal(a, b) for a, b in zip(c_before, _weights(model.classifier)))
    pixels = float(np.prod(x.shape[1:]))
    np.testing.assert_allclose(float(out["gen_loss"]), model.beta * float(out["gen_mse"]) * pixels, rtol=1e-5, atol=1e-9)


def test_a_holdout_run_records_it_and_reports_the_held_accuracy(tiny_data, tmp_path):
    out = tmp_path / "holdout"
    train_geco(tiny_data, out, epochs=1, progress=False, classifier_holdout=0.5, **SMALL)
    config = json.loads((out / "config.json").read_text())
    assert config["options"]["classifier_holdout"] == 0.5
    data = open_dataset(tiny_data)
    assert config["resolved"]["classifier_holdout_slices"] == len(holdout_slice_ids(data, "manufacturer", 0.5))
    with open(out / "history.csv") as f:
        row = next(csv.DictReader(f))
    assert 0.0 <= float(row["cls_holdout_accuracy"]) <= 1.0
