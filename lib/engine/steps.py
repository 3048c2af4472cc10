"""Training recipes: per-family train steps and the training set each reads, selected by ``cfg.loss.name``.

A step owns the family-specific part of training — how a batch enters the model and which
criterion scores the outputs — so the trainer stays generic. The contract:

``step(model, batch, stage=StageSpec) -> dict[str, Tensor]`` with scalar terms, ``"loss"`` being
the total to back-propagate; every term is logged by name. ``batch`` is the training collate's
dict already on the device: ``image`` ``[B,3,H,W]`` and ``label`` ``[B,H,W]`` (trainIds,
``ANOMALY``, ``IGNORE``), and for paired recipes ``aug_image``/``aug_label`` (the B generated
twins). A step may behave differently per stage (Mask2Former switches criterion in stage 2).
``find_unused_parameters`` tells DDP whether some trainable parameters may get no gradient in a step.

A step and the training set it needs belong together: a :class:`Recipe` holds both builders, and
:func:`build_recipe` builds both from the config. New families register
``@register_recipe(name, train_set=builder)`` on their step builder ``builder(cfg) -> TrainStep``
in a module listed in ``RECIPE_MODULES``; lookups import those lazily (as
:func:`lib.models.build_model` does for models), so no caller needs an import for its side effect.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import Dataset

from lib.config import Config
from lib.engine.builders import build_paired_train_set, build_unpaired_train_set
from lib.engine.stages import StageSpec
from lib.labels import IGNORE
from lib.registry import Registry


class TrainStep(Protocol):
    find_unused_parameters: bool

    def __call__(
        self, model: nn.Module, batch: dict[str, torch.Tensor], *, stage: StageSpec
    ) -> dict[str, torch.Tensor]: ...


StepBuilder = Callable[[Config], TrainStep]
TrainSetBuilder = Callable[[Config], Dataset]


@dataclass(frozen=True)
class Recipe:
    """How one ``loss.name`` trains: its step builder and the builder of the training set it reads."""

    step: StepBuilder
    train_set: TrainSetBuilder


RECIPE_MODULES = ("lib.engine.m2f_step", "lib.engine.baseline_steps")
"""Modules that register recipes besides this one (imported on first use)."""
RECIPES: Registry[Recipe] = Registry("training recipe", key="loss.name", modules=RECIPE_MODULES)


def register_recipe(name: str, *, train_set: TrainSetBuilder) -> Callable[[StepBuilder], StepBuilder]:
    """Decorator: register the decorated step builder with ``train_set`` as the recipe ``name``."""

    def wrap(step: StepBuilder) -> StepBuilder:
        RECIPES.register(name)(Recipe(step=step, train_set=train_set))
        return step

    return wrap


def build_train_step(cfg: Config) -> TrainStep:
    """The train step of the recipe ``cfg.loss.name``; an unknown name lists the known ones."""
    return RECIPES.get(cfg.loss.name).step(cfg)


def build_recipe(cfg: Config) -> tuple[TrainStep, Dataset]:
    """The train step and the training set of the recipe ``cfg.loss.name``, in that order (a bad
    loss section shows before any image is listed)."""
    recipe = RECIPES.get(cfg.loss.name)
    step = recipe.step(cfg)
    return step, recipe.train_set(cfg)


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


@register_recipe("rcl", train_set=build_paired_train_set)
def _paired_rcl(cfg: Config) -> PairedRCLStep:
    from lib.losses import RelContrastiveLoss

    loss = RelContrastiveLoss(
        margins=cfg.loss.margins, ce_weights=cfg.loss.ce_weights, selection_ratio=cfg.loss.selection_ratio
    )
    return PairedRCLStep(criterion=loss.terms)


class ClosedWorldCEStep:
    """Closed-world training: per-pixel cross-entropy of the logits on ``image``/``label`` batches.

    Pixels that are not one of the model's classes (``IGNORE``, ``ANOMALY``) are ignored. Used to
    pretrain the segmenter the method starts from (e.g. on ToyShift), on originals alone.
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


@register_recipe("ce", train_set=build_unpaired_train_set)
def _closed_world_ce(cfg: Config) -> ClosedWorldCEStep:
    return ClosedWorldCEStep()
