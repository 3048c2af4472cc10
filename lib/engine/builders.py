"""Objects an experiment needs, built from its config: model with starting weights, training pairs.

The entry scripts call these so they hold no logic of their own.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch.nn as nn

from lib.config import Config, DataConfig
from lib.data.coco_ood import OutlierObjects
from lib.data.multishift import MultiShiftPairs
from lib.data.transforms import Compose, HorizontalFlip, RandomCrop, RandomResize, mask2former_train_transform
from lib.engine.logging_utils import get_logger
from lib.models import build_model
from lib.models.checkpoints import load_weights


def deeplab_train_transform(data: DataConfig) -> Compose:
    """The published DeepLab augmentation: random rescale by a factor in ``data.scale_range``, a
    ``data.crop_size`` square crop (padded with ignore), horizontal flip (p=0.5)."""
    low, high = data.scale_range
    return Compose(
        [
            RandomResize(scale_range=(low, high)),
            RandomCrop((data.crop_size, data.crop_size)),
            (HorizontalFlip(), 0.5),
        ]
    )


def _mask2former(data: DataConfig) -> Compose:
    return mask2former_train_transform((data.crop_size, data.crop_size))


AUGMENTATIONS: dict[str, Callable[[DataConfig], Compose]] = {
    "deeplab": deeplab_train_transform,
    "mask2former": _mask2former,
}
"""``data.augmentation`` values and the builders of their joint transforms."""


def paired_train_transform(data: DataConfig) -> Compose:
    """Joint augmentation of each (original, generated) pair, chosen by ``data.augmentation``."""
    if data.augmentation not in AUGMENTATIONS:
        raise ValueError(
            f"unknown data.augmentation {data.augmentation!r}; expected one of {', '.join(AUGMENTATIONS)}"
        )
    return AUGMENTATIONS[data.augmentation](data)


def build_paired_train_set(cfg: Config) -> MultiShiftPairs:
    """Cityscapes originals + their CG-Aug twins under ``data.root``, with COCO outlier pasting
    (``data.ood_prob`` > 0, objects from ``data.root/data.coco``) and mixup up to ``data.mixup_max``."""
    d = cfg.data
    if not d.use_generated:
        raise ValueError(
            "data.use_generated=false: training without generated twins is not supported by the paired "
            "DeepLab trainer (every batch is B originals + their B generated images)"
        )
    root = Path(d.root)
    outliers = OutlierObjects(root / d.coco) if d.ood_prob > 0 else None
    return MultiShiftPairs(
        root / d.cityscapes,
        root / d.multishift,
        "train",
        paired_train_transform(d),
        outliers=outliers,
        paste_prob=d.ood_prob,
        ood_scale_array=d.ood_scale_array,
        mixup_max=d.mixup_max,
        mean=tuple(d.mean),
        std=tuple(d.std),
        seed=cfg.train.seed,
        crop_early=d.crop_early,
    )


def build_training_model(cfg: Config) -> nn.Module:
    """``model.name`` with ``model.weight_path`` loaded strictly, then, with ``model.init_ood_head``
    (default, as published), the OOD head set to a copy of the classifier by the model's
    ``uncertainty_head_init()`` (paper Sec. 3.3), so stage 1 starts from the closed-world model's
    own score. With ``init_ood_head`` false the loaded OOD head is kept."""
    logger = get_logger()
    model = build_model(cfg.model.name, **cfg.model.kwargs)
    if cfg.model.weight_path:
        load_weights(model, cfg.model.weight_path)
        logger.info("loaded starting weights %s", cfg.model.weight_path)
    else:
        logger.warning("model.weight_path is empty: training starts from a randomly initialised model")
    if not cfg.model.init_ood_head:
        logger.info("model.init_ood_head=false: the OOD head keeps the starting weights' values")
        return model
    head_init = getattr(model, "uncertainty_head_init", None)
    if head_init is None:
        raise ValueError(
            f"model.init_ood_head=true but {type(model).__name__} ({cfg.model.name}) has no "
            "uncertainty_head_init(); set model.init_ood_head=false"
        )
    head_init()
    logger.info("OOD head initialised as a copy of the classifier (model.init_ood_head=true)")
    return model
