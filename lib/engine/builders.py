"""Objects an experiment needs, built from its config: model with starting weights, training sets.

The entry scripts call these so they hold no logic of their own.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch.nn as nn

from lib.config import Config, ConfigError, DataConfig
from lib.data.cityscapes import CityscapesSeg
from lib.data.coco_ood import OutlierObjects
from lib.data.multishift import MultiShiftPairs
from lib.data.pasting import PasteOutliers
from lib.data.transforms import Compose, HorizontalFlip, RandomCrop, RandomResize, mask2former_train_transform
from lib.engine.logging_utils import get_logger
from lib.models import build_model
from lib.models.checkpoints import load_model
from lib.registry import Registry

AUGMENTATIONS: Registry[Callable[[DataConfig], Compose]] = Registry("augmentation", key="data.augmentation")
"""``data.augmentation`` values and the builders of their joint transforms; a module of one's own
can add one with ``@register_augmentation("name")``."""
register_augmentation = AUGMENTATIONS.register


@register_augmentation("deeplab")
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


@register_augmentation("mask2former")
def _mask2former(data: DataConfig) -> Compose:
    return mask2former_train_transform((data.crop_size, data.crop_size))


def paired_train_transform(data: DataConfig) -> Compose:
    """Joint augmentation of each (original, generated) pair, chosen by ``data.augmentation``."""
    return AUGMENTATIONS.get(data.augmentation)(data)


def build_paired_train_set(cfg: Config) -> MultiShiftPairs:
    """Cityscapes originals + their CG-Aug twins under ``data.root``, with COCO outlier pasting
    (``data.ood_prob`` > 0, objects from ``data.root/data.coco``) and mixup up to ``data.mixup_max``."""
    d = cfg.data
    if not d.use_generated:
        raise ConfigError(
            f"data.use_generated=false, but the recipe loss.name={cfg.loss.name} trains on pairs (every "
            "batch is B originals + their B generated images); without generated images train "
            "loss.name=oe (outlier exposure) or loss.name=ce (closed world)"
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


def build_unpaired_train_set(cfg: Config) -> CityscapesSeg:
    """``data.root/data.cityscapes`` train images alone (no generated twins) with the joint transform of
    ``data.augmentation`` and then, when ``data.ood_prob`` > 0, one object of ``data.root/data.coco``
    pasted with that probability (as :class:`~lib.data.multishift.MultiShiftPairs` pastes into its
    originals). Items: ``image [3,H,W]`` normalised, ``label [H,W]`` int64, ``name``."""
    d = cfg.data
    steps: list = list(paired_train_transform(d).steps)
    if d.ood_prob > 0:
        outliers = OutlierObjects(Path(d.root) / d.coco)
        steps.append(PasteOutliers(outliers, scales=d.ood_scale_array, prob=d.ood_prob))
    return CityscapesSeg(
        Path(d.root) / d.cityscapes,
        "train",
        Compose(steps),
        mean=tuple(d.mean),
        std=tuple(d.std),
        crop_early=d.crop_early,  # pasting draws from the object it loads: whole frames then
    )


def build_training_model(cfg: Config) -> nn.Module:
    """``model.name`` with ``model.weight_path`` loaded strictly (a closed-world checkpoint without OOD
    head is accepted here only, its head copied from the classifier), then, with ``model.init_ood_head``
    (default, as published), the OOD head set to a copy of the classifier by the model's
    ``uncertainty_head_init()`` (paper Sec. 3.3), so stage 1 starts from the closed-world model's
    own score. With ``init_ood_head`` false the loaded OOD head is kept."""
    logger = get_logger()
    if cfg.model.weight_path:
        model = load_model(
            cfg.model.weight_path, name=cfg.model.name, kwargs=cfg.model.kwargs, fill_ood_head=True
        )
        logger.info("loaded starting weights %s", cfg.model.weight_path)
    else:
        model = build_model(cfg.model.name, **cfg.model.kwargs)
        logger.warning("model.weight_path is empty: training starts from a randomly initialised model")
    if not cfg.model.init_ood_head:
        logger.info("model.init_ood_head=false: the OOD head keeps the starting weights' values")
        return model
    head_init = getattr(model, "uncertainty_head_init", None)
    if head_init is None:
        raise ConfigError(
            f"model.init_ood_head=true but {type(model).__name__} ({cfg.model.name}) has no "
            "uncertainty_head_init(); set model.init_ood_head=false"
        )
    head_init()
    logger.info("OOD head initialised as a copy of the classifier (model.init_ood_head=true)")
    return model
