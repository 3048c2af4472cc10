"""Mask2Former anomaly scores from the mask-classification outputs: confidence and RbA.

Mask2Former predicts ``Q`` queries, each with class logits ``pred_logits [B, Q, K+1]`` (``K`` known
classes plus "no object", last) and a mask logit map ``pred_masks [B, Q, H, W]``. The per-class
mask score of a pixel is ``s_c = Σ_q softmax(pred_logits)_{q,c} · sigmoid(pred_masks)_q`` over the
``K`` known classes (the no-object column is dropped after the softmax); it lies in ``[0, Q]``,
not in ``[0, 1]``. Two anomaly scores build on it, both higher = more anomalous:

- :func:`mask_confidence`: ``1 − max_c s_c``, the mask-classification confidence score of
  Mask2Anomaly (Rai et al. 2023); negative where several queries agree on a class;
- :func:`rba`: "Rejected by All" (Nayal et al. 2023), ``−Σ_c tanh(s_c)``: a pixel that no class
  claims scores near 0, one claimed by any class near −1 or lower.

Callers pass the mask logits at the resolution to be scored (upsampled and cropped as the model
does). Queries are folded in chunks, so only ``[B, chunk, H, W]`` sigmoid maps exist at once
next to the ``[B, K, H, W]`` result.
"""

from __future__ import annotations

import torch

QUERY_CHUNK = 16


def mask_class_scores(pred_logits: torch.Tensor, pred_masks: torch.Tensor) -> torch.Tensor:
    """Per-class mask scores ``s [B, K, H, W]`` (float32) from ``pred_logits [B, Q, K+1]`` and mask
    logits ``pred_masks [B, Q, H, W]``."""
    if pred_logits.ndim != 3 or pred_masks.ndim != 4:
        raise ValueError(
            f"expected pred_logits [B,Q,K+1] and pred_masks [B,Q,H,W], got shapes "
            f"{tuple(pred_logits.shape)} and {tuple(pred_masks.shape)}"
        )
    if pred_logits.shape[:2] != pred_masks.shape[:2]:
        raise ValueError(
            f"pred_logits {tuple(pred_logits.shape)} and pred_masks {tuple(pred_masks.shape)} "
            "disagree on batch size or number of queries"
        )
    if pred_logits.shape[2] < 2:
        raise ValueError(f"pred_logits needs K known classes + no-object (>= 2), got {pred_logits.shape[2]}")
    probs = torch.softmax(pred_logits.float(), dim=-1)[..., :-1]
    b, q, h, w = pred_masks.shape
    scores = pred_masks.new_zeros((b, probs.shape[-1], h, w), dtype=torch.float32)
    for start in range(0, q, QUERY_CHUNK):
        stop = min(start + QUERY_CHUNK, q)
        masks = pred_masks[:, start:stop].float().sigmoid()
        scores += torch.einsum("bqk,bqhw->bkhw", probs[:, start:stop], masks)
    return scores


def mask_confidence(pred_logits: torch.Tensor, pred_masks: torch.Tensor) -> torch.Tensor:
    """``1 − max_c s_c`` ``[B, H, W]``: low mask-classification confidence is anomalous."""
    return 1.0 - mask_class_scores(pred_logits, pred_masks).amax(dim=1)


def rba(pred_logits: torch.Tensor, pred_masks: torch.Tensor) -> torch.Tensor:
    """``−Σ_c tanh(s_c)`` ``[B, H, W]``: rejected by all known classes is anomalous."""
    return -torch.tanh(mask_class_scores(pred_logits, pred_masks)).sum(dim=1)
