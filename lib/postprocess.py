"""Optional post-processing of anomaly maps before the metrics (``eval.postprocess``, off by default).

``"gaussian_blur"`` is the smoothing several DeepLab-based anomaly papers apply to their score maps
(PEBAL and its followers: ``torchvision.transforms.GaussianBlur(7, sigma=1)``): a normalised
7x7 Gaussian with sigma 1, separable, with reflect padding at the borders, so it matches that
transform. Results computed with it must say so; the evaluator labels them.

Steps live in the :data:`POSTPROCESS` registry (``maps [B, H, W] -> maps``); a module of one's own
can add one with ``@register_postprocess("name")``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from lib.registry import Registry

POSTPROCESS: Registry[Callable[[torch.Tensor], torch.Tensor]] = Registry(
    "post-processing step", key="eval.postprocess"
)
register_postprocess = POSTPROCESS.register
BLUR_KERNEL_SIZE = 7
BLUR_SIGMA = 1.0


def gaussian_kernel1d(kernel_size: int = BLUR_KERNEL_SIZE, sigma: float = BLUR_SIGMA) -> torch.Tensor:
    """Normalised 1-D Gaussian taps ``[kernel_size]`` (float32) at offsets ``-k//2 .. k//2``."""
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd number, got {kernel_size}")
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    half = kernel_size // 2
    x = torch.arange(-half, half + 1, dtype=torch.float32)
    taps = torch.exp(-0.5 * (x / sigma) ** 2)
    return taps / taps.sum()


@register_postprocess("none")
def no_postprocess(scores: torch.Tensor) -> torch.Tensor:
    """The maps unchanged."""
    return scores


@register_postprocess("gaussian_blur")
def gaussian_blur(
    scores: torch.Tensor, *, kernel_size: int = BLUR_KERNEL_SIZE, sigma: float = BLUR_SIGMA
) -> torch.Tensor:
    """Blur anomaly maps ``[B, H, W]`` (or one ``[H, W]``) with a Gaussian; float32, same shape.

    Reflect padding needs ``H`` and ``W`` larger than ``kernel_size // 2``.
    """
    if scores.ndim not in (2, 3):
        raise ValueError(f"expected anomaly maps [B,H,W] or [H,W], got shape {tuple(scores.shape)}")
    half = kernel_size // 2
    if min(scores.shape[-2:]) <= half:
        raise ValueError(
            f"maps of size {tuple(scores.shape[-2:])} are too small for a {kernel_size}x{kernel_size} "
            f"blur with reflect padding (need both sides > {half})"
        )
    taps = gaussian_kernel1d(kernel_size, sigma).to(scores.device)
    x = scores.float().reshape(-1, 1, *scores.shape[-2:])
    x = F.pad(x, (half, half, half, half), mode="reflect")
    x = F.conv2d(x, taps.view(1, 1, 1, kernel_size))
    x = F.conv2d(x, taps.view(1, 1, kernel_size, 1))
    return x.reshape(scores.shape)


def apply_postprocess(name: str, scores: torch.Tensor) -> torch.Tensor:
    """Apply the ``eval.postprocess`` step ``name`` (see :data:`POSTPROCESS`) to maps ``[B, H, W]``."""
    return POSTPROCESS.get(name)(scores)
