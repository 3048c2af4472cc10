"""Hungarian matching of predicted masks to ground-truth masks (DETR / Mask2Former Sec. 3.3).

The cost of assigning query q to target t is ``w_class * (-p_q(c_t)) + w_mask * BCE + w_dice * dice``,
with the mask terms computed on the same uniformly sampled points for every pair. The assignment
is scipy's ``linear_sum_assignment``, without gradients.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from lib.models.mask2former.point_sampling import point_sample


def sigmoid_bce_cost(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean BCE over points of every pair: ``logits [Q, P]``, ``targets [T, P]`` -> ``[Q, T]``."""
    pos = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none")
    neg = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none")
    return (pos @ targets.T + neg @ (1 - targets).T) / logits.shape[1]


def dice_cost(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``1 - (2|p∩t| + 1) / (|p| + |t| + 1)`` of every pair, ``p = sigmoid(logits)`` -> ``[Q, T]``."""
    probs = logits.sigmoid()
    numerator = 2 * probs @ targets.T
    denominator = probs.sum(-1)[:, None] + targets.sum(-1)[None, :]
    return 1 - (numerator + 1) / (denominator + 1)


def hungarian_assign(cost: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimum-cost one-to-one assignment of ``cost [Q, T]``: (query indices, target indices), int64,
    ``min(Q, T)`` pairs ordered by query. A non-finite cost is an error (scipy would fail obscurely)."""
    if not torch.isfinite(cost).all():
        raise ValueError("matching cost has NaN or inf entries; check the predicted logits")
    rows, cols = linear_sum_assignment(cost.detach().cpu().double().numpy())
    return torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols.astype(np.int64))


class HungarianMatcher:
    """``matcher(pred_logits [B, Q, K+1], pred_masks [B, Q, h, w], targets) -> [(query_idx, target_idx)]``.

    ``targets``: per image ``{"labels": int64 [T], "masks": float [T, H, W]}`` (masks on the padded
    input grid; points are in normalised coordinates so resolutions may differ).
    """

    def __init__(
        self,
        *,
        cost_class: float = 5.0,
        cost_mask: float = 10.0,
        cost_dice: float = 10.0,
        num_points: int = 12544,
    ) -> None:
        self.cost_class, self.cost_mask, self.cost_dice = cost_class, cost_mask, cost_dice
        self.num_points = num_points

    @torch.no_grad()
    def __call__(
        self,
        pred_logits: torch.Tensor,
        pred_masks: torch.Tensor,
        targets: list[dict[str, torch.Tensor]],
        generator: torch.Generator | None = None,
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        indices = []
        for b, target in enumerate(targets):
            labels, masks = target["labels"], target["masks"]
            if labels.numel() == 0:
                empty = torch.zeros(0, dtype=torch.int64)
                indices.append((empty, empty))
                continue
            coords = torch.rand(1, self.num_points, 2, generator=generator, device=pred_masks.device)
            out = point_sample(pred_masks[b].float(), coords.expand(pred_masks.shape[1], -1, -1))
            tgt = point_sample(masks.float(), coords.expand(masks.shape[0], -1, -1))
            cost = (
                self.cost_class * -pred_logits[b].float().softmax(-1)[:, labels]
                + self.cost_mask * sigmoid_bce_cost(out, tgt)
                + self.cost_dice * dice_cost(out, tgt)
            )
            indices.append(hungarian_assign(cost))
        return indices
