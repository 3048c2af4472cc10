"""Masked-attention transformer decoder with global mask attention (Mask2Former, Cheng et al. 2022,
Sec. 3.2; Mask2Anomaly, Rai et al. 2023, Sec. 3.1 "global masked attention").

Each of the 9 layers cross-attends one feature level (1/32, 1/16, 1/8 in turn), then applies
self-attention and an FFN, all post-norm. The global-mask-attention cross-attention is two masked
attentions summed: the foreground one attends where the previous mask prediction is >= 0.5, the
background one where it is <= 0.5. After the learnable queries and after every layer, the
prediction heads give class logits (``class_embed``, 19 classes + no-object) and mask logits
(``mask_embed`` dotted with the 1/4 mask features); after every layer the OOD head
``class_embed2`` classifies the same normalised queries and shares the mask embedding, so the
OOD masks equal the main masks.

The published decoder also builds a ``fusion_layer`` conv per layer that its forward never calls;
it is not built here: ``Mask2Anomaly.adapt_state_dict`` drops those checkpoint entries by name.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from lib.models.mask2former.position_encoding import PositionEmbeddingSine


class SelfAttentionLayer(nn.Module):
    """``LN(x + MHA(q=k=x+pos, v=x))`` over the queries, layout ``[Q, B, C]``."""

    def __init__(self, *, d_model: int, nhead: int) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead)
        self.norm = nn.LayerNorm(d_model)
        _xavier_init(self)

    def forward(self, tgt: torch.Tensor, query_pos: torch.Tensor) -> torch.Tensor:
        q = tgt + query_pos
        return self.norm(tgt + self.self_attn(q, q, tgt, need_weights=False)[0])


class GlobalMaskedCrossAttentionLayer(nn.Module):
    """``LN(x + MHA_fg(x, memory; mask_fg) + MHA_bg(x, memory; mask_bg))``.

    ``mask_fg`` / ``mask_bg``: bool ``[B*heads, Q, HW]``, True = not allowed to attend.
    """

    def __init__(self, *, d_model: int, nhead: int) -> None:
        super().__init__()
        self.multihead_attn_foreground = nn.MultiheadAttention(d_model, nhead)
        self.multihead_attn_background = nn.MultiheadAttention(d_model, nhead)
        self.norm = nn.LayerNorm(d_model)
        _xavier_init(self)

    def forward(
        self,
        tgt: torch.Tensor,
        memory: torch.Tensor,
        *,
        mask_fg: torch.Tensor,
        mask_bg: torch.Tensor,
        pos: torch.Tensor,
        query_pos: torch.Tensor,
    ) -> torch.Tensor:
        q, k = tgt + query_pos, memory + pos
        fg = self.multihead_attn_foreground(q, k, memory, attn_mask=mask_fg, need_weights=False)[0]
        bg = self.multihead_attn_background(q, k, memory, attn_mask=mask_bg, need_weights=False)[0]
        return self.norm(tgt + (fg + bg))


class FFNLayer(nn.Module):
    """``LN(x + W2 ReLU(W1 x))``."""

    def __init__(self, *, d_model: int, dim_feedforward: int) -> None:
        super().__init__()
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm = nn.LayerNorm(d_model)
        _xavier_init(self)

    def forward(self, tgt: torch.Tensor) -> torch.Tensor:
        return self.norm(tgt + self.linear2(F.relu(self.linear1(tgt))))


class MLP(nn.Module):
    """``num_layers`` linear layers with ReLU between them (the mask embedding)."""

    def __init__(self, *, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == len(self.layers) - 1 else F.relu(layer(x))
        return x


def _xavier_init(module: nn.Module) -> None:
    for p in module.parameters():
        if p.dim() > 1:
            nn.init.xavier_uniform_(p)


def attention_masks(
    mask_logits: torch.Tensor, size: tuple[int, int], num_heads: int
) -> tuple[torch.Tensor, ...]:
    """Foreground and background attention masks from mask logits ``[B, Q, h, w]``.

    Returns two detached bool ``[B*num_heads, Q, H*W]`` (True = blocked) at ``size``: foreground
    blocks where ``sigmoid < 0.5``, background where ``sigmoid > 0.5``; a row that would block
    every position is cleared (attend everywhere), separately for each mask.
    """
    with torch.no_grad():
        prob = (
            F.interpolate(mask_logits, size=size, mode="bilinear", align_corners=False).sigmoid().flatten(2)
        )
        masks = []
        for blocked in (prob < 0.5, prob > 0.5):
            blocked = blocked & ~blocked.all(-1, keepdim=True)
            masks.append(blocked.repeat_interleave(num_heads, dim=0))
    return tuple(masks)


class MaskedTransformerDecoderGMA(nn.Module):
    """Decoder ``forward(multi_scale, mask_features) -> outputs dict``.

    Inputs: ``multi_scale`` = per-level ``[B, C, H_l, W_l]`` (1/32, 1/16, 1/8), ``mask_features``
    ``[B, mask_dim, H/4, W/4]``. Outputs: ``pred_logits`` / ``pred_logits_ood`` ``[B, Q, K+1]`` and
    ``pred_masks`` ``[B, Q, H/4, W/4]`` of the last layer, and ``aux_outputs``: the published
    pairing of main prediction i (i = 0 is the learnable queries) with the OOD prediction after
    layer i + 1, for i < num_layers - 1.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        hidden_dim: int = 256,
        num_queries: int = 100,
        nheads: int = 8,
        dim_feedforward: int = 2048,
        dec_layers: int = 9,
        mask_dim: int = 256,
        num_feature_levels: int = 3,
    ) -> None:
        super().__init__()
        self.num_heads = nheads
        self.num_layers = dec_layers
        self.num_feature_levels = num_feature_levels
        self.pe_layer = PositionEmbeddingSine(num_pos_feats=hidden_dim // 2)
        self.transformer_self_attention_layers = nn.ModuleList(
            SelfAttentionLayer(d_model=hidden_dim, nhead=nheads) for _ in range(dec_layers)
        )
        self.transformer_cross_attention_layers = nn.ModuleList(
            GlobalMaskedCrossAttentionLayer(d_model=hidden_dim, nhead=nheads) for _ in range(dec_layers)
        )
        self.transformer_ffn_layers = nn.ModuleList(
            FFNLayer(d_model=hidden_dim, dim_feedforward=dim_feedforward) for _ in range(dec_layers)
        )
        self.decoder_norm = nn.LayerNorm(hidden_dim)
        self.query_feat = nn.Embedding(num_queries, hidden_dim)
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        self.level_embed = nn.Embedding(num_feature_levels, hidden_dim)
        self.class_embed = nn.Linear(hidden_dim, num_classes + 1)
        self.mask_embed = MLP(in_dim=hidden_dim, hidden_dim=hidden_dim, out_dim=mask_dim, num_layers=3)
        self.class_embed2 = nn.Linear(hidden_dim, num_classes + 1)

    def _heads(self, output: torch.Tensor, mask_features: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``output [Q, B, C]`` -> (normalised queries ``[B, Q, C]``, class logits, mask logits)."""
        decoded = self.decoder_norm(output).transpose(0, 1)
        masks = torch.einsum("bqc,bchw->bqhw", self.mask_embed(decoded), mask_features)
        return decoded, self.class_embed(decoded), masks

    def forward(self, multi_scale: list[torch.Tensor], mask_features: torch.Tensor) -> dict[str, object]:
        if len(multi_scale) != self.num_feature_levels:
            raise ValueError(f"expected {self.num_feature_levels} feature levels, got {len(multi_scale)}")
        sizes = [tuple(x.shape[-2:]) for x in multi_scale]
        src = [
            (x.flatten(2) + self.level_embed.weight[i][None, :, None]).permute(2, 0, 1)
            for i, x in enumerate(multi_scale)
        ]
        pos = [self.pe_layer(x).flatten(2).permute(2, 0, 1) for x in multi_scale]
        b = mask_features.shape[0]
        query_pos = self.query_embed.weight.unsqueeze(1).expand(-1, b, -1)
        output = self.query_feat.weight.unsqueeze(1).expand(-1, b, -1)

        _, logits, masks = self._heads(output, mask_features)
        class_list, mask_list, ood_list = [logits], [masks], []
        for i in range(self.num_layers):
            level = i % self.num_feature_levels
            mask_fg, mask_bg = attention_masks(masks, sizes[level], self.num_heads)
            output = self.transformer_cross_attention_layers[i](
                output, src[level], mask_fg=mask_fg, mask_bg=mask_bg, pos=pos[level], query_pos=query_pos
            )
            output = self.transformer_self_attention_layers[i](output, query_pos)
            output = self.transformer_ffn_layers[i](output)
            decoded, logits, masks = self._heads(output, mask_features)
            class_list.append(logits)
            mask_list.append(masks)
            ood_list.append(self.class_embed2(decoded))
        aux = [
            {"pred_logits": c, "pred_masks": m, "pred_logits_ood": o, "pred_masks_ood": mo}
            for c, m, o, mo in zip(class_list[:-1], mask_list[:-1], ood_list[:-1], mask_list[1:-1])
        ]
        return {
            "pred_logits": class_list[-1],
            "pred_masks": mask_list[-1],
            "pred_logits_ood": ood_list[-1],
            "pred_masks_ood": mask_list[-1],
            "aux_outputs": aux,
        }
