"""The one uint8-RGB-to-model-input conversion: exact values, shapes, batches, the inverse, bad input."""

import numpy as np
import pytest
import torch

from lib.config import IMAGENET_MEAN, IMAGENET_STD
from lib.data.transforms import Normalize, ToTensor
from lib.image_tensor import normalize, rgb_to_normalized, rgb_to_unit
from lib.viz import denormalize


def test_one_pixel_by_hand():
    rgb = np.array([[[255, 0, 51]]], dtype=np.uint8)
    x = rgb_to_normalized(rgb, (0.5, 0.0, 0.2), (0.5, 1.0, 0.1))
    assert x.shape == (3, 1, 1) and x.dtype == torch.float32
    torch.testing.assert_close(x[:, 0, 0], torch.tensor([1.0, 0.0, 0.0]), rtol=0, atol=1e-6)


def test_batches_match_single_images_and_the_joint_transforms():
    rgb = np.random.default_rng(0).integers(0, 256, (2, 5, 7, 3), dtype=np.uint8)
    unit = rgb_to_unit(rgb)
    assert unit.shape == (2, 3, 5, 7) and float(unit.max()) <= 1.0
    assert torch.equal(unit[1], rgb_to_unit(rgb[1]))
    images, _ = Normalize(IMAGENET_MEAN, IMAGENET_STD)(*ToTensor()(list(rgb), [np.zeros((5, 7), np.uint8)]))
    assert torch.equal(images, rgb_to_normalized(rgb, IMAGENET_MEAN, IMAGENET_STD))
    assert torch.equal(images, normalize(unit, IMAGENET_MEAN, IMAGENET_STD))
    assert np.array_equal(denormalize(images[0], IMAGENET_MEAN, IMAGENET_STD), rgb[0])


def test_channels_last_is_required():
    with pytest.raises(ValueError, match=r"\[\.\.\., H, W, 3\].*\(3, 5, 7\)"):
        rgb_to_unit(np.zeros((3, 5, 7), np.uint8))


def test_planar_layout_holds_the_same_values_in_contiguous_planes():
    rgb = np.random.default_rng(5).integers(0, 256, (2, 9, 11, 3), dtype=np.uint8)
    interleaved, planar = rgb_to_unit(rgb), rgb_to_unit(rgb, planar=True)
    assert torch.equal(planar, interleaved) and planar.is_contiguous()
    assert interleaved.is_contiguous(memory_format=torch.channels_last)
