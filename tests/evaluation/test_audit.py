"""The audit trains a fresh classifier on G(train) and tests it on G(test)."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from geco_tf.evaluation.audit import audit_accuracy


class _Constant(keras.Model):
    """A generator that erases everything: no classifier can beat the majority class."""

    def call(self, x, training=None):
        return keras.ops.zeros_like(x)


@pytest.mark.slow
def test_audit_of_an_erasing_generator_is_at_chance(tiny_data):
    res = audit_accuracy(_Constant(), tiny_data, "manufacturer", classifier="maxpool", epochs=1)
    for key in ("accuracy", "ci95", "n_test", "chance", "confusion", "best_epoch", "val_accuracy"):
        assert key in res
    confusion = np.array(res["confusion"])
    assert confusion.sum() == res["n_test"]
    # identical inputs -> one predicted class -> accuracy = that class's share of the test split
    assert np.count_nonzero(confusion.sum(axis=0)) == 1
    assert res["accuracy"] <= confusion.sum(axis=1).max() / res["n_test"] + 1e-9
    lo, hi = res["ci95"]
    assert lo <= res["accuracy"] <= hi
