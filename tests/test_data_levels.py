"""8-bit level counts: exact, for maps and for one channel of interleaved images, small and large."""

import numpy as np
import pytest

from lib.data.levels import level_counts


def test_counts_equal_bincount_for_maps_channels_and_windows():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (67, 131, 3), dtype=np.uint8)
    image[..., 1] = 7  # one level only
    for pixels in (image, image[3:, 5:-2]):
        for c in range(3):
            expected = np.bincount(pixels[..., c].ravel(), minlength=256)
            got = level_counts(pixels, c)
            assert got.dtype == np.int64 and np.array_equal(got, expected)
        red = pixels[..., 0]
        assert np.array_equal(level_counts(red), np.bincount(red.ravel(), minlength=256))


def test_counts_stay_exact_past_float32_integers():
    """2**24 + 1 equal values: float32 counts would round; the count must not."""
    pixels = np.full((4097, 4097), 200, np.uint8)
    counts = level_counts(pixels)
    assert counts[200] == 4097 * 4097 and counts.sum() == counts[200]


def test_rejects_other_dtypes_and_shapes():
    with pytest.raises(ValueError, match="uint8"):
        level_counts(np.zeros((4, 4), np.int32))
    with pytest.raises(ValueError, match="uint8"):
        level_counts(np.zeros(16, np.uint8))
