"""Shared fixtures: a small built-in dataset made once per test session."""

from __future__ import annotations

import os
from collections import Counter

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402


def pytest_collection_modifyitems(config, items):
    """A benchmark is slow too: ``-m "not slow"`` replaces setup.cfg's ``-m "not benchmark"``, and
    the quick check must leave benchmarks out as the full suite does."""
    for item in items:
        if item.get_closest_marker("benchmark") is not None:
            item.add_marker(pytest.mark.slow)
    # Files with the most slow tests first. setup.cfg's ``--dist loadfile`` hands whole files to
    # the two workers in collection order; a long training file collected last left one worker
    # idle for minutes at the end (CI measured 1.4 of 2 cores busy). Longest first evens them out.
    slow_tests = Counter(item.path for item in items if item.get_closest_marker("slow") is not None)
    items.sort(key=lambda item: -slow_tests[item.path])  # stable: each file keeps its own order


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory):
    """A small built-in dataset, made once per session: 24 subjects (3 per manufacturer x field
    strength, so every split holds every scanner) x 4 slices (one per contrast) at 64x64 -- 96
    slices, about 10 s. Returns the dataset directory (a ``Path``); treat it as read-only."""
    from geco_tf.data.synth import synthesize

    return synthesize(tmp_path_factory.mktemp("synth") / "data", size=64, subjects=24, slices_per_subject=4, seed=0)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """The GECO tests' tiny dataset (``test_geco_helpers.make_tiny_dataset``: 32x32, a stripe
    frequency per manufacturer), made once per session; treat it as read-only."""
    from test_geco_helpers import make_tiny_dataset

    return make_tiny_dataset(tmp_path_factory.mktemp("geco") / "tiny")
