"""Relative contrastive loss (RCL) with noise-aware pixel selection (paper Sec. 3.3), as published.

A batch holds ``B`` original images followed by their ``B`` generated twins (same scenes, same crop).
Targets carry trainIds, ``ANOMALY`` (pasted outliers in originals, generated objects in twins) and
``IGNORE``. Three pixel sets feed the RCL on the anomaly score ``u`` (higher = more anomalous):
Omega_in (known pixels of originals), Omega_aug (known pixels of generated images) and Omega_out
(anomaly pixels of both halves):

    rcl_in   = mean relu(u_in  + m0 - u_out)       over n random (in, out) pairs
    rcl_aug  = mean relu(u_aug + m1 - u_out)       over n random (aug, out) pairs
    rcl_pair = mean relu(u_aug - u_in - m2)        over pixels known in an original and its twin

with ``n = min(|Omega_in|, |Omega_aug|, |Omega_out|)``: each set is shuffled independently and cut to
``n``; the i-th samples are paired (the same anomaly samples serve both first terms). Total:
``L = ce_weights[0] * ce_orig + ce_weights[1] * ce_gen + rcl_in + rcl_aug + rcl_pair``.

Where the paper and the published code differ, this follows the code (it produced the released
weights): the paper sums over all pairs, the code samples ``n`` pairs and averages; the paper writes
the third margin with the opposite sign (``margins=(m0, m1, -m2)`` gives the paper's form); the paper's
energy has no minus sign (the score here is already "higher = more anomalous"). Unlike the code, a
term whose pixel set is empty is left out instead of becoming NaN, and the caller's targets are not
modified.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from lib.labels import ANOMALY, IGNORE, NUM_CLASSES


def pixel_groups(targets: torch.Tensor, num_classes: int = NUM_CLASSES) -> tuple[torch.Tensor, torch.Tensor]:
    """Check ``targets`` (int64 ``[N, H, W]``) and return the masks (known pixels, anomaly pixels)."""
    if targets.dtype != torch.int64 or targets.dim() != 3:
        raise ValueError(f"targets must be int64 [N, H, W], got {targets.dtype} {list(targets.shape)}")
    known = (targets >= 0) & (targets < num_classes)
    anomaly = targets == ANOMALY
    invalid = ~(known | anomaly | (targets == IGNORE))
    if invalid.any():
        values = torch.unique(targets[invalid])[:10].tolist()
        raise ValueError(
            f"targets hold values {values}; expected trainIds 0..{num_classes - 1}, {ANOMALY} (anomaly) "
            f"or {IGNORE} (ignore)"
        )
    return known, anomaly


def _split_pairs(x: torch.Tensor, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``[2B, ...]`` -> (originals ``[B, ...]``, generated twins ``[B, ...]``)."""
    if x.shape[0] % 2 or x.shape[0] == 0:
        raise ValueError(f"{name}: batch must be B originals then B generated twins, got size {x.shape[0]}")
    half = x.shape[0] // 2
    return x[:half], x[half:]


def in_distribution_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """CE over known pixels, averaged over *all* pixels (ignored and anomaly pixels count as 0).

    ``logits [N, C, H, W]``, ``targets [N, H, W]`` with non-class pixels already set to ``IGNORE``.
    This normalisation is the published one; it is why the CE weights are as large as 50 and 10.
    """
    return F.cross_entropy(logits, targets, ignore_index=IGNORE, reduction="none").mean()


def selected_cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, *, selection_ratio: float
) -> torch.Tensor | None:
    """Noise-aware pixel selection: mean CE over the ``selection_ratio`` fraction of known pixels with
    the lowest CE (``int(ratio * #known)`` pixels); the rest, where the generator most likely changed the
    content, get no gradient. None when no pixel is selected.

    ``logits [N, C, H, W]``, ``targets [N, H, W]`` with non-class pixels already set to ``IGNORE``.
    """
    losses = F.cross_entropy(logits, targets, ignore_index=IGNORE, reduction="none")[targets != IGNORE]
    keep = int(selection_ratio * losses.numel())
    if keep == 0:
        return None
    lowest = torch.topk(losses.detach(), keep, largest=False, sorted=False).indices
    return losses[lowest].mean()


def _sample(values: torch.Tensor, n: int, generator: torch.Generator | None) -> torch.Tensor:
    order = torch.randperm(values.numel(), generator=generator)[:n]
    return values[order.to(values.device)]


