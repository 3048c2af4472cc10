"""What both deformable-attention cores accept (:mod:`lib.models.mask2former.ms_deform_attn`, the
PyTorch path and the dispatch, and :mod:`lib.models.mask2former.ms_deform_attn_triton`, the kernel),
kept apart so that neither core module imports the other back."""

from __future__ import annotations

import torch

TRITON_DTYPES = (torch.float32, torch.float64)
"""The dtypes the Triton kernel computes in (the pixel decoder runs in float32 under autocast too)."""


def check_spatial_shapes(value: torch.Tensor, spatial_shapes: list[tuple[int, int]], n_levels: int) -> None:
    """A ``ValueError`` unless ``spatial_shapes`` has ``n_levels`` levels that tile ``value``'s length."""
    s = value.shape[1]
    if len(spatial_shapes) != n_levels or sum(h * w for h, w in spatial_shapes) != s:
        raise ValueError(
            f"spatial_shapes {spatial_shapes} do not match value length {s} and {n_levels} sampling levels"
        )
