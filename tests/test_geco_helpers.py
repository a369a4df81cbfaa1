"""Tiny datasets for the GECO tests (32x32, four classes with a class-dependent pattern).

Small enough that a training epoch takes seconds; the pattern (a stripe frequency per class)
is easy to learn, so a classifier that learns anything shows it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from geco_tf.data.dataset import (
    FIELD_STRENGTHS,
    LESION,
    MANUFACTURERS,
    MODALITIES,
    DatasetWriter,
    SliceRecord,
    open_dataset,
    split_by_subject,
)


def make_tiny_dataset(
    out: str | Path,
    size: int = 32,
    subjects_per_class: int = 6,
    slices: int = 4,
    seed: int = 0,
    classes: tuple[str, ...] = MANUFACTURERS,
) -> Path:
    """Write a dataset directory of random blobs carrying a class-dependent stripe pattern."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    subjects, records = {}, []
    for ci, cls in enumerate(classes):
        for s in range(subjects_per_class):
            sid = f"s{ci}_{s}"
            subjects[sid] = cls
            for k in range(slices):
                cy, cx = 0.5 + 0.05 * rng.standard_normal(2)
                blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 0.08)
                img = blob * (0.6 + 0.1 * rng.standard_normal()) + 0.3 * np.sin(2 * np.pi * (ci + 1) * xx) * blob
                img = np.clip((img + 0.05 * rng.standard_normal(img.shape)) * 2 - 1, -1, 1).astype(np.float32)
                records.append(
                    SliceRecord(img, sid, cls, FIELD_STRENGTHS[ci % 2], MODALITIES[k % 3], f"v{sid}", k, LESION[k % 2])
                )
    splits = split_by_subject(subjects, seed=seed)
    label_classes = {
        "manufacturer": list(MANUFACTURERS),
        "field_strength": list(FIELD_STRENGTHS),
        "modality": list(MODALITIES),
        "lesion": list(LESION),
    }
    with DatasetWriter(out, size, label_classes, splits, {"tool": "tests"}) as writer:
        for record in records:
            writer.add(record)
    return Path(out)


def test_tiny_dataset_has_all_splits_and_classes(tiny_data):
    data = open_dataset(tiny_data)
    for split in ("train", "val", "test"):
        present = {r["manufacturer"] for r in data.rows(split)}
        assert present == set(MANUFACTURERS)
