"""The dataset directory: writing, reading back through tf.data, splits, atomicity."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from geco_tf.data.dataset import (
    FIELD_STRENGTHS,
    MANUFACTURERS,
    DatasetWriter,
    SliceRecord,
    check_target,
    open_dataset,
    split_by_subject,
)
from geco_tf.data.pipeline import load_split_arrays, make_dataset
from geco_tf.errors import UserError

CLASSES = {"manufacturer": MANUFACTURERS, "field_strength": FIELD_STRENGTHS, "modality": ("T1 PRE", "T2")}


def _write(tmp_path, subjects=20, per_subject=3, size=8):
    strata = {f"s{i:02d}": MANUFACTURERS[i % 4] for i in range(subjects)}
    splits = split_by_subject(strata, seed=1)
    rng = np.random.default_rng(0)
    expected = []
    with DatasetWriter(tmp_path / "data", size, CLASSES, splits, made_by={"test": True}, shard_size=5) as w:
        for subject, man in strata.items():
            for k in range(per_subject):
                image = rng.uniform(-1, 1, (size, size)).astype(np.float32)
                fs = FIELD_STRENGTHS[k % 2] if subject != "s00" else "7T"  # 7T: not a class -> unknown
                w.add(SliceRecord(image, subject, man, fs, "T2", f"{subject}/T2", k))
                expected.append((subject, man, image))
        w.skip("/in/broken.dcm", "not DICOM")
    return tmp_path / "data", splits, expected


def test_split_by_subject_is_stratified_disjoint_and_deterministic():
    strata = {f"s{i:03d}": MANUFACTURERS[i % 4] for i in range(200)}
    a = split_by_subject(strata, seed=3)
    assert a == split_by_subject(strata, seed=3)
    assert a != split_by_subject(strata, seed=4)
    assert set(a) == set(strata)  # each subject in exactly one split
    for man in MANUFACTURERS:
        counts = {s: sum(1 for k, v in a.items() if v == s and strata[k] == man) for s in ("train", "val", "test")}
        assert counts == {"train": 35, "val": 10, "test": 5}


def test_writer_round_trip_through_tf_data(tmp_path):
    path, splits, expected = _write(tmp_path)
    data = open_dataset(path)
    info = json.loads((path / "dataset.json").read_text())
    assert info["n_slices"] == len(expected) == len(data.manifest)
    assert info["counts"]["train"]["slices"] + info["counts"]["val"]["slices"] + info["counts"]["test"]["slices"] == 60
    assert len(data.shards("train")) > 1  # shard_size=5 forces several shards
    with open(path / "skipped.csv") as f:
        assert list(csv.reader(f))[1] == ["/in/broken.dcm", "not DICOM"]
    # Every image comes back (float16 storage: 1e-3) with its label, in its subject's split.
    by_split = {}
    for split in ("train", "val", "test"):
        images, labels, extra = load_split_arrays(data, split, "manufacturer", with_labels=("modality",))
        by_split[split] = (images, labels)
        assert set(extra["modality"]) == {1}
    for split, (images, labels) in by_split.items():
        want = [(m, im) for s, m, im in expected if splits[s] == split]
        assert len(images) == len(want)
        for (man, image), got, label in zip(want, images, labels):
            np.testing.assert_allclose(got[..., 0], image, atol=1e-3)
            assert MANUFACTURERS[label] == man
    # Unknown field strength (7T) is kept in the manifest but left out of that target.
    assert data.count("train", "field_strength") + data.count("val", "field_strength") + data.count(
        "test", "field_strength"
    ) == 60 - 3


def test_make_dataset_batches_and_shuffles(tmp_path):
    path, _, _ = _write(tmp_path)
    data = open_dataset(path)
    batches = list(make_dataset(data, "train", "manufacturer", batch_size=4, shuffle=True, seed=0))
    assert batches[0][0].shape[1:] == (8, 8, 1) and batches[0][0].dtype.name == "float32"
    assert sum(len(b[1]) for b in batches) == data.count("train")


def test_failed_write_leaves_nothing(tmp_path):
    splits = {"a": "train"}
    with pytest.raises(RuntimeError):
        with DatasetWriter(tmp_path / "data", 4, CLASSES, splits, made_by={}) as w:
            w.add(SliceRecord(np.zeros((4, 4)), "a", "Siemens", "3T", "T2", "a/T2", 0))
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_open_dataset_errors_name_the_path(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        open_dataset(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no dataset.json"):
        open_dataset(tmp_path / "empty")
    (tmp_path / "empty" / "dataset.json").write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        open_dataset(tmp_path / "empty")


def test_writer_refuses_file_as_output(tmp_path):
    (tmp_path / "out").write_text("x")
    with pytest.raises(UserError, match="is a file"):
        DatasetWriter(tmp_path / "out", 4, CLASSES, {}, made_by={})


def test_check_target_needs_two_classes_per_split(tmp_path):
    strata = {f"s{i}": "Siemens" for i in range(10)}
    splits = split_by_subject(strata)
    with DatasetWriter(tmp_path / "d", 4, CLASSES, splits, made_by={}) as w:
        for s in strata:
            w.add(SliceRecord(np.zeros((4, 4)), s, "Siemens", "3T", "T2", f"{s}/T2", 0))
    data = open_dataset(tmp_path / "d")
    with pytest.raises(UserError, match="split 'train' has 1 class"):
        check_target(data, "manufacturer")
    with pytest.raises(UserError, match="unknown target"):
        check_target(data, "colour")
