"""How subtle are the built-in dataset's scanner signatures? Prints three numbers.

1. SSIM between the same anatomy rendered by two different manufacturers (every pair of the
   four, independent noise): must be >= 0.95 -- the signatures must not change the anatomy.
2. Accuracy of probes on global intensity statistics alone (brain histogram, mean, std;
   logistic regression and gradient boosting) on the 4 manufacturers: must be <= 0.60 --
   per-slice scaling must leave no brightness shortcut.
3. Test accuracy of a small CNN on manufacturer and on field strength: must be >= 0.95 --
   the signatures are real, learnable texture and frequency effects.

The probes of 1. and 2. lived in ``geco_tf/data/synth.py`` until the library was cleared of
research-only code; they need scikit-learn (``pip install scikit-learn``), which the package
does not. Usage (about 5 minutes on 2 CPU cores; writes the default dataset unless --data is
given)::

    python experiments/subtlety.py
    python experiments/subtlety.py --data DATA --epochs 20

Exit status 1 when a bound is missed, so the script can gate a change to the simulator.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

SSIM_MIN = 0.95
PROBE_MAX = 0.60
CNN_MIN = 0.95


def same_anatomy_ssim(subjects: int = 16, size: int = 64, seed: int = 0) -> dict:
    """SSIM between the same slices rendered by every pair of manufacturers.

    Subjects ``0 .. subjects-1`` of ``seed`` keep their anatomy, field strength and jitters; one
    slice per contrast is rendered by each of the four vendors with independent noise. SSIM as in
    the design: images in [-1, 1], ``max_val=2``, 11x11 Gaussian window.
    """
    import itertools

    import tensorflow as tf

    from geco_tf.data.synth import MANUFACTURERS, SYNTH_MODALITIES, SimSubject, subject_strata

    renders: dict[str, list[np.ndarray]] = {m: [] for m in MANUFACTURERS}
    for index, (manufacturer, field_strength) in enumerate(subject_strata(subjects)):
        sim = SimSubject(index, seed, manufacturer, field_strength)
        for modality, slice_index in sim.slice_plan(len(SYNTH_MODALITIES)):
            for v, vendor in enumerate(MANUFACTURERS):
                rng = np.random.default_rng([seed, index, slice_index, v, 7])
                renders[vendor].append(sim.render(modality, slice_index, size, manufacturer=vendor, rng=rng)[0])
    pairs = {}
    for a, b in itertools.combinations(MANUFACTURERS, 2):
        x = tf.constant(np.stack(renders[a])[..., None])
        y = tf.constant(np.stack(renders[b])[..., None])
        pairs[f"{a} vs {b}"] = tf.image.ssim(x, y, max_val=2.0).numpy()
    means = {k: float(np.mean(v)) for k, v in pairs.items()}
    worst = min(means, key=means.get)
    return {
        "mean": float(np.mean(np.concatenate(list(pairs.values())))),
        "pairs": means,
        "worst_pair": worst,
        "worst_pair_mean": means[worst],
        "n": int(sum(len(v) for v in pairs.values())),
    }


def global_intensity_features(images: np.ndarray, bins: int = 32) -> np.ndarray:
    """Per image: normalised histogram of the head (pixels above -0.9), its mean, standard
    deviation and quartiles, and the whole image's mean and standard deviation.

    These are the global statistics a harmonisation method based on intensities would see; the
    simulator is meant to leave nothing in them that tells manufacturers apart.
    """
    images = np.asarray(images, dtype=np.float32).reshape(len(images), -1)
    feats = []
    for img in images:
        head = img[img > -0.9]
        if head.size == 0:
            head = img
        hist, _ = np.histogram(head, bins=bins, range=(-1.0, 1.0))
        hist = hist / max(head.size, 1)
        q = np.percentile(head, [5, 25, 50, 75, 95])
        feats.append(np.concatenate([hist, [head.mean(), head.std(), img.mean(), img.std()], q]))
    return np.asarray(feats, dtype=np.float64)


def intensity_probe_accuracy(data, target: str = "manufacturer", seed: int = 0) -> dict[str, float]:
    """Test accuracy of two probes on :func:`global_intensity_features`, trained on the train
    split: logistic regression (standardised features) and histogram gradient boosting."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    from geco_tf.data.pipeline import load_split_arrays

    x_tr, y_tr, _ = load_split_arrays(data, "train", target)
    x_te, y_te, _ = load_split_arrays(data, "test", target)
    f_tr, f_te = global_intensity_features(x_tr), global_intensity_features(x_te)
    probes = {
        "logistic": make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0)),
        "boosting": HistGradientBoostingClassifier(max_iter=200, random_state=seed),
    }
    # One thread: OpenMP in the boosting otherwise fights TensorFlow's pools (45 s instead of 2 s).
    with threadpool_limits(1):
        return {name: float(np.mean(p.fit(f_tr, y_tr).predict(f_te) == y_te)) for name, p in probes.items()}


