"""``--lr-schedule``: constant or cosine-decayed learning rates for every network of the game."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import tensorflow as tf
from test_geco_runs import SMALL

from geco_tf.data.dataset import open_dataset
from geco_tf.errors import UserError
from geco_tf.training.train import DEFAULTS, _build, learning_rate, resolve_data_options, resolve_options, train_geco


def test_cosine_decays_from_the_rate_to_zero_over_the_updates():
    schedule = learning_rate(1e-3, "cosine", 100)
    values = [float(schedule(step)) for step in (0, 50, 100)]
    np.testing.assert_allclose(values, [1e-3, 5e-4, 0.0], atol=1e-9)
    assert learning_rate(1e-3, "constant") == 1e-3
    with pytest.raises(UserError, match="--lr-schedule"):
        learning_rate(1e-3, "linear", 100)


def test_each_classifier_decays_over_its_critic_steps_so_all_networks_end_together(tiny_data):
    data = open_dataset(tiny_data)
    opts = {**DEFAULTS, **SMALL, "lr_schedule": "cosine", "epochs": 3, "critic_steps": 2}
    opts = resolve_data_options(resolve_options(opts, data.image_size), data, "manufacturer")
    model = _build(opts, data.classes("manufacturer"), data.image_size, tf.distribute.get_strategy())
    steps = 3 * opts["steps_per_epoch_resolved"]

    def decay_steps(optimizer):
        inner = getattr(optimizer, "inner_optimizer", optimizer)
        return inner._learning_rate.decay_steps

    assert decay_steps(model.g_optimizer) == steps
    assert decay_steps(model.c_optimizer) == decay_steps(model.s_optimizer) == 2 * steps


def test_a_cosine_run_records_the_schedule_and_its_rate_per_epoch(tiny_data, tmp_path):
    out = tmp_path / "cosine"
    train_geco(tiny_data, out, epochs=2, progress=False, lr_schedule="cosine", **SMALL)
    options = json.loads((out / "config.json").read_text())["options"]
    assert options["lr_schedule"] == "cosine"
    with open(out / "history.csv") as f:
        rates = [float(r["learning_rate"]) for r in csv.DictReader(f)]
    # half-way through the planned updates cosine is at half the rate; at the end at 0
    np.testing.assert_allclose(rates, [0.5 * DEFAULTS["g_lr"], 0.0], atol=1e-9)
