"""The dataset directory: what ``synth`` and ``preprocess`` write and everything else reads.

Layout (documented for users in ``docs/data.md``)::

    DATA/
      dataset.json      image size, intensity convention, classes per target, counts, provenance
      manifest.csv      one row per slice (pseudonymous subject, split, labels, source, slice index)
      skipped.csv       input path, reason -- what was left out and why
      slices/           TFRecord shards, one set per split: train-00000.tfrecord, ...

Each TFRecord example holds one slice as raw little-endian float16 bytes (``image``, values in
[-1, 1], ``height`` x ``width``), the row number in the manifest (``slice_id``) and one integer
label per target (index into ``dataset.json["classes"][target]``, -1 where unknown).

A dataset is written into a hidden staging directory and renamed into place only when complete,
so a killed run never leaves a directory that looks finished.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import os
import random
import shutil
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from geco_tf.errors import UserError
from geco_tf.io import write_json_atomic

FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")
SPLIT_FRACTIONS = (0.7, 0.2, 0.1)
TARGETS = ("manufacturer", "field_strength")
#: Labels stored per slice: the two scanner targets plus labels that are not the scanner.
LABELS = ("manufacturer", "field_strength", "modality", "lesion")
MANUFACTURERS = ("GE Medical Systems", "Siemens", "Philips", "Imaging Biometrics")
FIELD_STRENGTHS = ("1.5T", "3T")
MODALITIES = ("T1 PRE", "T1 POST", "T2", "FLAIR", "T2 FLAIR", "OTHER")
LESION = ("absent", "present")
INTENSITY_CONVENTION = (
    "per slice: clipped at the 99.5th percentile, min-max scaled to [-1, 1]; "
    "padded with -1 (raw zero, black) to a centred square"
)
MANIFEST_COLUMNS = (
    "slice_id",
    "subject",
    "split",
    "manufacturer",
    "field_strength",
    "modality",
    "lesion",
    "source_volume",
    "slice_index",
    "shard",
)


@dataclass
class SliceRecord:
    """One 2-D slice on its way into a dataset directory.

    ``image`` is float32 [H, W] already in [-1, 1] and padded to the dataset size. Labels are
    class names (``None`` where unknown). ``subject`` must already be pseudonymous.
    """

    image: np.ndarray
    subject: str
    manufacturer: str | None
    field_strength: str | None
    modality: str | None
    source_volume: str
    slice_index: int
    lesion: str | None = None


def split_by_subject(
    strata: Mapping[str, str],
    seed: int = 0,
    fractions: Sequence[float] = SPLIT_FRACTIONS,
) -> dict[str, str]:
    """Assign each subject to train/val/test, 70/20/10 by default, stratified.

    ``strata`` maps subject -> stratum (e.g. "Siemens|3T"); subjects of one stratum are shuffled
    with ``seed`` and cut by the fractions, so each split sees every stratum where the stratum has
    enough subjects (val and test get one each before train gets more than one). No subject can
    appear in two splits because the assignment is per subject.
    """
    by_stratum: dict[str, list[str]] = defaultdict(list)
    for subject, stratum in sorted(strata.items()):
        by_stratum[stratum].append(subject)
    rng = random.Random(seed)
    assignment: dict[str, str] = {}
    for stratum in sorted(by_stratum):
        subjects = by_stratum[stratum]
        rng.shuffle(subjects)
        n = len(subjects)
        n_test = max(1, round(n * fractions[2])) if n >= 3 else 0
        n_val = max(1, round(n * fractions[1])) if n >= 2 else 0
        n_train = n - n_val - n_test
        for i, subject in enumerate(subjects):
            assignment[subject] = "train" if i < n_train else ("val" if i < n_train + n_val else "test")
    return assignment


class DatasetWriter:
    """Streams slices into TFRecord shards and writes the manifest and ``dataset.json``.

    Use as a context manager; the directory appears at ``out_dir`` only after a clean exit::

        with DatasetWriter(out, image_size=64, classes=..., splits=assignment, made_by={...}) as w:
            w.add(record)
            w.skip("/in/file.dcm", "not DICOM")
    """

    def __init__(
        self,
        out_dir: str | os.PathLike,
        image_size: int,
        classes: Mapping[str, Sequence[str]],
        splits: Mapping[str, str],
        made_by: Mapping[str, object],
        shard_size: int = 2048,
    ) -> None:
        import tensorflow as tf  # heavy: imported only when a dataset is written

        self._tf = tf
        self.out_dir = Path(out_dir)
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise UserError(f"{self.out_dir}: output exists and is a file, not a directory")
        if self.out_dir.is_dir() and any(self.out_dir.iterdir()):
            if not (self.out_dir / "dataset.json").exists():
                raise UserError(f"{self.out_dir}: output directory is not empty and is not a dataset")
        self.image_size = int(image_size)
        self.classes = {label: list(classes.get(label, ())) for label in LABELS}
        self.splits = dict(splits)
        self.made_by = dict(made_by)
        self.shard_size = shard_size
        self.stage = self.out_dir.parent / f".{self.out_dir.name}.partial"
        self._rows: list[dict] = []
        self._skipped: list[tuple[str, str]] = []
        self._writers: dict[str, object] = {}
        self._shard_index: Counter = Counter()
        self._in_shard: Counter = Counter()

    def __enter__(self) -> DatasetWriter:
        if self.stage.exists():
            shutil.rmtree(self.stage)
        (self.stage / "slices").mkdir(parents=True)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        for writer in self._writers.values():
            writer.close()
        if exc_type is not None:
            shutil.rmtree(self.stage, ignore_errors=True)
            return
        self._finish()

    def label_index(self, label: str, value: str | None) -> int:
        """Index of ``value`` among the classes of ``label``; -1 for unknown or unlisted."""
        if value is None or value not in self.classes[label]:
            return -1
        return self.classes[label].index(value)

    def add(self, record: SliceRecord) -> None:
        """Append one slice to its subject's split."""
        tf = self._tf
        image = np.asarray(record.image, dtype=np.float32)
        if image.shape != (self.image_size, self.image_size):
            raise ValueError(f"slice shape {image.shape} != ({self.image_size}, {self.image_size})")
        split = self.splits[record.subject]
        shard = self._shard_name(split)
        slice_id = len(self._rows)
        labels = {label: self.label_index(label, getattr(record, label)) for label in LABELS}
        feature = {
            "image": _bytes_feature(image.astype("<f2").tobytes()),
            "height": _int_feature(image.shape[0]),
            "width": _int_feature(image.shape[1]),
            "slice_id": _int_feature(slice_id),
            **{label: _int_feature(index) for label, index in labels.items()},
        }
        example = tf.train.Example(features=tf.train.Features(feature=feature))
        self._writers[split].write(example.SerializeToString(deterministic=True))
        self._in_shard[split] += 1
        self._rows.append(
            {
                "slice_id": slice_id,
                "subject": record.subject,
                "split": split,
                "manufacturer": record.manufacturer or "",
                "field_strength": record.field_strength or "",
                "modality": record.modality or "",
                "lesion": record.lesion or "",
                "source_volume": record.source_volume,
                "slice_index": record.slice_index,
                "shard": shard,
            }
        )

    def skip(self, path: str, reason: str) -> None:
        """Record an input that was left out, with a one-line reason.

        A file name that is not valid UTF-8 (its undecodable bytes arrive as surrogates) is
        written with those bytes as ``\\xNN`` escapes, so ``skipped.csv`` stays UTF-8 text.
        """
        self._skipped.append((_displayable(str(path)), _displayable(str(reason))))

    def _shard_name(self, split: str) -> str:
        if split not in self._writers or self._in_shard[split] >= self.shard_size:
            if split in self._writers:
                self._writers[split].close()
                self._shard_index[split] += 1
            self._in_shard[split] = 0
            name = f"{split}-{self._shard_index[split]:05d}.tfrecord"
            self._writers[split] = self._tf.io.TFRecordWriter(str(self.stage / "slices" / name))
        return f"{split}-{self._shard_index[split]:05d}.tfrecord"

    def _finish(self) -> None:
        counts: dict[str, dict[str, dict[str, int]]] = {}
        for split in SPLITS:
            rows = [r for r in self._rows if r["split"] == split]
            counts[split] = {"slices": len(rows), "subjects": len({r["subject"] for r in rows})}
            for label in LABELS:
                counts[split][label] = dict(sorted(Counter(r[label] or "unknown" for r in rows).items()))
        info = {
            "format_version": FORMAT_VERSION,
            "image_size": self.image_size,
            "intensity": INTENSITY_CONVENTION,
            "value_range": [-1.0, 1.0],
            "pad_value": -1.0,
            "storage": "TFRecord shards in slices/, image as raw little-endian float16",
            "targets": list(TARGETS),
            "classes": self.classes,
            "counts": counts,
            "n_slices": len(self._rows),
            "n_skipped": len(self._skipped),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "made_by": self.made_by,
        }
        with open(self.stage / "manifest.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=MANIFEST_COLUMNS)
            writer.writeheader()
            writer.writerows(self._rows)
        with open(self.stage / "skipped.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["path", "reason"])
            writer.writerows(self._skipped)
        write_json_atomic(self.stage / "dataset.json", info)
        if self.out_dir.exists():
            shutil.rmtree(self.out_dir)
        os.replace(self.stage, self.out_dir)


@dataclass
class DatasetInfo:
    """A dataset directory opened for reading: its ``dataset.json`` and manifest."""

    path: Path
    info: dict
    manifest: list[dict] = field(repr=False)

    @property
    def image_size(self) -> int:
        return int(self.info["image_size"])

    def classes(self, label: str) -> list[str]:
        return list(self.info["classes"][label])

    def shards(self, split: str) -> list[str]:
        """Paths of the TFRecord shards of ``split``, in order."""
        return sorted(str(p) for p in (self.path / "slices").glob(f"{split}-*.tfrecord"))

    def rows(self, split: str | None = None) -> list[dict]:
        return [r for r in self.manifest if split is None or r["split"] == split]

    def acquired_band(self) -> tuple[float, float] | None:
        """The k-space band every scanner of the dataset recorded, as (rows, columns) fractions
        of the stored images' Nyquist: the smallest acquired fraction per axis. Known only when
        ``dataset.json`` records each acquisition (``made_by.vendors.*.acquired``, as the
        built-in simulator writes); None otherwise, or when every scanner records the full band."""
        vendors = (self.info.get("made_by") or {}).get("vendors") or {}
        fractions = [v["acquired"] for v in vendors.values() if isinstance(v, dict) and "acquired" in v]
        if not fractions:
            return None
        band = (min(float(f[0]) for f in fractions), min(float(f[1]) for f in fractions))
        return band if min(band) < 1.0 else None

    def count(self, split: str, label: str | None = None) -> int:
        """Slices in ``split`` (with a known ``label`` if given)."""
        rows = self.rows(split)
        if label is None:
            return len(rows)
        return sum(1 for r in rows if r[label] in self.classes(label))


def open_dataset(path: str | os.PathLike) -> DatasetInfo:
    """Open a dataset directory, checking it is one. Raises :class:`UserError` otherwise."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: dataset directory does not exist (make one with `geco-tf synth` or `geco-tf preprocess`)")
    meta = path / "dataset.json"
    if not meta.is_file():
        raise UserError(f"{path}: not a dataset directory (no dataset.json)")
    try:
        info = json.loads(meta.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{meta}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if info.get("format_version") != FORMAT_VERSION:
        raise UserError(f"{meta}: format_version {info.get('format_version')!r}, expected {FORMAT_VERSION}")
    with open(path / "manifest.csv", newline="") as f:
        manifest = list(csv.DictReader(f))
    if not manifest:
        raise UserError(f"{path}: dataset is empty (manifest.csv has no slices)")
    return DatasetInfo(path=path, info=info, manifest=manifest)


def check_target(data: DatasetInfo, target: str, splits: Iterable[str] = SPLITS) -> list[str]:
    """Check ``target`` can be trained on; return its classes. Raises :class:`UserError`."""
    if target not in LABELS:
        raise UserError(f"unknown target {target!r}: choose one of {', '.join(TARGETS)}")
    classes = data.classes(target)
    for split in splits:
        present = {r[target] for r in data.rows(split) if r[target] in classes}
        if len(present) < 2:
            raise UserError(
                f"{data.path}: split {split!r} has {len(present)} class(es) of {target!r} "
                f"({', '.join(sorted(present)) or 'none'}); need at least 2"
            )
    return classes


def _displayable(text: str) -> str:
    """``text`` with undecodable file-name bytes (surrogate escapes) as ``\\xNN``."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _bytes_feature(value: bytes):
    import tensorflow as tf

    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int_feature(value: int):
    import tensorflow as tf

    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))
