"""Pictures: anomaly heat maps over the image, colourised segmentations, PNG output.

All functions take and return numpy arrays (``[H, W, 3]`` uint8 RGB), so they serve the evaluator,
the prediction tool and notebooks alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
import torch
from PIL import Image

from lib.atomic import atomic_open
from lib.labels import colorize


def denormalize(image: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """A normalised ``[3, H, W]`` float image back to ``[H, W, 3]`` uint8 RGB."""
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"expected an image [3,H,W], got shape {tuple(image.shape)}")
    m = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    rgb = (image.detach().float().cpu() * s + m).clamp_(0.0, 1.0).mul_(255.0).round_()
    return rgb.to(torch.uint8).permute(1, 2, 0).numpy()


def colormap(values: np.ndarray, *, vmin: float, vmax: float, cmap: str = "inferno") -> np.ndarray:
    """Map ``[H, W]`` values linearly from ``[vmin, vmax]`` onto a matplotlib colour map: ``[H, W, 3]``."""
    if not vmax > vmin:
        vmax = vmin + 1.0
    lut = (matplotlib.colormaps[cmap](np.linspace(0.0, 1.0, 256))[:, :3] * 255.0).round().astype(np.uint8)
    index = np.clip((np.asarray(values, dtype=np.float64) - vmin) / (vmax - vmin), 0.0, 1.0)
    return lut[(index * 255.0).round().astype(np.int64)]


def heatmap_overlay(
    image: np.ndarray,
    score: np.ndarray,
    *,
    alpha: float = 0.5,
    vmin: float | None = None,
    vmax: float | None = None,
    cmap: str = "inferno",
) -> np.ndarray:
    """Blend the colour-mapped anomaly ``score [H, W]`` over ``image [H, W, 3]`` uint8.

    Without ``vmin``/``vmax`` the map spans the image's own 1st..99th score percentiles, so a few
    extreme pixels do not wash out the rest; ``alpha`` is the weight of the heat map.
    """
    score = np.asarray(score, dtype=np.float64)
    if image.shape[:2] != score.shape or image.ndim != 3:
        raise ValueError(f"image {image.shape} and score {score.shape} must share height and width")
    lo, hi = np.percentile(score, [1.0, 99.0]) if score.size else (0.0, 1.0)
    heat = colormap(score, vmin=lo if vmin is None else vmin, vmax=hi if vmax is None else vmax, cmap=cmap)
    return (
        ((1.0 - alpha) * image.astype(np.float32) + alpha * heat.astype(np.float32)).round().astype(np.uint8)
    )


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
