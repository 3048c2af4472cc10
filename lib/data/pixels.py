"""Colour arithmetic on float images whose channels lie innermost in memory (``[N, H, W, 3]``).

Decoded frames and OpenCV's outputs are laid out this way. Torch reads such a ``[N, 3, H, W]``
tensor (``channels_last``) without a copy, but cannot vectorise an operation that broadcasts a
per-channel value or a per-pixel grey level over runs of three numbers. The helpers here run the
same float32 operations, in the same order, on long contiguous runs instead: NumPy views of the
pixels, OpenCV's channel split and merge, and per-channel values repeated along a run of pixels.
Each returns exactly what the plain torch expression returns, in either memory layout.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
import torch
from torch import Tensor

GREY_WEIGHTS = (0.299, 0.587, 0.114)
_RUN = 256
"""Pixels per contiguous run over which a per-channel value is repeated."""


def interleaved(images: Tensor) -> np.ndarray | None:
    """The ``[N, H, W, C]`` NumPy view of float32 images whose channels lie innermost (each pixel's
    values side by side; rows may be a window of wider ones), else None."""
    if images.dtype != torch.float32 or images.dim() != 4 or images.stride(1) != 1:
        return None
    if images.shape[-1] > 1 and images.stride(3) != images.shape[1]:
        return None
    return images.permute(0, 2, 3, 1).numpy()


def _rows(pixels: np.ndarray) -> np.ndarray:
    """``[N * H, W, C]`` pixels of ``[N, H, W, C]`` (a copy only where rows are not evenly spaced)."""
    n, h, w, c = pixels.shape
    return pixels.reshape(n * h, w, c)


def from_interleaved(pixels: np.ndarray) -> Tensor:
    """``[N, H, W, C]`` float32 pixels as a ``[N, C, H, W]`` tensor sharing their memory."""
    return torch.from_numpy(pixels).permute(0, 3, 1, 2)


def per_image(images: Tensor, fn: Callable[..., np.ndarray]) -> Tensor:
    """``fn(src, dst=out)`` (an OpenCV function of one ``[H, W, 3]`` float32 image) on each image,
    written into one channels-innermost result (the layout the next OpenCV step reads in place)."""
    pixels = interleaved(images)
    if pixels is None:
        pixels = images.permute(0, 2, 3, 1).numpy()
    out = np.empty(pixels.shape, np.float32)
    for src, dst in zip(pixels, out, strict=True):
        fn(src, dst=dst)
    return from_interleaved(out)


def grey(images: Tensor) -> Tensor:
    """``[N, 1, H, W]``: ``0.299 R + 0.587 G + 0.114 B`` of each pixel (summed in that order)."""
    pixels = interleaved(images)
    if pixels is None:
        r, g, b = images.unbind(1)
        return (GREY_WEIGHTS[0] * r + GREY_WEIGHTS[1] * g + GREY_WEIGHTS[2] * b).unsqueeze(1)
    n, h, w, _ = pixels.shape
    planes = cv2.split(_rows(pixels))
    return torch.from_numpy(_grey_plane(planes)).view(n, 1, h, w)


def _grey_plane(planes: tuple[np.ndarray, ...]) -> np.ndarray:
    out = planes[0] * GREY_WEIGHTS[0]
    out += planes[1] * GREY_WEIGHTS[1]
    out += planes[2] * GREY_WEIGHTS[2]
    return out


def blend(a: Tensor, b: Tensor, factor: float, *, scratch_b: bool = False) -> Tensor:
    """``clamp(a * factor + b * (1 - factor), 0, 1)`` for images ``a`` and ``b`` of one shape
    (``scratch_b``: ``b`` is a temporary that may be overwritten, saving one image of memory)."""
    weighted_b = b.mul_(1.0 - factor) if scratch_b else b * (1.0 - factor)
    return (a * factor).add_(weighted_b).clamp_(0.0, 1.0)


def blend_with_grey(images: Tensor, factor: float) -> Tensor:
    """:func:`blend` of each pixel with its own :func:`grey` level (a saturation change)."""
    pixels = interleaved(images)
    if pixels is None:
        return blend(images, grey(images), factor)
    n, h, w, _ = pixels.shape
    planes = cv2.split(_rows(pixels))
    weighted_grey = _grey_plane(planes)
    weighted_grey *= 1.0 - factor
    for plane in planes:
        plane *= factor
        plane += weighted_grey
        np.clip(plane, 0.0, 1.0, out=plane)
    return from_interleaved(cv2.merge(planes).reshape(n, h, w, 3))


def channel_affine(images: Tensor, offset: Tensor, scale: Tensor) -> Tensor:
    """``clamp((images - offset) * scale, 0, 1)`` with ``offset`` and ``scale`` ``[N, C, 1, 1]``."""
    pixels = interleaved(images)
    if pixels is None:
        return (images - offset).mul_(scale).clamp_(0.0, 1.0)
    n, h, w, c = pixels.shape
    flat = pixels.reshape(n, h * w * c)
    out = np.empty_like(flat)
    whole = h * w // _RUN * _RUN * c  # runs of _RUN pixels, then the remaining pixels one by one
    for start, stop, run in ((0, whole, _RUN), (whole, h * w * c, 1)):
        if stop == start:
            continue
        src = flat[:, start:stop].reshape(n, -1, run * c)
        dst = out[:, start:stop].reshape(n, -1, run * c)  # splits a contiguous axis: a view
        np.subtract(src, np.tile(offset.view(n, 1, c).numpy(), (1, 1, run)), out=dst)
        dst *= np.tile(scale.view(n, 1, c).numpy(), (1, 1, run))
        np.clip(dst, 0.0, 1.0, out=dst)
    return from_interleaved(out.reshape(n, h, w, c))