def intensity_probe_cv(data, target: str = "manufacturer", folds: int = 4, seed: int = 0) -> dict:
    """Like :func:`intensity_probe_accuracy` but cross-validated over all slices of ``data``,
    with folds grouped by subject (no anatomy shared between training and test folds) and
    stratified by class (plain grouped folds of a balanced set under-represent each test fold's
    classes in training and push accuracy below chance); for small datasets whose test split
    alone is too small to measure an accuracy."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedGroupKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    from geco_tf.data.pipeline import load_split_arrays

    subject_of = {int(r["slice_id"]): r["subject"] for r in data.manifest}
    parts = [load_split_arrays(data, split, target, with_labels=("slice_id",)) for split in ("train", "val", "test")]
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    subjects = np.array([subject_of[int(i)] for p in parts for i in p[2]["slice_id"]])
    feats = global_intensity_features(x)
    probes = {
        "logistic": make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0)),
        "boosting": HistGradientBoostingClassifier(max_iter=200, random_state=seed),
    }
    cv = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    with threadpool_limits(1):
        accuracy = {
            name: float(np.mean(cross_val_predict(p, feats, y, groups=subjects, cv=cv) == y)) for name, p in probes.items()
        }
    return {"accuracy": accuracy, "n": int(len(y)), "folds": folds}


def small_cnn(num_classes: int, size: int, seed: int = 0):
    """A small CNN: four 3x3 convolutions with batch normalisation (two at full resolution, where
    reconstruction texture lives), global average and max pooling, about 15k weights."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((size, size, 1))
    # Augmentation that keeps pixel texture intact: left-right flips and whole-pixel shifts.
    x = layers.RandomFlip("horizontal", seed=seed)(inputs)
    x = layers.RandomTranslation(0.06, 0.06, fill_mode="constant", interpolation="nearest", fill_value=-1.0, seed=seed)(x)
    for filters, pool in ((16, False), (16, True), (32, True), (32, False)):
        x = layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        if pool:
            x = layers.MaxPooling2D()(x)
    x = layers.Concatenate()([layers.GlobalAveragePooling2D()(x), layers.GlobalMaxPooling2D()(x)])
    x = layers.Dropout(0.3, seed=seed)(x)
    outputs = layers.Dense(num_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs)


def cnn_accuracy(data, target: str, epochs: int, seed: int = 0) -> float:
    """Train :func:`small_cnn` on the train split (best epoch on val), return test accuracy."""
    import keras

    from geco_tf.data.pipeline import load_split_arrays

    x_tr, y_tr, _ = load_split_arrays(data, "train", target)
    x_va, y_va, _ = load_split_arrays(data, "val", target)
    x_te, y_te, _ = load_split_arrays(data, "test", target)
    model = small_cnn(len(data.classes(target)), data.image_size, seed)
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    stop = keras.callbacks.EarlyStopping("val_accuracy", patience=epochs, restore_best_weights=True)
    model.fit(x_tr, y_tr, validation_data=(x_va, y_va), epochs=epochs, batch_size=32, verbose=0, callbacks=[stop])
    pred = np.argmax(model.predict(x_te, batch_size=256, verbose=0), axis=1)
    return float(np.mean(pred == y_te))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="existing dataset directory (default: synthesise one with default options)")
    parser.add_argument("--epochs", type=int, default=30, help="CNN epochs (default 30)")
    parser.add_argument("--ssim-subjects", type=int, default=16, help="subjects rendered by all 4 vendors (default 16)")
    args = parser.parse_args(argv)

    from geco_tf.data import synth
    from geco_tf.data.dataset import open_dataset

    t0 = time.time()
    tmp = None
    if args.data:
        path = args.data
    else:
        tmp = tempfile.TemporaryDirectory(prefix="geco-subtlety-")
        path = os.path.join(tmp.name, "data")
        synth.synthesize(path)
        print(f"synthesised default dataset in {time.time() - t0:.0f} s")
    data = open_dataset(path)
    made = data.info["made_by"]
    print(f"dataset: {path} (seed {made['seed']}, options {made['options']})")

    t = time.time()
    ssim = same_anatomy_ssim(subjects=args.ssim_subjects, size=data.image_size, seed=made["seed"])
    print(f"\n1. SSIM, same anatomy by two manufacturers (>= {SSIM_MIN}): mean {ssim['mean']:.4f}, "
          f"worst pair {ssim['worst_pair']} {ssim['worst_pair_mean']:.4f}, n={ssim['n']} ({time.time() - t:.0f} s)")
    for pair, value in ssim["pairs"].items():
        print(f"   {pair}: {value:.4f}")

    t = time.time()
    probe = intensity_probe_accuracy(data, "manufacturer", seed=made["seed"])
    worst = max(probe.values())
    print(f"\n2. probe on global intensity statistics, manufacturer (<= {PROBE_MAX}): max {worst:.3f} "
          f"({', '.join(f'{k} {v:.3f}' for k, v in probe.items())}; chance 0.25; {time.time() - t:.0f} s)")
    probe_fs = intensity_probe_accuracy(data, "field_strength", seed=made["seed"])
    print(f"   (for information, field strength: {', '.join(f'{k} {v:.3f}' for k, v in probe_fs.items())}; chance 0.50)")

    acc = {}
    for target in ("manufacturer", "field_strength"):
        t = time.time()
        acc[target] = cnn_accuracy(data, target, args.epochs)
        print(f"\n3. small CNN, {target} (>= {CNN_MIN}): test accuracy {acc[target]:.3f} "
              f"(n={data.count('test', target)}; {time.time() - t:.0f} s)")

    ok = ssim["mean"] >= SSIM_MIN and worst <= PROBE_MAX and min(acc.values()) >= CNN_MIN
    print(f"\n{'PASS' if ok else 'FAIL'}: total {time.time() - t0:.0f} s")
    if tmp is not None:
        tmp.cleanup()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
