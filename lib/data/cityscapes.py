"""Cityscapes in its official layout, for closed-world training and as the source of originals.

``{root}/leftImg8bit/{split}/{city}/{city}_{seq}_{frame}_leftImg8bit.png`` with
``{root}/gtFine/{split}/{city}/{city}_{seq}_{frame}_gtFine_labelTrainIds.png``. The same layout,
with stems that may carry a suffix after the frame, holds the CG-Aug output
(``multishift_cityscapes/``).
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from lib.data.crop_early import Frames, can_plan, run_crop_early
from lib.data.io import (
    check_same_size,
    expected_tree_error,
    index_by_stem,
    pair_by_stem,
    read_label,
    read_rgb,
)
from lib.data.levels import level_counts
from lib.data.transforms import IMAGENET_MEAN, IMAGENET_STD, JointTransform, Normalize, ToTensor
from lib.labels import check_train_label

IMAGE_SUFFIX = "_leftImg8bit.png"
TRAIN_ID_SUFFIX = "_gtFine_labelTrainIds.png"
LABEL_ID_SUFFIX = "_gtFine_labelIds.png"

CITYSCAPES_TREE = """\
{root}/
  leftImg8bit/{split}/{city}/{city}_{seq}_{frame}[_{domain}]_leftImg8bit.png
  gtFine/{split}/{city}/{city}_{seq}_{frame}[_{domain}]_gtFine_labelTrainIds.png
"""


def present_values(label: np.ndarray) -> np.ndarray:
    """The distinct values of a uint8 map, via a histogram (much faster than ``np.unique`` on 2 MP)."""
    return np.flatnonzero(level_counts(label)).astype(np.uint8)


def list_cityscapes_split(root: str | Path, split: str) -> list[tuple[str, str, Path, Path]]:
    """List ``(city, stem, image, trainId label)`` of a Cityscapes-layout split, sorted.

    ``stem`` is the file name before ``_leftImg8bit.png``. Raises if a folder is missing, an
    image or label has no partner, or only ``labelIds`` exist (with the converter to run).
    """
    root = Path(root)
    img_dir, gt_dir = root / "leftImg8bit" / split, root / "gtFine" / split
    tree = CITYSCAPES_TREE.replace("{root}", str(root)).replace("{split}", split)
    for d in (img_dir, gt_dir):
        if not d.is_dir():
            raise expected_tree_error(d, tree)
    images = index_by_stem(img_dir.glob(f"*/*{IMAGE_SUFFIX}"), IMAGE_SUFFIX, "image")
    labels = index_by_stem(gt_dir.glob(f"*/*{TRAIN_ID_SUFFIX}"), TRAIN_ID_SUFFIX, "label")
    if images and not labels and any(gt_dir.glob(f"*/*{LABEL_ID_SUFFIX}")):
        raise FileNotFoundError(
            f"{gt_dir}: found *{LABEL_ID_SUFFIX} but no *{TRAIN_ID_SUFFIX}. Create the trainId maps "
            f"with the official converter: CITYSCAPES_DATASET={root} csCreateTrainIdLabelImgs "
            "(from the cityscapesscripts package)"
        )
    pairs = pair_by_stem(images, labels, source=str(root / split))
    out = []
    for stem, img, lab in pairs:
        if img.parent.name != lab.parent.name:
            raise ValueError(f"{img} and {lab} lie in different city folders")
        out.append((img.parent.name, stem, img, lab))
    return out


def read_train_label(path: Path, *, allow_anomaly: bool) -> np.ndarray:
    """Read a trainId map and check its values (trainIds, IGNORE and optionally ANOMALY)."""
    label = read_label(path)
    check_train_label(present_values(label), str(path), allow_anomaly=allow_anomaly)
    return label


class CityscapesSeg(Dataset):
    """Cityscapes images with trainId labels for closed-world training or validation.

    Item: ``{"image": float32 [3, H, W] normalised, "label": int64 [H, W], "name": stem}``.
    ``transform`` is a joint transform on ``0..1`` tensors (see :mod:`lib.data.transforms`);
    normalisation by ``mean``/``std`` always comes last. With ``crop_early`` and a transform that
    draws its steps, only the part of the frame that the final crop keeps is processed
    (:mod:`lib.data.crop_early`), from the same draws of the ``random`` module.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        transform: JointTransform | None = None,
        *,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
        crop_early: bool = True,
    ) -> None:
        self.root, self.split = Path(root), split
        self.samples = list_cityscapes_split(self.root, split)
        self.transform = transform
        self.crop_early = crop_early and transform is not None and can_plan(transform)
        self.to_tensor, self.normalize = ToTensor(), Normalize(mean, std)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | str]:
        _, stem, img_path, lab_path = self.samples[index]
        image, label = read_rgb(img_path), read_train_label(lab_path, allow_anomaly=False)
        check_same_size(image, img_path, label, lab_path)
        if self.crop_early:
            frames = Frames([image], [label])
            images, labels = run_crop_early(self.transform.draw(frames.size, random), frames)
        else:
            images, labels = self.to_tensor([image], [label])
            if self.transform is not None:
                images, labels = self.transform(images, labels)
        images, labels = self.normalize(images, labels)
        return {"image": images[0].contiguous(), "label": labels[0].contiguous(), "name": stem}
