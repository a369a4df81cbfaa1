"""tf.data input pipelines over a dataset directory.

Parsing is vectorised (a batch of serialized examples is parsed at once), the decoded split is
cached in memory when it fits, and batches are prefetched with AUTOTUNE, so the training step --
not the input -- sets the pace (``benchmarks/`` measures the ratio).
"""

from __future__ import annotations

import tensorflow as tf

from geco_tf.data.dataset import LABELS, DatasetInfo

#: Cache a split in memory below this many bytes of decoded float32 images.
CACHE_LIMIT_BYTES = 4 * 1024**3


def _parser(size: int):
    spec = {
        "image": tf.io.FixedLenFeature([], tf.string),
        "slice_id": tf.io.FixedLenFeature([], tf.int64),
        **{label: tf.io.FixedLenFeature([], tf.int64, default_value=-1) for label in LABELS},
    }

    def parse(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
        ex = tf.io.parse_example(serialized, spec)
        images = tf.io.decode_raw(ex["image"], tf.float16, little_endian=True)
        images = tf.reshape(tf.cast(images, tf.float32), [-1, size, size, 1])
        out = {"image": images, "slice_id": ex["slice_id"]}
        out.update({label: tf.cast(ex[label], tf.int32) for label in LABELS})
        return out

    return parse


def slice_records(data: DatasetInfo, split: str) -> tf.data.Dataset:
    """All slices of ``split`` as dicts: image [H, W, 1] float32, slice_id, one int per label."""
    files = data.shards(split)
    ds = tf.data.TFRecordDataset(files, num_parallel_reads=tf.data.AUTOTUNE if len(files) > 1 else None)
    return ds.batch(256).map(_parser(data.image_size), num_parallel_calls=tf.data.AUTOTUNE).unbatch()


def make_dataset(
    data: DatasetInfo,
    split: str,
    target: str,
    batch_size: int,
    shuffle: bool = False,
    seed: int | None = None,
    repeat: bool = False,
    drop_remainder: bool = False,
    with_labels: tuple[str, ...] = (),
    cache: bool | None = None,
) -> tf.data.Dataset:
    """Batches of ``(images, labels)`` for ``target`` from ``split``; slices without a known
    ``target`` label are left out.

    ``with_labels`` adds a third element: a dict of extra label tensors (e.g. modality) for
    evaluation. ``cache=None`` caches when the decoded split fits in :data:`CACHE_LIMIT_BYTES`.
    """
    n = data.count(split, target)
    if cache is None:
        cache = n * data.image_size**2 * 4 <= CACHE_LIMIT_BYTES
    ds = slice_records(data, split).filter(lambda r: r[target] >= 0)
    if with_labels:
        ds = ds.map(lambda r: (r["image"], r[target], {k: r[k] for k in with_labels}))
    else:
        ds = ds.map(lambda r: (r["image"], r[target]))
    if cache:
        ds = ds.cache()
    if repeat:
        ds = ds.repeat()
    if shuffle:
        ds = ds.shuffle(min(max(n, 1), 10_000), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)


def load_split_arrays(data: DatasetInfo, split: str, target: str, with_labels: tuple[str, ...] = ()):
    """A whole split as NumPy arrays: images [N, H, W, 1], labels [N], and extra labels dict."""
    import numpy as np

    images, labels, extra = [], [], {k: [] for k in with_labels}
    for batch in make_dataset(data, split, target, batch_size=512, with_labels=with_labels, cache=False):
        images.append(batch[0].numpy())
        labels.append(batch[1].numpy())
        for k in with_labels:
            extra[k].append(batch[2][k].numpy())
    size = data.image_size
    if not images:
        return np.zeros((0, size, size, 1), np.float32), np.zeros((0,), np.int32), {k: np.zeros((0,), np.int32) for k in with_labels}
    return (
        np.concatenate(images),
        np.concatenate(labels),
        {k: np.concatenate(v) for k, v in extra.items()},
    )
