"""Sine positional encoding of a feature map (DETR, Carion et al. 2020, Sec. A.4).

Mask2Former's form: no padding mask, normalised positions ``cumsum / (last + 1e-6) * 2π``, sin and
cos interleaved per frequency, the y half before the x half.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn


class PositionEmbeddingSine(nn.Module):
    """``forward(x [B, C, H, W]) -> [B, 2*num_pos_feats, H, W]`` float32; only the shape of ``x`` is read."""

    def __init__(
        self, *, num_pos_feats: int, temperature: float = 10000.0, scale: float = 2 * math.pi
    ) -> None:
        super().__init__()
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        eps = 1e-6
        y_embed = torch.arange(1, h + 1, device=x.device, dtype=torch.float32)
        x_embed = torch.arange(1, w + 1, device=x.device, dtype=torch.float32)
        y_embed = y_embed / (y_embed[-1:] + eps) * self.scale
        x_embed = x_embed / (x_embed[-1:] + eps) * self.scale
        dim_t = torch.arange(self.num_pos_feats, device=x.device, dtype=torch.float32)
        dim_t = self.temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / self.num_pos_feats)
        pos_y = _interleave_sin_cos(y_embed[:, None] / dim_t)  # [H, F]
        pos_x = _interleave_sin_cos(x_embed[:, None] / dim_t)  # [W, F]
        pos = torch.cat(
            (pos_y[:, None, :].expand(h, w, -1), pos_x[None, :, :].expand(h, w, -1)), dim=-1
        )  # [H, W, 2F]
        return pos.permute(2, 0, 1).unsqueeze(0).expand(b, -1, -1, -1)


def _interleave_sin_cos(angles: torch.Tensor) -> torch.Tensor:
    """``[N, F]`` angles -> ``[N, F]`` with sin of even and cos of odd columns, interleaved."""
    return torch.stack((angles[:, 0::2].sin(), angles[:, 1::2].cos()), dim=-1).flatten(1)
