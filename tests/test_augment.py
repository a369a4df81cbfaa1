"""Shifted and mirrored learning batches for the co-trained classifiers
(geco_tf/training/augment.py, ``--classifier-shift``, ``--classifier-flip``)."""

from __future__ import annotations

import json

import keras
import numpy as np
import tensorflow as tf
from test_geco import _batch, _game
from test_geco_runs import SMALL

from geco_tf.training.augment import shift_and_flip
from geco_tf.training.geco import GECO
from geco_tf.training.train import train_geco


def _images(n: int = 16, size: int = 24) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((n, size, size, 1)).astype(np.float32)


def _which_shift(out: np.ndarray, image: np.ndarray, max_shift: int) -> list[tuple[int, int, bool]]:
    """Every (dy, dx, mirrored) for which ``out`` is ``image`` moved by (dy, dx), compared on
    the pixels that came from inside the image (the rest is reflected edge)."""
    m = max_shift
    found = []
    for mirrored in (False, True):
        src = image[:, ::-1] if mirrored else image
        for dy in range(-m, m + 1):
            for dx in range(-m, m + 1):
                moved = np.roll(src, (-dy, -dx), axis=(0, 1))
                if np.array_equal(out[m:-m, m:-m], moved[m:-m, m:-m]):
                    found.append((dy, dx, mirrored))
    return found


def test_each_image_is_moved_by_whole_pixels_and_mirrored_on_its_own_draw():
    x = _images()
    seed = tf.constant([5, 9], tf.int64)
    out = shift_and_flip(tf.constant(x), seed, max_shift=3, flip=True).numpy()
    draws = []
    for k in range(len(x)):
        found = _which_shift(out[k, ..., 0], x[k, ..., 0], 3)
        assert len(found) == 1, f"image {k}: not a whole-pixel shift (or mirror) of its input"
        draws.append(found[0])
    assert len(set(draws)) > 4, "images of one batch should get different shifts"
    assert {d[2] for d in draws} == {False, True}
    # edges are filled from the image itself (reflection), never with a constant border
    assert np.isin(out, x).all()
    # the same seed gives the same batch; another seed another one
    np.testing.assert_array_equal(out, shift_and_flip(tf.constant(x), seed, 3, True).numpy())
    assert not np.array_equal(out, shift_and_flip(tf.constant(x), seed + 1, 3, True).numpy())


def test_no_shift_and_no_flip_is_the_identity_and_flip_alone_only_mirrors():
    x = _images(8)
    seed = tf.constant([1, 2], tf.int64)
    np.testing.assert_array_equal(shift_and_flip(tf.constant(x), seed).numpy(), x)
    out = shift_and_flip(tf.constant(x), seed, flip=True).numpy()
    for k in range(len(x)):
        assert np.array_equal(out[k], x[k]) or np.array_equal(out[k], x[k, :, ::-1])


def _classifier_after_one_step(**kwargs) -> list[np.ndarray]:
    keras.utils.set_random_seed(4)
    model = _game(**kwargs)
    x, y = _batch()
    model.train_step((x, y))
    return [w.numpy() for w in model.classifier.trainable_weights]


def test_the_game_augments_what_the_classifier_learns_from_and_saves_the_setting():
    plain = _classifier_after_one_step()
    again = _classifier_after_one_step()
    shifted = _classifier_after_one_step(classifier_shift=4, classifier_flip=True)
    assert all(np.array_equal(a, b) for a, b in zip(plain, again))  # the comparison is fair
    assert not all(np.allclose(a, b) for a, b in zip(plain, shifted))
    model = _game(classifier_shift=4, classifier_flip=True)
    config = model.get_config()
    restored = GECO.from_config(json.loads(json.dumps(config)))
    assert (restored.classifier_shift, restored.classifier_flip) == (4, True)


def test_a_run_records_the_augmentation(tiny_data, tmp_path):
    out = tmp_path / "shifted"
    train_geco(tiny_data, out, epochs=1, progress=False, classifier_shift=2, classifier_flip=True, **SMALL)
    options = json.loads((out / "config.json").read_text())["options"]
    assert (options["classifier_shift"], options["classifier_flip"]) == (2, True)
