"""The channels-innermost colour helpers return exactly the plain torch expressions."""

import cv2
import numpy as np
import pytest
import torch

from lib.data.pixels import (
    GREY_WEIGHTS,
    blend,
    blend_with_grey,
    channel_affine,
    from_interleaved,
    grey,
    interleaved,
    per_image,
)

SIZES = [(1, 1), (3, 5), (16, 16), (7, 300), (64, 2048)]


def _images(size, channels_last, seed=0):
    """Two images in ``0..1`` with some values outside, in either memory layout."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((2, 3, *size), generator=g) * 1.2 - 0.1
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def _plain_grey(x):
    r, g, b = x.unbind(1)
    return (GREY_WEIGHTS[0] * r + GREY_WEIGHTS[1] * g + GREY_WEIGHTS[2] * b).unsqueeze(1)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("channels_last", [True, False])
def test_grey_and_saturation_equal_torch(size, channels_last):
    x = _images(size, channels_last)
    assert torch.equal(grey(x), _plain_grey(x))
    for factor in (0.0, 0.35, 1.0, 1.8):
        expected = (x * factor).add_(_plain_grey(x) * (1.0 - factor)).clamp_(0.0, 1.0)
        out = blend_with_grey(x, factor)
        assert out.shape == x.shape and out.dtype == torch.float32
        assert torch.equal(out, expected)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("channels_last", [True, False])
def test_channel_affine_equals_torch_including_partial_runs(size, channels_last):
    x = _images(size, channels_last)
    offset = torch.tensor([[0.1, -0.05, 0.3], [0.0, 0.2, 0.01]]).view(2, 3, 1, 1)
    scale = torch.tensor([[1.3, 0.7, 2.0], [1.0, 4.0, 1.1]]).view(2, 3, 1, 1)
    expected = (x - offset).mul_(scale).clamp_(0.0, 1.0)
    assert torch.equal(channel_affine(x, offset, scale), expected)


def test_per_image_writes_each_image_channels_innermost():
    x = _images((9, 20), channels_last=False)
    out = per_image(x, lambda src, dst: cv2.GaussianBlur(src, (3, 3), 1.0, dst=dst))
    assert out.is_contiguous(memory_format=torch.channels_last)
    for n in range(2):
        plain = cv2.GaussianBlur(np.ascontiguousarray(x[n].permute(1, 2, 0).numpy()), (3, 3), 1.0)
        assert np.array_equal(out[n].permute(1, 2, 0).numpy(), plain)


def test_interleaved_views_share_memory_and_refuse_other_layouts():
    x = _images((4, 6), channels_last=True)
    pixels = interleaved(x)
    assert pixels.shape == (2, 4, 6, 3) and np.shares_memory(pixels, x.numpy())
    assert from_interleaved(pixels).data_ptr() == x.data_ptr()
    assert interleaved(_images((4, 6), channels_last=False)) is None
    assert interleaved(x.double()) is None
    expected = (x * 0.3).add_(x.flip(-1) * (1.0 - 0.3)).clamp_(0.0, 1.0)
    assert torch.equal(blend(x, x.flip(-1), 0.3), expected)
    scratch = x.flip(-1).contiguous(memory_format=torch.channels_last)
    assert torch.equal(blend(x, scratch, 0.3, scratch_b=True), expected)


@pytest.mark.parametrize("channels_last", [True, False])
def test_windows_of_wider_rows_give_the_same_values(channels_last):
    x = _images((12, 40), channels_last)[..., 2:9, 5:31]
    assert (interleaved(x) is not None) == channels_last
    offset, scale = torch.full((2, 3, 1, 1), 0.1), torch.full((2, 3, 1, 1), 1.5)
    assert torch.equal(channel_affine(x, offset, scale), (x - offset).mul_(scale).clamp_(0.0, 1.0))
    assert torch.equal(grey(x), _plain_grey(x))
    expected = (x * 1.4).add_(_plain_grey(x) * (1.0 - 1.4)).clamp_(0.0, 1.0)
    assert torch.equal(blend_with_grey(x, 1.4), expected)
