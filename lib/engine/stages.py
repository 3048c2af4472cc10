"""Declarative training stages: which parameters train, with which optimizer and learning rate, when.

The method trains in two stages (paper Sec. 4, "Training"): stage 1 fits the OOD head alone on top
of the frozen closed-world segmenter; from ``train.warmup_epoch`` stage 2 also trains the named
feature-extractor parts at a lower learning rate with a fresh optimizer. A stage is a
:class:`StageSpec`; :func:`stages_from_config` reads both from the config, and the trainer only
ever asks :func:`stage_at` which one an epoch belongs to.

Parameter patterns match *substrings* of parameter names, as the published code does (``""``
matches every parameter). A pattern list that matches nothing is an error naming the patterns,
so a renamed module cannot silently freeze the whole model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm

from lib.config import Config, ConfigError


@dataclass(frozen=True)
class StageSpec:
    """One training stage over epochs ``[first_epoch, last_epoch)``."""

    index: int
    first_epoch: int
    last_epoch: int
    patterns: tuple[str, ...]
    optimizer: str
    lr: float
    weight_decay: float
    backbone_lr_mult: float
    grad_clip: float

    @property
    def name(self) -> str:
        return f"stage{self.index}"


def stages_from_config(cfg: Config) -> list[StageSpec]:
    """Stage 1 (``trainable_params_name`` at ``lr``) until ``warmup_epoch``, stage 2 after.

    Stage 2's optimizer, weight decay and gradient clipping are the ``*_update`` values where set.

    A stage whose epoch range is empty (``warmup_epoch`` 0, or ``>= epochs``) is left out.
    """
    t, m = cfg.train, cfg.model
    if not 0 <= t.warmup_epoch:
        raise ConfigError(f"train.warmup_epoch must be >= 0, got {t.warmup_epoch}")
    if t.epochs < 1:
        raise ConfigError(f"train.epochs must be >= 1, got {t.epochs}")
    common = dict(backbone_lr_mult=t.backbone_lr_mult)
    stage2_optimizer = t.optimizer if t.optimizer_update is None else t.optimizer_update
    stage2_decay = t.weight_decay if t.weight_decay_update is None else t.weight_decay_update
    stage2_clip = t.grad_clip if t.grad_clip_update is None else t.grad_clip_update
    for key, clip in (("grad_clip", t.grad_clip), ("grad_clip_update", stage2_clip)):
        if clip < 0:
            raise ConfigError(f"train.{key} must be >= 0 (0: no clipping), got {clip}")
    warmup = min(t.warmup_epoch, t.epochs)
    stages = [
        StageSpec(
            1,
            0,
            warmup,
            tuple(m.trainable_params_name),
            optimizer=t.optimizer,
            lr=t.lr,
            weight_decay=t.weight_decay,
            grad_clip=t.grad_clip,
            **common,
        ),
        StageSpec(
            2,
            warmup,
            t.epochs,
            tuple(m.trainable_params_name_update),
            optimizer=stage2_optimizer,
            lr=t.lr_update,
            weight_decay=stage2_decay,
            grad_clip=stage2_clip,
            **common,
        ),
    ]
    return [s for s in stages if s.first_epoch < s.last_epoch]


def stage_at(stages: Sequence[StageSpec], epoch: int) -> StageSpec:
    """The stage that trains ``epoch``."""
    for stage in stages:
        if stage.first_epoch <= epoch < stage.last_epoch:
            return stage
    spans = ", ".join(f"{s.name}: [{s.first_epoch}, {s.last_epoch})" for s in stages)
    raise ValueError(f"epoch {epoch} is outside every training stage ({spans})")


def match_parameters(model: nn.Module, patterns: Sequence[str]) -> list[str]:
    """Names of the parameters of ``model`` that contain any of ``patterns``, in model order."""
    if not patterns:
        raise ConfigError("empty list of trainable parameter patterns; use [''] to train every parameter")
    names = [name for name, _ in model.named_parameters() if any(p in name for p in patterns)]
    if not names:
        raise ConfigError(
            f"trainable parameter patterns {list(patterns)} match no parameter of "
            f"{type(model).__name__}; its top-level modules are: "
            f"{', '.join(n for n, _ in model.named_children())}"
        )
    return names


def apply_stage(model: nn.Module, stage: StageSpec) -> list[str]:
    """Set ``requires_grad`` to True exactly on the stage's parameters; return their names."""
    names = match_parameters(model, stage.patterns)
    selected = set(names)
    for name, param in model.named_parameters():
        param.requires_grad_(name in selected)
    return names


def set_train_mode(model: nn.Module, *, bn_train_mode: bool) -> None:
    """Put ``model`` in train mode; with ``bn_train_mode`` False, frozen BatchNorms stay in eval.

    The published DeepLab run keeps every BatchNorm in train mode, so the running statistics of the
    frozen trunk keep adapting to the (original + generated) batches; ``bn_train_mode=False``
    instead freezes the statistics of every BatchNorm whose affine parameters do not train.
    """
    model.train()
    if bn_train_mode:
        return
    for module in model.modules():
        if isinstance(module, _BatchNorm) and not any(p.requires_grad for p in module.parameters()):
            module.eval()
