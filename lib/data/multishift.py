"""Training pairs: each Cityscapes original with one of its CG-Aug variants (MultiShift Cityscapes).

Generated stems start with the Cityscapes stem ``{city}_{seq}_{frame}`` and may carry a domain
suffix; their labels hold trainIds plus ``ANOMALY`` for the generated object. Per item, in the
published order: mixup of the generated image with its original, one joint transform for the
pair, optional pasting of a COCO outlier object into the transformed original, normalisation.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from lib.data.cityscapes import list_cityscapes_split, read_train_label
from lib.data.coco_ood import OutlierObjects
from lib.data.crop_early import Frames, can_plan, run_crop_early
from lib.data.io import check_same_size, read_rgb
from lib.data.pasting import PasteOutliers
from lib.data.transforms import IMAGENET_MEAN, IMAGENET_STD, JointTransform, Normalize, run_steps
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


def _mix_generated(images: list[np.ndarray], p: float) -> list[np.ndarray]:
    """``[original, generated]`` -> ``[original, mixup(original, generated, p)]`` (pixel-wise)."""
    return [images[0], mixup(images[0], images[1], p)]


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

    Every random draw of an item (mixup, augmentation, pasting) comes from its own generator
    seeded by ``(seed, epoch, index)``: the same in any number of DataLoader workers, persistent
    or not, different per epoch and, since ranks hold disjoint indices, per rank. The epoch lives
    in shared memory so that persistent workers see :meth:`set_epoch`. With ``crop_early`` (and a
    transform that draws its steps, e.g. :class:`~lib.data.transforms.Compose`), only the part of
    the frames that the final crop keeps is processed (:mod:`lib.data.crop_early`); otherwise
    whole frames, for the same draws.
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
        crop_early: bool = True,
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
        self.normalize = Normalize(mean, std)
        self.crop_early = crop_early and transform is not None and can_plan(transform)
        self.seed = seed
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        """Select this epoch's variants and draws (call before building the iterator)."""
        self._epoch.fill_(epoch)

    def variant_index(self, index: int) -> int:
        """The variant drawn for pair ``index`` in the current epoch."""
        n = len(self.pairs[index][2])
        return int(np.random.default_rng((self.seed, self.epoch, index)).integers(n)) if n > 1 else 0

    def item_rng(self, index: int) -> random.Random:
        """The generator of pair ``index``'s draws in the current epoch."""
        state = np.random.SeedSequence((self.seed, self.epoch, index, 1)).generate_state(2, np.uint64)
        return random.Random(int(state[0]) << 64 | int(state[1]))

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
        rng = self.item_rng(index)
        prepare = None
        if self.mixup_max > 0:
            p = min(rng.random(), self.mixup_max)
            prepare = partial(_mix_generated, p=p)
        frames = Frames([original, generated], [label, gen_label], prepare)
        if self.transform is None:
            images, labels = frames.whole()
        elif self.crop_early:
            images, labels = run_crop_early(self.transform.draw(frames.size, rng), frames)
        elif can_plan(self.transform):
            images, labels = run_steps(self.transform.draw(frames.size, rng), *frames.whole())
        else:
            images, labels = self.transform(*frames.whole())
        if self.paste is not None:
            images, labels = self.paste(images, labels, rng)
        images, labels = self.normalize(images, labels)
        return {
            "image": images[0].contiguous(),
            "label": labels[0].contiguous(),
            "aug_image": images[1].contiguous(),
            "aug_label": labels[1].contiguous(),
            "name": stem,
        }
