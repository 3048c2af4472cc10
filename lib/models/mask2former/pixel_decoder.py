"""Multi-scale deformable-attention pixel decoder (Mask2Former, Cheng et al. 2022, Sec. 3.2 / 4.1).

A deformable-attention encoder refines the 1/32, 1/16 and 1/8 backbone maps jointly; an FPN step
adds the 1/4 map (``res2``) to produce the per-pixel ``mask_features`` that every query's mask
embedding is dotted with. Parameter names follow the published ``MSDeformAttnPixelDecoder``.
No padding mask is used anywhere (the published model pads with zeros and attends over them).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from lib.models.mask2former.backbone import ConvNorm
from lib.models.mask2former.ms_deform_attn import MSDeformAttn
from lib.models.mask2former.position_encoding import PositionEmbeddingSine


class DeformableEncoderLayer(nn.Module):
    """Post-norm layer: ``LN(src + MSDeformAttn(src + pos, src))`` then ``LN(src + FFN(src))``."""

    def __init__(
        self, *, d_model: int, ffn_dim: int, n_levels: int, n_heads: int, n_points: int, deform_attn: str
    ) -> None:
        super().__init__()
        self.self_attn = MSDeformAttn(
            d_model=d_model, n_levels=n_levels, n_heads=n_heads, n_points=n_points, deform_attn=deform_attn
        )
        self.norm1 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, d_model)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(
        self,
        src: torch.Tensor,
        pos: torch.Tensor,
        reference_points: torch.Tensor,
        spatial_shapes: list[tuple[int, int]],
    ) -> torch.Tensor:
        """``src``, ``pos``: ``[B, S, C]``; ``reference_points [B, S, L, 2]`` -> ``[B, S, C]``."""
        src = self.norm1(src + self.self_attn(src + pos, reference_points, src, spatial_shapes))
        return self.norm2(src + self.linear2(F.relu(self.linear1(src))))


class DeformableEncoder(nn.Module):
    """Level embeddings plus a stack of deformable encoder layers over flattened levels."""

    def __init__(
        self,
        *,
        d_model: int,
        ffn_dim: int,
        num_layers: int,
        n_levels: int,
        n_heads: int,
        n_points: int,
        deform_attn: str,
    ) -> None:
        super().__init__()
        self.level_embed = nn.Parameter(torch.empty(n_levels, d_model))
        nn.init.normal_(self.level_embed)
        self.encoder = nn.Module()
        self.encoder.layers = nn.ModuleList(
            DeformableEncoderLayer(
                d_model=d_model,
                ffn_dim=ffn_dim,
                n_levels=n_levels,
                n_heads=n_heads,
                n_points=n_points,
                deform_attn=deform_attn,
            )
            for _ in range(num_layers)
        )

    def forward(self, srcs: list[torch.Tensor], pos_embeds: list[torch.Tensor]) -> list[torch.Tensor]:
        """``srcs``, ``pos_embeds``: per level ``[B, C, H_l, W_l]`` -> refined maps, same shapes."""
        spatial_shapes = [(s.shape[2], s.shape[3]) for s in srcs]
        src = torch.cat([s.flatten(2).transpose(1, 2) for s in srcs], 1)
        pos = torch.cat(
            [
                p.flatten(2).transpose(1, 2) + self.level_embed[lvl].view(1, 1, -1)
                for lvl, p in enumerate(pos_embeds)
            ],
            1,
        )
        reference_points = _reference_points(spatial_shapes, src.device, src.dtype)
        reference_points = reference_points[None, :, None, :].expand(src.shape[0], -1, len(srcs), -1)
        for layer in self.encoder.layers:
            src = layer(src, pos, reference_points, spatial_shapes)
        b, _, c = src.shape
        maps = src.split([h * w for h, w in spatial_shapes], dim=1)
        return [m.transpose(1, 2).reshape(b, c, h, w) for m, (h, w) in zip(maps, spatial_shapes)]


def _reference_points(
    spatial_shapes: list[tuple[int, int]], device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """Pixel centres ``((j + 0.5) / W_l, (i + 0.5) / H_l)`` of every level, ``[S, 2]``."""
    points = []
    for h, w in spatial_shapes:
        ref_y, ref_x = torch.meshgrid(
            torch.arange(h, dtype=dtype, device=device) + 0.5,
            torch.arange(w, dtype=dtype, device=device) + 0.5,
            indexing="ij",
        )
        points.append(torch.stack((ref_x.reshape(-1) / w, ref_y.reshape(-1) / h), -1))
    return torch.cat(points, 0)


class MSDeformAttnPixelDecoder(nn.Module):
    """Pixel decoder: ``forward(features) -> (mask_features [B, mask_dim, H/4, W/4], multi_scale)``.

    ``features`` maps ``res2..res5`` to backbone maps; ``multi_scale`` is the list of encoder
    outputs at 1/32, 1/16, 1/8 (``[B, conv_dim, H_l, W_l]``), the order the decoder cycles through.
    Runs in float32 whatever the autocast state, as the published decoder does. ``deform_attn``
    selects the deformable-attention core (``auto``, ``pytorch``, ``triton``; see ``ms_deform_attn``).
    """

    def __init__(
        self,
        *,
        in_channels: dict[str, int],
        conv_dim: int = 256,
        mask_dim: int = 256,
        num_groups: int = 32,
        encoder_layers: int = 6,
        encoder_ffn_dim: int = 1024,
        encoder_heads: int = 8,
        encoder_points: int = 4,
        deform_attn: str = "auto",
    ) -> None:
        super().__init__()
        expected = ["res2", "res3", "res4", "res5"]
        if sorted(in_channels) != expected:
            raise ValueError(f"in_channels must have keys {expected}, got {sorted(in_channels)}")
        self.encoder_features = ["res5", "res4", "res3"]  # low resolution first
        self.input_proj = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(in_channels[f], conv_dim, kernel_size=1), nn.GroupNorm(num_groups, conv_dim)
            )
            for f in self.encoder_features
        )
        for proj in self.input_proj:
            nn.init.xavier_uniform_(proj[0].weight, gain=1)
            nn.init.zeros_(proj[0].bias)
        self.pe_layer = PositionEmbeddingSine(num_pos_feats=conv_dim // 2)
        self.transformer = DeformableEncoder(
            d_model=conv_dim,
            ffn_dim=encoder_ffn_dim,
            num_layers=encoder_layers,
            n_levels=len(self.encoder_features),
            n_heads=encoder_heads,
            n_points=encoder_points,
            deform_attn=deform_attn,
        )
        self.mask_features = nn.Conv2d(conv_dim, mask_dim, kernel_size=1)
        self.adapter_1 = ConvNorm(
            in_channels["res2"], conv_dim, kernel_size=1, norm=nn.GroupNorm(num_groups, conv_dim)
        )
        self.layer_1 = ConvNorm(conv_dim, conv_dim, kernel_size=3, norm=nn.GroupNorm(num_groups, conv_dim))
        for conv in (self.mask_features, self.adapter_1, self.layer_1):
            nn.init.kaiming_uniform_(conv.weight, a=1)
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)

    @torch.autocast("cuda", enabled=False)
    @torch.autocast("cpu", enabled=False)
    def forward(self, features: dict[str, torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        srcs, pos = [], []
        for proj, name in zip(self.input_proj, self.encoder_features):
            x = features[name].float()
            srcs.append(proj(x))
            pos.append(self.pe_layer(x))
        multi_scale = self.transformer(srcs, pos)
        lateral = self.adapter_1(features["res2"].float())
        y = lateral + F.interpolate(
            multi_scale[-1], size=lateral.shape[-2:], mode="bilinear", align_corners=False
        )
        y = F.relu(self.layer_1(y))
        return self.mask_features(y), multi_scale
