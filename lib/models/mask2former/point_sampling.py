"""Point sampling for mask losses (PointRend, Kirillov et al. 2020; Mask2Former Sec. 3.3).

Mask losses and matching costs are computed on sampled points instead of full masks: uniform
points for matching, importance-sampled uncertain points for the losses, and, on generated images,
low-loss points (MultiShiftSeg's pixel selection in its Mask2Former form).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def point_sample(masks: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Bilinear values of ``masks [N, H, W]`` at ``coords [N, P, 2]`` (x, y in [0, 1]) -> ``[N, P]``."""
    grid = (2.0 * coords - 1.0).unsqueeze(1).to(masks.dtype)
    return F.grid_sample(masks.unsqueeze(1), grid, mode="bilinear", align_corners=False)[:, 0, 0]


def uncertain_point_coords(
    logits: torch.Tensor,
    *,
    num_points: int,
    oversample_ratio: float,
    importance_sample_ratio: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Coordinates ``[N, num_points, 2]``: the ``importance_sample_ratio`` share most uncertain
    (highest ``-|logit|``) of ``oversample_ratio * num_points`` uniform candidates per mask, the
    rest uniform. ``logits``: ``[N, H, W]``."""
    n = logits.shape[0]
    candidates = torch.rand(
        n, int(num_points * oversample_ratio), 2, generator=generator, device=logits.device
    )
    uncertainty = -point_sample(logits, candidates).abs()
    k = int(importance_sample_ratio * num_points)
    idx = uncertainty.topk(k, dim=1).indices
    chosen = candidates.gather(1, idx[..., None].expand(-1, -1, 2))
    uniform = torch.rand(n, num_points - k, 2, generator=generator, device=logits.device)
    return torch.cat([chosen, uniform], 1)


def low_loss_point_coords(
    logits: torch.Tensor,
    targets: torch.Tensor,
    *,
    num_points: int,
    candidate_ratio: float = 1.25,
    keep_ratio: float = 0.95,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Coordinates ``[N, num_points, 2]`` that prefer well-fitted points on noisy (generated) labels:
    the ``keep_ratio * num_points`` lowest-BCE of ``candidate_ratio * num_points`` uniform candidates,
    plus uniform points for the rest. ``logits``, ``targets``: ``[N, H, W]``."""
    n = logits.shape[0]
    candidates = torch.rand(
        n, int(num_points * candidate_ratio), 2, generator=generator, device=logits.device
    )
    bce = F.binary_cross_entropy_with_logits(
        point_sample(logits, candidates), point_sample(targets, candidates), reduction="none"
    )
    k = int(keep_ratio * num_points)
    idx = bce.topk(k, dim=1, largest=False).indices
    chosen = candidates.gather(1, idx[..., None].expand(-1, -1, 2))
    uniform = torch.rand(n, num_points - k, 2, generator=generator, device=logits.device)
    return torch.cat([chosen, uniform], 1)
