"""The outlier-exposure-only baseline: fine-tuning on originals with pasted outliers, no generated images.

It isolates what the generated twins add to the method: the same two stages, OOD-head
initialisation and outlier pasting as MultiShift training, but every batch holds originals only,
and the loss keeps the two terms that need no twin — the published CE on known pixels and the
in-vs-out RCL term ``relu(u_in + m0 - u_out)`` over ``n = min(|Omega_in|, |Omega_out|)`` random
pairs (``loss.margins[0]``, ``loss.ce_weights[0]``). The recipe ``loss.name: oe`` trains it on
:func:`~lib.engine.builders.build_unpaired_train_set` (unpaired Cityscapes-layout images, outliers
pasted after the joint transform, as in :class:`~lib.data.multishift.MultiShiftPairs`).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from lib.config import Config
from lib.engine.builders import build_unpaired_train_set
from lib.engine.stages import StageSpec
from lib.engine.steps import register_recipe
from lib.labels import IGNORE
from lib.losses import in_distribution_cross_entropy, pixel_groups


def in_out_contrastive_term(
    anomaly_score: torch.Tensor, targets: torch.Tensor, margin: float, *, num_classes: int
) -> torch.Tensor | None:
    """``mean relu(u_in + margin - u_out)`` over ``n`` random (known, anomaly) pixel pairs of
    ``anomaly_score [B,H,W]`` and ``targets [B,H,W]`` int64; None without anomaly pixels."""
    known, anomaly = pixel_groups(targets, num_classes)
    s_in, s_out = anomaly_score[known], anomaly_score[anomaly]
    n = min(s_in.numel(), s_out.numel())
    if n == 0:
        return None
    s_in = s_in[torch.randperm(s_in.numel())[:n].to(s_in.device)]
    s_out = s_out[torch.randperm(s_out.numel())[:n].to(s_out.device)]
    return F.relu(s_in + margin - s_out).mean()


class OutlierExposureStep:
    """One forward on ``image`` (originals with pasted outliers): ``ce_orig`` and ``rcl_in`` terms."""

    find_unused_parameters = False

    def __init__(self, *, margin: float, ce_weight: float) -> None:
        self.margin, self.ce_weight = float(margin), float(ce_weight)

    def __call__(
        self, model: nn.Module, batch: dict[str, torch.Tensor], *, stage: StageSpec
    ) -> dict[str, torch.Tensor]:
        anomaly_score, logits = model(batch["image"])
        targets = batch["label"].long()
        known, _ = pixel_groups(targets, logits.shape[1])
        class_targets = torch.where(known, targets, IGNORE)
        terms = {"ce_orig": in_distribution_cross_entropy(logits.float(), class_targets)}
        rcl = in_out_contrastive_term(
            anomaly_score.float(), targets, self.margin, num_classes=logits.shape[1]
        )
        if rcl is not None:
            terms["rcl_in"] = rcl
        terms["loss"] = self.ce_weight * terms["ce_orig"] + terms.get("rcl_in", 0.0)
        return terms


@register_recipe("oe", train_set=build_unpaired_train_set)
def _outlier_exposure(cfg: Config) -> OutlierExposureStep:
    return OutlierExposureStep(margin=cfg.loss.margins[0], ce_weight=cfg.loss.ce_weights[0])
