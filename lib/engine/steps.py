"""Per-family train steps: one batch in, the named loss terms out; selected by ``cfg.loss.name``.

A step owns the family-specific part of training — how the paired batch enters the model and
which criterion scores the outputs — so the trainer stays generic. The contract:

``step(model, batch, stage=StageSpec) -> dict[str, Tensor]`` with scalar terms, ``"loss"`` being
the total to back-propagate; every term is logged by name. ``batch`` is the training collate's
dict already on the device: ``image``/``aug_image`` ``[B,3,H,W]`` (B originals and their B generated
twins) and ``label``/``aug_label`` ``[B,H,W]`` (trainIds, ``ANOMALY``, ``IGNORE``). A step may behave
differently per stage (Mask2Former switches criterion in stage 2). ``find_unused_parameters`` tells
DDP whether some trainable parameters may get no gradient in a step.

New families register a builder ``builder(cfg) -> TrainStep`` with :func:`register_step` in a module
listed in ``STEP_MODULES``; :func:`build_train_step` imports those lazily (as
:func:`lib.models.build_model` does for models), so no caller needs an import for its side effect.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
import torch.nn as nn
import torch.nn.functional as F

from lib.config import Config
from lib.engine.stages import StageSpec
from lib.labels import IGNORE
from lib.registry import Registry


class TrainStep(Protocol):
    find_unused_parameters: bool

    def __call__(
        self, model: nn.Module, batch: dict[str, torch.Tensor], *, stage: StageSpec
    ) -> dict[str, torch.Tensor]: ...


StepBuilder = Callable[[Config], TrainStep]
STEP_MODULES = ("lib.engine.m2f_step", "lib.engine.baseline_steps")
"""Modules that register train steps besides this one (imported on first use)."""
STEPS: Registry[StepBuilder] = Registry("train step", key="loss.name", modules=STEP_MODULES)
register_step = STEPS.register


def build_train_step(cfg: Config) -> TrainStep:
    """The train step registered under ``cfg.loss.name``; an unknown name lists the known ones."""
    return STEPS.get(cfg.loss.name)(cfg)


class PairedRCLStep:
    """DeepLab: one forward on ``cat([image, aug_image])``, then the relative contrastive loss terms.

    Originals come first and generated twins second, the order the loss expects. Outputs are cast to
    float32 before the loss so that mixed-precision training computes the terms at full precision.
    """

    find_unused_parameters = False

    def __init__(self, *, criterion: Callable[..., dict[str, torch.Tensor]]) -> None:
        self.criterion = criterion

    def __call__(
        self, model: nn.Module, batch: dict[str, torch.Tensor], *, stage: StageSpec
    ) -> dict[str, torch.Tensor]:
        images = torch.cat([batch["image"], batch["aug_image"]])
        targets = torch.cat([batch["label"], batch["aug_label"]]).long()
        anomaly_score, logits = model(images)
        return self.criterion(logits.float(), anomaly_score.float(), targets)


@register_step("rcl")
def _paired_rcl(cfg: Config) -> PairedRCLStep:
    from lib.losses import RelContrastiveLoss

    loss = RelContrastiveLoss(
        margins=cfg.loss.margins, ce_weights=cfg.loss.ce_weights, selection_ratio=cfg.loss.selection_ratio
    )
    return PairedRCLStep(criterion=loss.terms)


class ClosedWorldCEStep:
    """Closed-world training: per-pixel cross-entropy of the logits on ``image``/``label`` batches.

    Pixels that are not one of the model's classes (``IGNORE``, ``ANOMALY``) are ignored. Used to
    pretrain the segmenter the method starts from (e.g. on ToyShift).
    """

    find_unused_parameters = True

    def __call__(
        self, model: nn.Module, batch: dict[str, torch.Tensor], *, stage: StageSpec
    ) -> dict[str, torch.Tensor]:
        _, logits = model(batch["image"])
        label = batch["label"].long()
        target = torch.where(label < logits.shape[1], label, IGNORE)
        ce = F.cross_entropy(logits.float(), target, ignore_index=IGNORE)
        return {"loss": ce, "ce": ce}


@register_step("ce")
def _closed_world_ce(cfg: Config) -> ClosedWorldCEStep:
    return ClosedWorldCEStep()
