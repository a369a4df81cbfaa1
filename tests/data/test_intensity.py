"""The intensity convention: [-1, 1], percentile clip, -1 padding, informative-slice rule."""

import numpy as np

from geco_tf.data.intensity import is_informative, pad_or_crop, scale_to_unit_range


def test_scale_to_unit_range_maps_min_and_clip_to_the_ends():
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 1000, (64, 64))
    image[0, 0] = 1e6  # a hot pixel must not set the scale
    out = scale_to_unit_range(image)
    assert out.dtype == np.float32
    assert out.min() == -1.0 and out.max() == 1.0
    assert np.mean(out > 0.99) < 0.01  # only the top 0.5% is clipped
    assert np.all(scale_to_unit_range(np.full((4, 4), 7.0)) == -1.0)


def test_pad_or_crop_centres_and_reports_cropping():
    square, cropped = pad_or_crop(np.ones((2, 4)), 6)
    assert not cropped and square.shape == (6, 6)
    assert square[2:4, 1:5].sum() == 8 and np.count_nonzero(square == -1) == 36 - 8
    big, cropped = pad_or_crop(np.arange(100.0).reshape(10, 10), 4)
    assert cropped and big[0, 0] == 33.0


def test_is_informative_drops_mostly_black_slices():
    slice_ = np.zeros((10, 10))
    slice_[0, :5] = 1.0
    assert not is_informative(slice_)
    assert is_informative(np.random.default_rng(0).uniform(size=(10, 10)))
