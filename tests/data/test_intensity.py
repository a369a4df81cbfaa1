"""The intensity convention: [-1, 1], percentile clip, -1 padding, informative-slice rule."""

import numpy as np

from geco_tf.data.intensity import fill_non_finite, is_informative, pad_or_crop, scale_to_unit_range


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


def test_one_nan_changes_one_pixel_not_the_slice():
    rng = np.random.default_rng(1)
    image = rng.uniform(100, 1000, (32, 32)).astype(np.float32)
    image[5, 7] = np.nan
    out = scale_to_unit_range(image)
    assert np.isfinite(out).all()
    assert out[5, 7] == -1.0  # the background value
    clean = image.copy()
    clean[5, 7] = np.nanmin(image)
    # every other pixel is scaled as if the NaN were not there (statistics over finite values)
    finite = np.isfinite(image)
    low, high = image[finite].min(), np.percentile(image[finite], 99.5)
    expected = (np.clip(image, low, high) - low) / (high - low) * 2 - 1
    np.testing.assert_allclose(out[finite], expected[finite], atol=1e-6)
    assert np.all(scale_to_unit_range(np.full((4, 4), np.nan)) == -1.0)
    assert np.all(scale_to_unit_range(np.array([[np.inf, 1.0], [-np.inf, 1.0]])) == -1.0)


def test_fill_non_finite_uses_the_volume_background():
    volume = np.full((3, 4, 4), np.nan, dtype=np.float32)
    volume[1, 1:3, 1:3] = [[5.0, 7.0], [9.0, np.inf]]
    filled, n = fill_non_finite(volume)
    assert n == 3 * 16 - 3 and np.isfinite(filled).all()
    assert filled[0, 0, 0] == 5.0 and filled[1, 2, 2] == 5.0 and filled[1, 1, 2] == 7.0
    assert np.isnan(volume[0, 0, 0])  # the input is not modified
    clean = np.ones((2, 2), dtype=np.float32)
    same, n = fill_non_finite(clean)
    assert n == 0 and same is clean
    assert fill_non_finite(np.full((2, 2), np.nan))[0].tolist() == [[0.0, 0.0], [0.0, 0.0]]


def test_is_informative_ignores_non_finite_values():
    image = np.random.default_rng(0).uniform(size=(10, 10))
    image[0] = np.nan
    assert is_informative(image)
    assert not is_informative(np.full((4, 4), np.nan))
