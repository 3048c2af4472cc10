"""Training pairs: each Cityscapes original with one of its CG-Aug variants (MultiShift Cityscapes).

Generated stems start with the Cityscapes stem ``{city}_{seq}_{frame}`` and may carry a domain
suffix; their labels hold trainIds plus ``ANOMALY`` for the generated object. Per item, in the
published order: mixup of the generated image with its original, one joint transform for the
pair, optional pasting of a COCO outlier object into the transformed original, normalisation.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from lib.data.cityscapes import list_cityscapes_split, read_train_label
from lib.data.coco_ood import OutlierObjects
from lib.data.io import check_same_size, read_rgb
from lib.data.pasting import PasteOutliers
from lib.data.transforms import IMAGENET_MEAN, IMAGENET_STD, JointTransform, Normalize, ToTensor
from lib.errors import UserError

DEFAULT_OOD_SCALES = tuple(round(0.1 * i, 1) for i in range(1, 11))


def cityscapes_stem(stem: str) -> str:
    """``{city}_{seq}_{frame}[_suffix...]`` -> ``{city}_{seq}_{frame}``."""
    parts = stem.split("_")
    if len(parts) < 3:
        raise ValueError(f"file stem {stem!r} does not start with a Cityscapes {{city}}_{{seq}}_{{frame}}")
    return "_".join(parts[:3])


def mixup(original: np.ndarray, generated: np.ndarray, p: float) -> np.ndarray:
    """``p * original + (1 - p) * generated`` as uint8 (truncated, as published), ``[H, W, 3]``."""
    return (p * original.astype(np.float32) + (1.0 - p) * generated.astype(np.float32)).astype(np.uint8)


class MultiShiftPairs(Dataset):
    """Cityscapes originals paired with one generated variant each, drawn afresh per epoch.

    Only originals with at least one variant are used; a variant without its original is an
    error. ``set_epoch(e)`` makes the draw a pure function of ``(seed, epoch, index)``, the same
    in every DataLoader worker and DDP rank. Item::

        image, aug_image: float32 [3, H, W] normalised   (original, generated)
        label, aug_label: int64 [H, W] trainIds / ANOMALY / IGNORE
        name: the original's stem

    ``outliers`` (an :class:`OutlierObjects`) enables pasting into the original
    (:class:`~lib.data.pasting.PasteOutliers`) with probability ``paste_prob``, scale drawn from
    ``ood_scale_array``. ``mixup_max`` > 0 blends ``p = min(U(0, 1), mixup_max)`` of the original
    into the generated image. ``transform`` acts on ``0..1`` tensors.
    """

    def __init__(
        self,
        cityscapes_root: str | Path,
        multishift_root: str | Path,
        split: str = "train",
        transform: JointTransform | None = None,
        *,
        outliers: OutlierObjects | None = None,
        paste_prob: float = 1.0,
        ood_scale_array: Sequence[float] = DEFAULT_OOD_SCALES,
        mixup_max: float = 0.3,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
        seed: int = 0,
    ) -> None:
        originals = {stem: (img, lab) for _, stem, img, lab in list_cityscapes_split(cityscapes_root, split)}
        variants: dict[str, list[tuple[Path, Path]]] = {}
        for city, stem, img, lab in list_cityscapes_split(multishift_root, split):
            base = cityscapes_stem(stem)
            if base not in originals or originals[base][0].parent.name != city:
                raise FileNotFoundError(
                    f"generated image {img} has no Cityscapes original {city}/{base}_leftImg8bit.png "
                    f"under {Path(cityscapes_root) / 'leftImg8bit' / split}"
                )
            variants.setdefault(base, []).append((img, lab))
        self.pairs = [(stem, originals[stem], variants[stem]) for stem in sorted(variants)]
        self.transform = transform
        self.paste = (
            None if outliers is None else PasteOutliers(outliers, scales=ood_scale_array, prob=paste_prob)
        )
        self.mixup_max = mixup_max
        self.to_tensor, self.normalize = ToTensor(), Normalize(mean, std)
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        """Select which variant each original gets this epoch (call before building the iterator)."""
        self.epoch = epoch

    def variant_index(self, index: int) -> int:
        """The variant drawn for pair ``index`` in the current epoch."""
        n = len(self.pairs[index][2])
        return int(np.random.default_rng((self.seed, self.epoch, index)).integers(n)) if n > 1 else 0

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | str]:
        stem, (img_path, lab_path), variants = self.pairs[index]
        gen_path, gen_lab_path = variants[self.variant_index(index)]
        original, generated = read_rgb(img_path), read_rgb(gen_path)
        if original.shape != generated.shape:
            raise UserError(
                f"generated image {gen_path} is {generated.shape[1]} x {generated.shape[0]} but its "
                f"original {img_path} is {original.shape[1]} x {original.shape[0]}; expected one size"
            )
        label = read_train_label(lab_path, allow_anomaly=False)
        gen_label = read_train_label(gen_lab_path, allow_anomaly=True)
        check_same_size(original, img_path, label, lab_path)
        check_same_size(generated, gen_path, gen_label, gen_lab_path)
        if self.mixup_max > 0:
            generated = mixup(original, generated, min(random.random(), self.mixup_max))
        images, labels = self.to_tensor([original, generated], [label, gen_label])
        if self.transform is not None:
            images, labels = self.transform(images, labels)
        if self.paste is not None:
            images, labels = self.paste(images, labels)
        images, labels = self.normalize(images, labels)
        return {
            "image": images[0].contiguous(),
            "label": labels[0].contiguous(),
            "aug_image": images[1].contiguous(),
            "aug_label": labels[1].contiguous(),
            "name": stem,
        }
