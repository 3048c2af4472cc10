"""COCO outlier objects for outlier exposure: the layout, the dataset, and pasting.

The mask bank is written once by ``python -m lib.data.coco_ood --coco ROOT``
(:mod:`lib.data.coco_ood.mask_bank`): ``ROOT/ood_seg_train2017/{stem}_{ann_id}.png`` per eligible
COCO instance, 0 background, ``ANOMALY`` (254) object, ``IGNORE`` (255) on its boundary band.

:class:`OutlierObjects` serves ``(rgb [h, w, 3] uint8, mask [h, w] uint8)`` cropped to the object's
box; :func:`paste_outlier` pastes one into a training crop (published: after the joint transform).
"""

from __future__ import annotations

import logging
import random
import re
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import Tensor

from lib.data.io import check_same_size, expected_tree_error, read_label, read_rgb
from lib.errors import UserError
from lib.image_tensor import rgb_to_unit
from lib.labels import ANOMALY, IGNORE

log = logging.getLogger(__name__)

EXCLUDED_CLASSES = (
    "person",
    "bicycle",
    "car",
    "motorcycle",
    "bus",
    "train",
    "truck",
    "traffic light",
    "stop sign",
)
"""COCO classes that are Cityscapes classes too (Meta-OoD's list plus ``train``, a Cityscapes class)."""

MASK_DIR = "ood_seg_train2017"
IMAGE_DIR = "train2017"
ANNOTATIONS = "annotations/instances_train2017.json"

MASK_NAME = re.compile(r"^(?P<stem>.+)_(?P<ann_id>\d+)\.png$")
"""A mask file's name: the COCO image stem and the annotation id."""

COCO_TREE = f"""\
{{coco_root}}/
  {IMAGE_DIR}/{{stem}}.jpg                      COCO images as released (.png accepted)
  {ANNOTATIONS}      input of `python -m lib.data.coco_ood`
  {MASK_DIR}/{{stem}}_{{ann_id}}.png       written by the tool: 0 / 254 object / 255 edge
"""


class OutlierObjects:
    """The outlier-object bank: ``(rgb [h, w, 3] uint8, mask [h, w] uint8)`` cropped to each object's box.

    Lists ``{coco_root}/ood_seg_train2017/*.png``; the image is ``train2017/{stem}.jpg`` (or
    ``.png``) with ``stem`` the mask name before its last underscore. Mask values must be
    0 / ``ANOMALY`` / ``IGNORE``.
    """

    def __init__(self, coco_root: str | Path) -> None:
        self.root = Path(coco_root)
        mask_dir, image_dir = self.root / MASK_DIR, self.root / IMAGE_DIR
        for d in (mask_dir, image_dir):
            if not d.is_dir():
                raise expected_tree_error(d, COCO_TREE.replace("{coco_root}", str(self.root)))
        self.items: list[tuple[Path, Path]] = []
        for mask in sorted(mask_dir.glob("*.png")):
            name = MASK_NAME.match(mask.name)
            if name is None:
                raise UserError(
                    f"{mask}: not a mask-bank file name; expected {{stem}}_{{ann_id}}.png "
                    "(remove stray files from this folder)"
                )
            stem = name["stem"]
            image = next(
                (p for p in (image_dir / f"{stem}.jpg", image_dir / f"{stem}.png") if p.is_file()), None
            )
            if image is None:
                raise FileNotFoundError(f"{mask}: no image {image_dir / stem}.jpg (or .png) for this mask")
            self.items.append((image, mask))
        if not self.items:
            raise FileNotFoundError(
                f"{mask_dir}: no object masks; create them with "
                f"`python -m lib.data.coco_ood --coco {self.root}`"
            )

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        image_path, mask_path = self.items[index]
        mask = read_label(mask_path)
        bad = np.setdiff1d(np.unique(mask), (0, ANOMALY, IGNORE))
        if bad.size:
            raise UserError(
                f"{mask_path}: invalid mask value(s) {bad.tolist()}; expected 0, {ANOMALY}, {IGNORE}"
            )
        rgb = read_rgb(image_path)
        check_same_size(rgb, image_path, mask, mask_path)
        rows, cols = np.flatnonzero((mask == ANOMALY).any(1)), np.flatnonzero((mask == ANOMALY).any(0))
        if rows.size == 0:
            raise UserError(f"{mask_path}: mask holds no object pixels ({ANOMALY})")
        box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
        return np.ascontiguousarray(rgb[box]), np.ascontiguousarray(mask[box])


def paste_outlier(
    image: Tensor,
    label: Tensor,
    rgb: np.ndarray,
    mask: np.ndarray,
    scale: float,
    *,
    rng: random.Random | None = None,
) -> tuple[Tensor, Tensor]:
    """Paste an object, rescaled by ``scale``, at a uniform random position; its pixels become ``ANOMALY``.

    ``image``: ``[3, H, W]`` in ``0..1`` (before normalisation), ``label``: ``[H, W]`` int64; both
    are modified in place and returned. An object larger than the image is shrunk to fit. The
    position comes from ``rng`` (default: the ``random`` module).
    """
    rng = random if rng is None else rng
    h, w = image.shape[-2:]
    oh, ow = mask.shape
    s = min(scale, h / oh, w / ow)
    size = (max(1, int(ow * s)), max(1, int(oh * s)))
    rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_LINEAR)
    mask = cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST)
    oh, ow = mask.shape
    top, left = rng.randint(0, h - oh), rng.randint(0, w - ow)
    obj = torch.from_numpy(mask == ANOMALY)
    patch = rgb_to_unit(rgb)
    region = image[:, top : top + oh, left : left + ow]
    region.copy_(torch.where(obj, patch, region))
    label[top : top + oh, left : left + ow][obj] = ANOMALY
    return image, label