def relative_contrastive_terms(
    anomaly_score: torch.Tensor,
    targets: torch.Tensor,
    margins: tuple[float, float, float],
    generator: torch.Generator | None = None,
    *,
    num_classes: int = NUM_CLASSES,
    twins: bool = True,
) -> dict[str, torch.Tensor]:
    """The three RCL terms on ``anomaly_score [2B, H, W]`` (originals, then twins) and ``targets``.

    Returns ``rcl_in``, ``rcl_aug`` (absent when any of the three pixel sets is empty) and ``rcl_pair``
    (absent when no pixel is known in both an original and its twin). The shuffles draw from
    ``generator`` (CPU; the global generator when None) in the published order: in, aug, out.
    ``twins=False`` reads ``[B, H, W]`` originals only (the outlier-exposure baseline): ``rcl_in``
    alone, over ``n = min(|Omega_in|, |Omega_out|)`` pairs; only ``margins[0]`` is used.
    """
    if anomaly_score.shape != targets.shape:
        raise ValueError(
            f"anomaly_score {list(anomaly_score.shape)} and targets {list(targets.shape)} differ"
        )
    known, anomaly = pixel_groups(targets, num_classes)
    score = anomaly_score.float()
    if twins:
        score_orig, score_gen = _split_pairs(score, "anomaly_score")
        known_orig, known_gen = _split_pairs(known, "targets")
        below_out = {"rcl_in": score_orig[known_orig], "rcl_aug": score_gen[known_gen]}
    else:
        below_out = {"rcl_in": score[known]}
    s_out = score[anomaly]
    terms: dict[str, torch.Tensor] = {}
    n = min(s_out.numel(), *(s.numel() for s in below_out.values()))
    if n > 0:
        sampled = {name: _sample(s, n, generator) for name, s in below_out.items()}
        s_out = _sample(s_out, n, generator)
        for (name, s), margin in zip(sampled.items(), margins):
            terms[name] = F.relu(s + margin - s_out).mean()
    if twins:
        same = known_orig & known_gen
        if same.any():
            terms["rcl_pair"] = F.relu(score_gen[same] - score_orig[same] - margins[2]).mean()
    return terms


class RelContrastiveLoss(nn.Module):
    """RCL + CE on originals + pixel-selected CE on generated twins; see the module docstring.

    ``selection_ratio`` in (0, 1) turns pixel selection on (0.8 in the paper); 1.0 reproduces the
    published "no selection" path, a plain ``in_distribution_cross_entropy`` on the twins.
    """

    def __init__(
        self,
        *,
        margins: tuple[float, float, float] = (10.0, 5.0, 5.0),
        ce_weights: tuple[float, float] = (50.0, 10.0),
        selection_ratio: float = 0.8,
    ) -> None:
        super().__init__()
        if len(margins) != 3 or len(ce_weights) != 2:
            raise ValueError(f"need 3 margins and 2 ce_weights, got {margins} and {ce_weights}")
        if not 0.0 < selection_ratio <= 1.0:
            raise ValueError(f"selection_ratio must be in (0, 1], got {selection_ratio}")
        self.margins = tuple(float(m) for m in margins)
        self.ce_weights = tuple(float(w) for w in ce_weights)
        self.selection_ratio = float(selection_ratio)

    def weights(self) -> dict[str, float]:
        """The weight of each named term in the total."""
        return {"ce_orig": self.ce_weights[0], "ce_gen": self.ce_weights[1]} | dict.fromkeys(
            ("rcl_in", "rcl_aug", "rcl_pair"), 1.0
        )

    def terms(
        self,
        logits: torch.Tensor,
        anomaly_score: torch.Tensor,
        targets: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """Unweighted terms ``ce_orig, ce_gen, rcl_in, rcl_aug, rcl_pair`` (those with an empty pixel
        set left out) and ``loss``, their weighted sum.

        ``logits [2B, C, H, W]``, ``anomaly_score [2B, H, W]``, ``targets`` int64 ``[2B, H, W]``.
        """
        if logits.dim() != 4 or logits.shape[:1] + logits.shape[2:] != targets.shape:
            raise ValueError(f"logits {list(logits.shape)} do not match targets {list(targets.shape)}")
        known, _ = pixel_groups(targets, logits.shape[1])
        class_targets = torch.where(known, targets, IGNORE)
        logits_orig, logits_gen = _split_pairs(logits, "logits")
        targets_orig, targets_gen = _split_pairs(class_targets, "targets")
        terms = {"ce_orig": in_distribution_cross_entropy(logits_orig, targets_orig)}
        if self.selection_ratio < 1.0:
            ce_gen = selected_cross_entropy(logits_gen, targets_gen, selection_ratio=self.selection_ratio)
        else:
            ce_gen = in_distribution_cross_entropy(logits_gen, targets_gen)
        if ce_gen is not None:
            terms["ce_gen"] = ce_gen
        terms |= relative_contrastive_terms(
            anomaly_score, targets, self.margins, generator, num_classes=logits.shape[1]
        )
        weights = self.weights()
        terms["loss"] = sum(weights[name] * value for name, value in terms.items())
        return terms

    def forward(
        self,
        logits: torch.Tensor,
        anomaly_score: torch.Tensor,
        targets: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """The total loss, a scalar."""
        return self.terms(logits, anomaly_score, targets, generator)["loss"]
