"""The optimizer of one training stage, over exactly the parameters that stage trains.

Parameter groups follow Mask2Former's recipe so that one builder serves both model families:
parameters whose name contains ``backbone`` get ``lr * backbone_lr_mult``, and the affine
parameters of normalisation layers and embeddings get no weight decay. For DeepLab (Adam, no
weight decay, multiplier 1) this is a single group, as in the published code. ``train.optimizer``
names an entry of :data:`OPTIMIZERS` (``(groups, lr) -> torch.optim.Optimizer``); a module of one's
own can add one with ``@register_optimizer("name")``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn

from lib.engine.stages import StageSpec
from lib.registry import Registry

OptimizerBuilder = Callable[[list[dict], float], torch.optim.Optimizer]
OPTIMIZERS: Registry[OptimizerBuilder] = Registry("optimizer", key="train.optimizer")
register_optimizer = OPTIMIZERS.register
SGD_MOMENTUM = 0.9

_NO_DECAY_MODULES = (
    nn.modules.batchnorm._BatchNorm,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.LocalResponseNorm,
    nn.Embedding,
)


def _no_decay_names(model: nn.Module) -> set[str]:
    names = set()
    for module_name, module in model.named_modules():
        if isinstance(module, _NO_DECAY_MODULES):
            prefix = f"{module_name}." if module_name else ""
            names.update(prefix + n for n, _ in module.named_parameters(recurse=False))
    return names


def group_name(*, backbone: bool, no_decay: bool) -> str:
    """The name a parameter group is logged under: ``backbone`` or ``other``, ``_no_decay`` appended
    for normalisation and embedding parameters."""
    return ("backbone" if backbone else "other") + ("_no_decay" if no_decay else "")


def parameter_groups(model: nn.Module, stage: StageSpec) -> list[dict]:
    """Groups of the trainable parameters: ``{"name", "params", "param_names", "lr", "weight_decay"}``
    (``name`` from :func:`group_name`)."""
    no_decay = _no_decay_names(model)
    groups: dict[tuple[bool, bool], dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        is_backbone, skip_decay = "backbone" in name, name in no_decay
        group = groups.setdefault(
            (is_backbone, skip_decay),
            {
                "name": group_name(backbone=is_backbone, no_decay=skip_decay),
                "params": [],
                "param_names": [],
                "lr": stage.lr * (stage.backbone_lr_mult if is_backbone else 1.0),
                "weight_decay": 0.0 if skip_decay else stage.weight_decay,
            },
        )
        group["params"].append(param)
        group["param_names"].append(name)
    if not groups:
        raise ValueError(f"{stage.name}: no parameter of {type(model).__name__} requires grad")
    return list(groups.values())


@register_optimizer("adam")
def adam(groups: list[dict], lr: float) -> torch.optim.Optimizer:
    return torch.optim.Adam(groups, lr=lr)


@register_optimizer("adamw")
def adamw(groups: list[dict], lr: float) -> torch.optim.Optimizer:
    return torch.optim.AdamW(groups, lr=lr)


@register_optimizer("sgd")
def sgd(groups: list[dict], lr: float) -> torch.optim.Optimizer:
    """SGD with momentum ``SGD_MOMENTUM``."""
    return torch.optim.SGD(groups, lr=lr, momentum=SGD_MOMENTUM)


def build_optimizer(model: nn.Module, stage: StageSpec) -> torch.optim.Optimizer:
    """The ``stage.optimizer`` entry of :data:`OPTIMIZERS` over the trainable parameters' groups."""
    builder = OPTIMIZERS.get(stage.optimizer)
    return builder(parameter_groups(model, stage), stage.lr)
