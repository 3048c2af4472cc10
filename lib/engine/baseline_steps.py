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

from lib.config import Config
from lib.engine.builders import build_unpaired_train_set
from lib.engine.stages import StageSpec
from lib.engine.steps import register_recipe
from lib.labels import IGNORE
from lib.losses import in_distribution_cross_entropy, pixel_groups, relative_contrastive_terms


class OutlierExposureStep:
    """One forward on ``image`` (originals with pasted outliers): ``ce_orig`` and ``rcl_in`` terms.

    ``rcl_in`` is :func:`~lib.losses.relative_contrastive_terms` without twins; ``generator`` (CPU)
    makes its pair sampling reproducible, None uses the global RNG the trainer seeds.
    """

    find_unused_parameters = False

    def __init__(
        self,
        *,
        margins: tuple[float, float, float],
        ce_weight: float,
        generator: torch.Generator | None = None,
    ) -> None:
        self.margins, self.ce_weight, self.generator = margins, float(ce_weight), generator

    def __call__(
        self, model: nn.Module, batch: dict[str, torch.Tensor], *, stage: StageSpec
    ) -> dict[str, torch.Tensor]:
        anomaly_score, logits = model(batch["image"])
        targets = batch["label"].long()
        known, _ = pixel_groups(targets, logits.shape[1])
        class_targets = torch.where(known, targets, IGNORE)
        terms = {"ce_orig": in_distribution_cross_entropy(logits.float(), class_targets)}
        terms.update(
            relative_contrastive_terms(
                anomaly_score, targets, self.margins, self.generator, num_classes=logits.shape[1], twins=False
            )
        )
        terms["loss"] = self.ce_weight * terms["ce_orig"] + terms.get("rcl_in", 0.0)
        return terms


@register_recipe("oe", train_set=build_unpaired_train_set)
def _outlier_exposure(cfg: Config) -> OutlierExposureStep:
    return OutlierExposureStep(margins=tuple(cfg.loss.margins), ce_weight=cfg.loss.ce_weights[0])
