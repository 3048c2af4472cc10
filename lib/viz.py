"""Image helpers: de-normalised inputs, colourised segmentations, PNG output.

All functions return numpy arrays (``[H, W, 3]`` uint8 RGB), so they serve the evaluator, the
prediction tool and notebooks alike; the figures people read are drawn by :mod:`lib.panels` and
:mod:`lib.plots`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lib.atomic import atomic_open
from lib.image_tensor import channel_stats
from lib.labels import colorize


def denormalize(image: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """A normalised ``[3, H, W]`` float image back to ``[H, W, 3]`` uint8 RGB: the inverse of
    :func:`lib.image_tensor.rgb_to_normalized` (rounded, clipped to ``0..255``)."""
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"expected an image [3,H,W], got shape {tuple(image.shape)}")
    m, s = channel_stats(mean, std)
    rgb = (image.detach().float().cpu() * s + m).clamp_(0.0, 1.0).mul_(255.0).round_()
    return rgb.to(torch.uint8).permute(1, 2, 0).numpy()


def colorize_segmentation(pred: np.ndarray | torch.Tensor) -> np.ndarray:
    """A trainId map ``[H, W]`` in the Cityscapes colours: ``[H, W, 3]`` uint8."""
    if isinstance(pred, torch.Tensor):
        pred = pred.detach().cpu().numpy()
    return colorize(pred)


def save_png(path: str | Path, rgb: np.ndarray) -> Path:
    """Write ``[H, W, 3]`` uint8 RGB (or ``[H, W]`` grey) as PNG atomically, creating the folder."""
    with atomic_open(path, "wb") as handle:
        Image.fromarray(np.ascontiguousarray(rgb)).save(handle, format="PNG")
    return Path(path)
