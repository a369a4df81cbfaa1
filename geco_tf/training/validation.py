"""What a run measures after every epoch, with one pass of the generator over each split.

Three things need the current generator's output after an epoch: precise BN for the co-trained
classifiers (``batch_norm.py``: G on 1024 training slices), the fresh probe that judges the epoch
(``fresh_probe.py``: G on up to 4096 training slices and on the validation split), and the
validation numbers (C's and S's accuracy, SSIM and PSNR on G(val)). Run one after the other they
passed G over the training slices three times and over the validation split twice: 19 of the
~64 s an epoch took at 64 x 64 on two cores, a third of the time the 14-minute budget allows.
:func:`validate_epoch` passes G once over a fixed, seeded subset of the training split (its first
1024 slices recalibrate both classifiers, all of it fits the probe) and once over validation.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from geco_tf.data.dataset import DatasetInfo
from geco_tf.data.pipeline import make_dataset
from geco_tf.metrics import psnr, ssim
from geco_tf.training.batch_norm import PreciseBatchNorm
from geco_tf.training.fresh_probe import PROBE_TRAIN_IMAGES, probe_accuracy, probe_features
from geco_tf.training.geco import GECO

#: Training images whose generated versions set the classifiers' batch-norm statistics after
#: each epoch (more changes the statistics by < 1%; fewer makes them noisy).
RECALIBRATION_IMAGES = 1024

#: Images per generator call in these passes (also the batch of the batch-norm statistics).
PASS_BATCH = 64


def predict_split(
    model: GECO,
    data: DatasetInfo,
    split: str,
    target: str,
    batch_size: int = PASS_BATCH,
    with_labels=(),
    features=None,
) -> dict:
    """Run generator and co-trained classifier over a split.

    Returns a dict of NumPy arrays: ``labels``, ``pred``, ``probs``, ``ssim``, ``psnr``,
    ``pred_spectral`` (with a spectral adversary), any ``with_labels`` (e.g. modality), and
    ``features`` = ``features(G(x))`` when that function is given; one entry per slice.
    """
    spectral = model.spectral_classifier

    @tf.function(reduce_retracing=True)
    def step(x):
        g = tf.cast(model.output_generator(x, training=False), tf.float32)
        p = model.classifier(g, training=False)
        ps = spectral(g, training=False) if spectral is not None else p
        return g, p, ps, ssim(x, g), psnr(x, g)

    keys = ["labels", "probs", "probs_spectral", "ssim", "psnr", *with_labels]
    if features is not None:
        keys.append("features")
    out: dict[str, list] = {k: [] for k in keys}
    ds = make_dataset(data, split, target, batch_size, with_labels=tuple(with_labels), cache=False)
    for batch in ds:
        g, p, ps, s, q = step(batch[0])
        out["labels"].append(batch[1].numpy())
        out["probs"].append(p.numpy())
        out["probs_spectral"].append(ps.numpy())
        out["ssim"].append(s.numpy())
        out["psnr"].append(q.numpy())
        if features is not None:
            out["features"].append(features(g.numpy()))
        for k in with_labels:
            out[k].append(batch[2][k].numpy())
    res = {k: np.concatenate(v) if v else np.zeros(0) for k, v in out.items()}
    res["pred"] = res["probs"].argmax(-1) if len(res["probs"]) else np.zeros(0, int)
    probs_spectral = res.pop("probs_spectral")
    if spectral is not None:
        res["pred_spectral"] = probs_spectral.argmax(-1) if len(probs_spectral) else np.zeros(0, int)
    return res


def training_pass(
    model: GECO, data: DatasetInfo, target: str, seed: int = 0, features=None
) -> tuple[np.ndarray, np.ndarray] | None:
    """One pass of the generator over a fixed, seeded subset of the training split.

    Its first :data:`RECALIBRATION_IMAGES` generated slices set the batch-norm statistics of
    the co-trained classifier and the spectral adversary (precise BN: the game only runs them
    in training mode, so their moving averages mix the statistics of many generators; without
    this the co-trained classifier predicted one class on G(val), accuracy 0.25 = chance, while it
    was 52% right with batch statistics). Only statistics change; the game does not use them.
    With ``features`` (a function of generated images), up to :data:`PROBE_TRAIN_IMAGES` slices
    are passed and their features and labels returned for the fresh probe.
    Returns ``(features [N, F], labels [N])``, or None without ``features``.
    """
    networks = [n for n in (model.classifier, model.spectral_classifier) if n is not None]
    precise = [PreciseBatchNorm(n) for n in networks]
    recalibration_batches = math.ceil(RECALIBRATION_IMAGES / PASS_BATCH)
    wanted = max(RECALIBRATION_IMAGES, PROBE_TRAIN_IMAGES if features is not None else 0)
    ds = make_dataset(data, "train", target, PASS_BATCH, shuffle=True, seed=seed, cache=False)
    ds = ds.take(math.ceil(wanted / PASS_BATCH))

    @tf.function(reduce_retracing=True)
    def generate(x):
        return tf.cast(model.output_generator(x, training=False), tf.float32)

    feats, labels = [], []
    for batch, (x, y) in enumerate(ds):
        g = generate(x)
        if batch < recalibration_batches:
            for p in precise:
                p.update(g)
        if features is not None:
            feats.append(features(g.numpy()))
            labels.append(y.numpy())
    if features is None:
        return None
    if not feats:
        return np.zeros((0, 0), np.float32), np.zeros((0,), np.int64)
    return np.concatenate(feats), np.concatenate(labels)


def validate_epoch(
    model: GECO, data: DatasetInfo, target: str, selection_probe: str = "fourier", seed: int = 0
) -> dict:
    """Precise BN, then the validation row of ``history.csv``: ``val_accuracy_cotrained``,
    ``val_accuracy_spectral`` (None without a spectral adversary), ``val_accuracy_probe`` (None
    for ``selection_probe="none"``), ``val_ssim``, ``val_psnr``.

    The training subset is the same after every epoch (``seed``), so epochs are judged alike.
    """
    features = probe_features(selection_probe)
    probe_train = training_pass(model, data, target, seed=seed, features=features)
    val = predict_split(model, data, "val", target, features=features)
    labels = val["labels"]
    return {
        "val_accuracy_cotrained": float(np.mean(val["pred"] == labels)),
        "val_accuracy_spectral": float(np.mean(val["pred_spectral"] == labels)) if "pred_spectral" in val else None,
        "val_accuracy_probe": probe_accuracy(*probe_train, val["features"], labels) if features is not None else None,
        "val_ssim": float(np.mean(val["ssim"])),
        "val_psnr": float(np.mean(val["psnr"])),
    }
