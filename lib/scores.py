"""Anomaly scores: pure functions ``(logits, anomaly_score) -> anomaly map``, chosen by name.

Every model returns ``(anomaly_score [B,H,W], logits [B,C,H,W])``. A score function turns those into
one ``[B,H,W]`` float32 map where a higher value means "more anomalous". ``learned`` is the model's
own head (the energy of the OOD head for DeepLab, the mask-based score for Mask2Former); the others
are the classic baselines computed from the classifier logits alone, so any model can be scored
with them (Hendrycks & Gimpel's MSP, Hendrycks et al.'s max-logit, entropy, Liu et al.'s energy).
``mask_confidence`` and ``rba`` are for mask-classification models (Mask2Former) only: there the
eval-mode "logits" are the per-class mask scores ``s_c = Σ_q softmax · sigmoid`` and the formulas
of :mod:`lib.scores_m2f` apply to them; on a per-pixel classifier's logits they mean nothing.
Logits are cast to float32 first so bf16/fp16 inference gives the same ranking as float32.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from lib.registry import Registry
from lib.scores_m2f import confidence_from_class_scores, rba_from_class_scores

ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

SCORES: Registry[ScoreFn] = Registry("anomaly score")
register_score = SCORES.register
get_score = SCORES.get

CLASSIFIER_SCORES = frozenset({"msp", "maxlogit", "entropy", "energy", "mask_confidence", "rba"})
"""The built-in scores that read only the classifier's logits, never the OOD head."""


def reads_ood_head(name: str) -> bool:
    """Whether score ``name`` may read the model's OOD head (``learned``, and any score registered
    outside this module): only then must the weights hold a trained head."""
    return name not in CLASSIFIER_SCORES


def free_energy(logits: torch.Tensor) -> torch.Tensor:
    """``-logsumexp_c logits_c`` over the class dim ``1``: ``[B, C, H, W] -> [B, H, W]``, higher = more
    anomalous. The one place of the energy formula (DeepLab's learned OOD score uses it too)."""
    return -torch.logsumexp(logits, dim=1)


def _check_logits(logits: torch.Tensor) -> torch.Tensor:
    if logits.ndim != 4:
        raise ValueError(f"expected logits [B,C,H,W], got shape {tuple(logits.shape)}")
    return logits.float()


@register_score("learned")
def learned(logits: torch.Tensor, anomaly_score: torch.Tensor) -> torch.Tensor:
    """The model's own anomaly score ``[B,H,W]`` (already higher = more anomalous)."""
    if anomaly_score.ndim != 3:
        raise ValueError(f"expected anomaly_score [B,H,W], got shape {tuple(anomaly_score.shape)}")
    return anomaly_score.float()


@register_score("msp")
def msp(logits: torch.Tensor, anomaly_score: torch.Tensor) -> torch.Tensor:
    """``1 - max_c softmax(logits)_c``: low confidence of the predicted class."""
    return 1.0 - torch.softmax(_check_logits(logits), dim=1).amax(dim=1)


@register_score("maxlogit")
def maxlogit(logits: torch.Tensor, anomaly_score: torch.Tensor) -> torch.Tensor:
    """``-max_c logits_c``: a small winning logit is anomalous."""
    return -_check_logits(logits).amax(dim=1)


@register_score("entropy")
def entropy(logits: torch.Tensor, anomaly_score: torch.Tensor) -> torch.Tensor:
    """``-sum_c p_c log p_c`` of the softmax (natural log; 0 for a one-hot prediction)."""
    log_p = torch.log_softmax(_check_logits(logits), dim=1)
    return -(log_p.exp() * log_p).sum(dim=1)


@register_score("energy")
def energy(logits: torch.Tensor, anomaly_score: torch.Tensor) -> torch.Tensor:
    """:func:`free_energy` of the classifier logits (temperature 1)."""
    return free_energy(_check_logits(logits))


@register_score("mask_confidence")
def mask_confidence(logits: torch.Tensor, anomaly_score: torch.Tensor) -> torch.Tensor:
    """``1 - max_c s_c`` of Mask2Former's per-class mask scores ``s`` (its eval-mode logits);
    Mask2Anomaly's score. Only meaningful for mask-classification models."""
    return confidence_from_class_scores(_check_logits(logits))


@register_score("rba")
def rba(logits: torch.Tensor, anomaly_score: torch.Tensor) -> torch.Tensor:
    """``-Σ_c tanh(s_c)`` of Mask2Former's per-class mask scores ``s`` (its eval-mode logits);
    "Rejected by All". Only meaningful for mask-classification models."""
    return rba_from_class_scores(_check_logits(logits))
