"""Mask2Former train steps (paper Sec. 4, "Mask2Former"): ``loss.name = m2f_rcl`` and ``m2f_set``.

``m2f_set`` is closed-world training (e.g. pretraining the tiny Mask2Anomaly on ToyShift): the set
criterion alone, without the OOD loss, on ``image``/``label`` of the unpaired training set (originals
only, no generated twins needed; every stage).
``m2f_rcl`` is the method: one forward of the training-mode :class:`~lib.models.mask2former.Mask2Anomaly` on
``cat([image, aug_image])`` (B originals, then their B generated twins), then per stage:

- stage 1 (only ``class_embed2`` trains): the relative contrastive loss on the mask-based anomaly
  score ``1 - max_c Σ_q softmax(class_ood) · sigmoid(mask)`` at input resolution, margins
  ``loss.margins``; the terms are ``rcl_in``, ``rcl_aug``, ``rcl_pair`` and their sum ``loss``
  (the published stage 1 also adds CE on the frozen classifier's scores, a constant without
  gradient, left out here);
- stage 2: the Mask2Former set criterion (Hungarian matching; class CE with no-object weight, mask
  BCE and dice on sampled points, low-BCE points on generated images; deep supervision per
  ``loss.deep_supervision``) plus the RCL as its OOD loss, weighted by ``loss.class_weight``,
  ``mask_weight``, ``dice_weight`` and ``ood_weight``.

The loss runs in float32 with autocast off: the model's outputs may be bf16/fp16 under mixed
precision, and point sampling, matching and the score sums are precision-sensitive (the pixel
decoder already runs in float32 inside the model). The backbone holds only frozen BatchNorms and
no dropout, so its outputs are those of eval mode whatever the module's mode, as the published
run keeps it.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from lib.config import Config, ConfigError
from lib.engine.builders import build_paired_train_set, build_unpaired_train_set
from lib.engine.stages import StageSpec
from lib.engine.steps import register_recipe
from lib.losses import relative_contrastive_terms
from lib.models.mask2former.criterion import SetCriterion
from lib.models.mask2former.matcher import HungarianMatcher
from lib.models.mask2former.model import semantic_and_anomaly

_MASK_KEYS = ("pred_masks", "pred_masks_ood")


def float_outputs(outputs: dict[str, object]) -> dict[str, object]:
    """The decoder outputs in float32, keeping ``pred_masks_ood is pred_masks`` (the shared mask
    embedding that :func:`semantic_and_anomaly` checks) and the auxiliary outputs."""
    out: dict[str, object] = {}
    for key, value in outputs.items():
        if key == "aux_outputs":
            out[key] = [float_outputs(aux) for aux in value]
        elif isinstance(value, torch.Tensor):
            out[key] = value.float()
        else:
            out[key] = value
    if all(k in outputs for k in _MASK_KEYS) and outputs["pred_masks_ood"] is outputs["pred_masks"]:
        out["pred_masks_ood"] = out["pred_masks"]
    return out


def training_outputs(model: nn.Module, images: torch.Tensor) -> dict[str, object]:
    """``model(images)``, checked to be the training-mode outputs dict the criteria need."""
    outputs = model(images)
    if not isinstance(outputs, dict):
        raise TypeError(
            "the Mask2Former train step needs the model's training-mode outputs (a dict); "
            f"got {type(outputs).__name__}: call model.train() before the step"
        )
    return outputs


class Mask2AnomalyRCLStep:
    """``step(model, batch, stage=...)``: stage 1 RCL on the OOD head, stage 2 set criterion + RCL.

    ``criterion`` holds the stage-2 terms (its RCL margins are ``margins``); ``generator`` (CPU)
    makes point and pair sampling reproducible in tests, None uses the global RNG the trainer seeds.
    """

    find_unused_parameters = True  # a batch without anomaly pixels leaves the OOD head without gradient

    def __init__(
        self,
        *,
        criterion: SetCriterion,
        margins: tuple[float, float, float],
        generator: torch.Generator | None = None,
    ) -> None:
        self.criterion = criterion
        self.margins = margins
        self.generator = generator

    def __call__(
        self, model: nn.Module, batch: dict[str, torch.Tensor], *, stage: StageSpec
    ) -> dict[str, torch.Tensor]:
        images = torch.cat([batch["image"], batch["aug_image"]])
        labels = torch.cat([batch["label"], batch["aug_label"]]).long()
        outputs = training_outputs(model, images)
        self.criterion.to(labels.device)
        with torch.autocast(images.device.type, enabled=False):
            outputs = float_outputs(outputs)
            if stage.index == 1:
                return self._ood_head_terms(outputs, labels)
            n = batch["image"].shape[0]
            generated = torch.arange(2 * n, device=labels.device) >= n
            return self.criterion.terms(outputs, labels, generated=generated, generator=self.generator)

    def _ood_head_terms(self, outputs: dict[str, object], labels: torch.Tensor) -> dict[str, torch.Tensor]:
        anomaly, _ = semantic_and_anomaly(outputs, tuple(labels.shape[-2:]))
        terms = relative_contrastive_terms(
            anomaly, labels, self.margins, self.generator, num_classes=self.criterion.num_classes
        )
        terms["loss"] = sum(terms.values()) if terms else anomaly.sum() * 0.0
        return terms


def build_set_criterion(cfg: Config, *, ood_loss: bool = True) -> SetCriterion:
    """The stage-2 :class:`SetCriterion` from ``cfg.loss`` (matcher costs = the loss weights, as in
    Mask2Former). ``loss.selection_ratio`` is the share of low-BCE mask points on generated images;
    ``ood_loss`` False leaves the RCL (``loss.margins``) out."""
    loss = cfg.loss
    if not 0.0 < loss.selection_ratio <= 1.0:
        raise ConfigError(f"loss.selection_ratio must be in (0, 1], got {loss.selection_ratio}")
    if len(loss.margins) != 3:
        raise ConfigError(f"loss.margins must hold 3 values (in, aug, pair), got {loss.margins}")
    matcher = HungarianMatcher(
        cost_class=loss.class_weight,
        cost_mask=loss.mask_weight,
        cost_dice=loss.dice_weight,
        num_points=loss.num_points,
    )
    return SetCriterion(
        matcher=matcher,
        class_weight=loss.class_weight,
        mask_weight=loss.mask_weight,
        dice_weight=loss.dice_weight,
        ood_weight=loss.ood_weight,
        eos_coef=loss.no_object_weight,
        num_points=loss.num_points,
        oversample_ratio=loss.oversample_ratio,
        importance_sample_ratio=loss.importance_sample_ratio,
        deep_supervision=loss.deep_supervision,
        low_loss_keep_ratio=loss.selection_ratio,
        ood_margins=tuple(loss.margins) if ood_loss else None,
    )


@register_recipe("m2f_rcl", train_set=build_paired_train_set)
def build_m2f_step(cfg: Config) -> Mask2AnomalyRCLStep:
    """The ``m2f_rcl`` train step from ``cfg.loss``."""
    return Mask2AnomalyRCLStep(criterion=build_set_criterion(cfg), margins=tuple(cfg.loss.margins))


class Mask2FormerSetStep:
    """Closed-world Mask2Former training: the set criterion (no OOD loss) on ``image``/``label``.

    Anomaly and ignore pixels belong to no target mask. The OOD head gets no gradient, hence
    ``find_unused_parameters``. ``generator`` as in :class:`Mask2AnomalyRCLStep`.
    """

    find_unused_parameters = True

    def __init__(self, *, criterion: SetCriterion, generator: torch.Generator | None = None) -> None:
        if criterion.ood_margins is not None:
            raise ValueError("the closed-world m2f_set step needs a SetCriterion without OOD loss")
        self.criterion = criterion
        self.generator = generator

    def __call__(
        self, model: nn.Module, batch: dict[str, torch.Tensor], *, stage: StageSpec
    ) -> dict[str, torch.Tensor]:
        images, labels = batch["image"], batch["label"].long()
        outputs = training_outputs(model, images)
        self.criterion.to(labels.device)
        with torch.autocast(images.device.type, enabled=False):
            return self.criterion.terms(float_outputs(outputs), labels, generator=self.generator)


@register_recipe("m2f_set", train_set=build_unpaired_train_set)
def build_m2f_set_step(cfg: Config) -> Mask2FormerSetStep:
    """The closed-world ``m2f_set`` train step from ``cfg.loss``."""
    return Mask2FormerSetStep(criterion=build_set_criterion(cfg, ood_loss=False))
