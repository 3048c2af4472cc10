"""uint8 RGB pictures to the float tensors the models read, and back: written once.

Every model input is ``(rgb / 255 - mean) / std`` per channel, channels first. The datasets' joint
transforms (:class:`lib.data.transforms.ToTensor` and ``Normalize``), the prediction tool, the
generation score filter and outlier pasting all build it here, and :func:`lib.viz.denormalize`
inverts it for pictures with the same :func:`channel_stats`, so every place agrees to the last bit.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def rgb_to_unit(rgb: np.ndarray, *, planar: bool = False) -> torch.Tensor:
    """``[..., H, W, 3]`` uint8 RGB -> ``[..., 3, H, W]`` float32 in ``0..1``, channels innermost in
    memory (as OpenCV reads them) or, with ``planar``, contiguous (one plane per channel)."""
    rgb = np.asarray(rgb)
    if rgb.ndim < 3 or rgb.shape[-1] != 3:
        raise ValueError(f"expected RGB pixels [..., H, W, 3], got shape {rgb.shape}")
    pixels = torch.from_numpy(np.ascontiguousarray(rgb)).movedim(-1, -3)
    return (pixels.contiguous() if planar else pixels).float().div_(255.0)


def channel_stats(mean: Sequence[float], std: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """``mean`` and ``std`` as float32 ``[3, 1, 1]`` tensors, broadcasting over ``[..., 3, H, W]``."""
    return (
        torch.tensor(mean, dtype=torch.float32).view(3, 1, 1),
        torch.tensor(std, dtype=torch.float32).view(3, 1, 1),
    )


def normalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``(images - mean) / std`` per channel of ``[..., 3, H, W]`` images in ``0..1``."""
    m, s = channel_stats(mean, std)
    return (images - m.to(images.device)).div_(s.to(images.device))  # one new tensor, divided in place


def rgb_to_normalized(rgb: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``[..., H, W, 3]`` uint8 RGB -> the normalised ``[..., 3, H, W]`` float32 a model reads."""
    return normalize(rgb_to_unit(rgb), mean, std)
