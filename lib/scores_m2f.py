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

The formulas on ``s`` live in :func:`confidence_from_class_scores` and :func:`rba_from_class_scores`
(the one place; :mod:`lib.scores` registers them as ``eval.score = mask_confidence | rba`` on the
model's eval-mode "logits", which for Mask2Former are exactly ``s``). They only make sense for
mask-classification models: on a per-pixel classifier's logits (DeepLab) ``s`` is unbounded and
neither score has its meaning.

:func:`fold_query_masks` is the one implementation of ``s``; the model's own eval-mode output
(:func:`lib.models.mask2former.model.semantic_and_anomaly`) calls it too. Callers pass the mask
logits at the resolution to be scored, or a ``resize`` that brings each chunk of queries there, so
only ``[B, chunk, H, W]`` sigmoid maps exist at once next to the ``[B, K, H, W]`` result.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

QUERY_CHUNK = 16


def mask_class_scores(
    pred_logits: torch.Tensor,
    pred_masks: torch.Tensor,
    *,
    resize: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Per-class mask scores ``s [B, K, H, W]`` (float32) from ``pred_logits [B, Q, K+1]`` and mask
    logits ``pred_masks [B, Q, h, w]``; ``resize`` maps a chunk of mask logits to the scored
    ``[H, W]`` (identity when omitted)."""
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
    return fold_query_masks(known_class_probs(pred_logits), pred_masks, resize=resize)


def known_class_probs(pred_logits: torch.Tensor) -> torch.Tensor:
    """``softmax(pred_logits)`` over ``K+1`` classes with the no-object column dropped: ``[B, Q, K]``."""
    return torch.softmax(pred_logits.float(), dim=-1)[..., :-1]


def fold_query_masks(
    probs: torch.Tensor,
    pred_masks: torch.Tensor,
    *,
    resize: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """``Σ_q probs[b, q, c] · sigmoid(resize(pred_masks))[b, q]``: ``[B, C, H, W]`` float32.

    ``probs [B, Q, C]`` may hold the known classes of several heads side by side; the queries are
    folded ``QUERY_CHUNK`` at a time and the result stays differentiable.
    """
    scores = None
    for start in range(0, pred_masks.shape[1], QUERY_CHUNK):
        chunk = pred_masks[:, start : start + QUERY_CHUNK]
        if resize is not None:
            chunk = resize(chunk)
        term = torch.einsum("bqk,bqhw->bkhw", probs[:, start : start + QUERY_CHUNK], chunk.float().sigmoid())
        scores = term if scores is None else scores + term
    return scores


def _check_class_scores(scores: torch.Tensor) -> torch.Tensor:
    if scores.ndim != 4:
        raise ValueError(f"expected per-class mask scores s [B,K,H,W], got shape {tuple(scores.shape)}")
    return scores.float()


def confidence_from_class_scores(scores: torch.Tensor) -> torch.Tensor:
    """``1 − max_c s_c`` ``[B, H, W]`` (float32) from per-class mask scores ``s [B, K, H, W]``."""
    return 1.0 - _check_class_scores(scores).amax(dim=1)


def rba_from_class_scores(scores: torch.Tensor) -> torch.Tensor:
    """``−Σ_c tanh(s_c)`` ``[B, H, W]`` (float32) from per-class mask scores ``s [B, K, H, W]``."""
    return -torch.tanh(_check_class_scores(scores)).sum(dim=1)


def mask_confidence(pred_logits: torch.Tensor, pred_masks: torch.Tensor) -> torch.Tensor:
    """``1 − max_c s_c`` ``[B, H, W]``: low mask-classification confidence is anomalous."""
    return confidence_from_class_scores(mask_class_scores(pred_logits, pred_masks))


def rba(pred_logits: torch.Tensor, pred_masks: torch.Tensor) -> torch.Tensor:
    """``−Σ_c tanh(s_c)`` ``[B, H, W]``: rejected by all known classes is anomalous."""
    return rba_from_class_scores(mask_class_scores(pred_logits, pred_masks))
