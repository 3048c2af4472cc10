"""Gaussian blur of anomaly maps (kernel 7, sigma 1, reflect borders) against a hand computation."""

import math

import numpy as np
import pytest
import torch

from lib.errors import UnknownNameError
from lib.postprocess import POSTPROCESS, apply_postprocess, gaussian_blur, gaussian_kernel1d


def test_kernel_taps_by_hand():
    raw = [math.exp(-0.5 * x * x) for x in range(-3, 4)]
    expected = torch.tensor([v / sum(raw) for v in raw], dtype=torch.float32)
    torch.testing.assert_close(gaussian_kernel1d(7, 1.0), expected, rtol=0, atol=1e-7)


def _reflect_blur_by_hand(image: np.ndarray) -> np.ndarray:
    """Plain double loop with the 2-D kernel and reflect indexing (no edge repeat)."""
    taps = np.array([math.exp(-0.5 * x * x) for x in range(-3, 4)])
    kernel = np.outer(taps, taps) / taps.sum() ** 2
    h, w = image.shape

    def reflect(i: int, n: int) -> int:
        return -i if i < 0 else (2 * (n - 1) - i if i >= n else i)

    out = np.zeros_like(image, dtype=np.float64)
    for y in range(h):
        for x in range(w):
            out[y, x] = sum(
                kernel[dy + 3, dx + 3] * image[reflect(y + dy, h), reflect(x + dx, w)]
                for dy in range(-3, 4)
                for dx in range(-3, 4)
            )
    return out


def test_blur_matches_hand_computation_with_reflect_borders():
    rng = np.random.default_rng(0)
    maps = rng.normal(size=(2, 9, 11)).astype(np.float32)
    out = gaussian_blur(torch.from_numpy(maps))
    assert out.shape == (2, 9, 11) and out.dtype == torch.float32
    for b in range(2):
        np.testing.assert_allclose(out[b].numpy(), _reflect_blur_by_hand(maps[b]), rtol=0, atol=1e-5)


def test_impulse_spreads_as_the_kernel_and_constant_stays():
    impulse = torch.zeros(15, 15)
    impulse[7, 7] = 1.0
    taps = gaussian_kernel1d()
    out = gaussian_blur(impulse)
    torch.testing.assert_close(out[4:11, 4:11], torch.outer(taps, taps), rtol=0, atol=1e-7)
    assert float(out.sum()) == pytest.approx(1.0, abs=1e-6)
    const = torch.full((1, 8, 8), -12.5)
    torch.testing.assert_close(gaussian_blur(const), const, rtol=0, atol=1e-5)


def test_apply_postprocess_by_name_and_errors():
    maps = torch.randn(1, 10, 10)
    assert apply_postprocess("none", maps) is maps
    torch.testing.assert_close(apply_postprocess("gaussian_blur", maps), gaussian_blur(maps))
    assert POSTPROCESS.names() == ["gaussian_blur", "none"]
    with pytest.raises(
        UnknownNameError,
        match=r"unknown eval.postprocess 'gausian_blur'\. Did you mean 'gaussian_blur'\? "
        r"Known post-processing steps: gaussian_blur, none",
    ):
        apply_postprocess("gausian_blur", maps)
    with pytest.raises(ValueError, match=r"too small for a 7x7 blur"):
        gaussian_blur(torch.zeros(3, 20))
    with pytest.raises(ValueError, match=r"\[B,H,W\] or \[H,W\]"):
        gaussian_blur(torch.zeros(1, 1, 10, 10))
    with pytest.raises(ValueError, match="positive odd"):
        gaussian_kernel1d(6)
