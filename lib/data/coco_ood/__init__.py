"""COCO outlier objects for outlier exposure: the mask-bank tool, the dataset, and pasting.

Tool (run once): ``python -m lib.data.coco_ood --coco ROOT`` reads
``ROOT/annotations/instances_train2017.json`` (plain JSON; polygons rasterised with OpenCV,
compressed and uncompressed RLE decoded here, no pycocotools) and writes, for every non-crowd
instance of a COCO class that Cityscapes does not have, ``ROOT/ood_seg_train2017/{stem}_{ann_id}.png``:
a full-image uint8 mask with 0 background, ``ANOMALY`` (254) object and ``IGNORE`` (255) on the
object's one-pixel boundary band. As in Meta-OoD / PEBAL, images that contain any excluded class
are skipped altogether, as are images smaller than ``--min-size`` on either side.

:class:`OutlierObjects` serves ``(rgb [h, w, 3] uint8, mask [h, w] uint8)`` cropped to the object's
box; :func:`paste_outlier` pastes one into a training crop (published: after the joint transform).
"""

from __future__ import annotations

import json
import logging
import os
import random
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import Tensor

from lib.data.io import expected_tree_error, read_label, read_rgb
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

COCO_TREE = f"""\
{{coco_root}}/
  {IMAGE_DIR}/{{stem}}.jpg                      COCO images as released (.png accepted)
  {ANNOTATIONS}      input of `python -m lib.data.coco_ood`
  {MASK_DIR}/{{stem}}_{{ann_id}}.png       written by the tool: 0 / 254 object / 255 edge
"""


def decode_rle_string(counts: str) -> list[int]:
    """Decode COCO's compressed RLE string (LEB128-like, 5 bits per char, deltas from the 3rd run)."""
    runs: list[int] = []
    data = counts.encode("ascii")
    p = 0
    while p < len(data):
        x, k, more = 0, 0, True
        while more:
            if p >= len(data):
                raise ValueError(f"truncated compressed RLE string {counts[:40]!r}")
            c = data[p] - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(runs) > 2:
            x += runs[-2]
        runs.append(x)
    return runs


def rle_to_mask(counts: Sequence[int] | str, height: int, width: int) -> np.ndarray:
    """COCO RLE (column-major runs starting with zeros) -> ``[height, width]`` bool mask."""
    runs = decode_rle_string(counts) if isinstance(counts, str) else list(counts)
    if sum(runs) != height * width or min(runs, default=0) < 0:
        raise ValueError(f"RLE runs sum to {sum(runs)}, expected {height}x{width} = {height * width}")
    flat = np.repeat(np.arange(len(runs)) % 2 == 1, runs)
    return flat.reshape(width, height).T


def polygons_to_mask(polygons: Sequence[Sequence[float]], height: int, width: int) -> np.ndarray:
    """Rasterise COCO polygons ``[[x1, y1, x2, y2, ...], ...]`` into a ``[height, width]`` bool mask."""
    canvas = np.zeros((height, width), dtype=np.uint8)
    pts = [
        np.round(np.asarray(p, dtype=np.float64).reshape(-1, 2)).astype(np.int32)
        for p in polygons
        if len(p) >= 6
    ]
    if pts:
        cv2.fillPoly(canvas, pts, 1)
    return canvas.astype(bool)


def annotation_mask(segmentation: list | dict, height: int, width: int) -> np.ndarray:
    """An instance's ``segmentation`` (polygons or RLE) as a ``[height, width]`` bool mask."""
    if isinstance(segmentation, list):
        return polygons_to_mask(segmentation, height, width)
    h, w = segmentation["size"]
    if (h, w) != (height, width):
        raise ValueError(f"RLE size {h}x{w} differs from the image size {height}x{width}")
    return rle_to_mask(segmentation["counts"], height, width)


def object_label_map(mask: np.ndarray) -> np.ndarray:
    """Bool object mask -> uint8 map: 0 background, ``ANOMALY`` object, ``IGNORE`` boundary band."""
    m = mask.astype(np.uint8)
    kernel = np.ones((3, 3), np.uint8)
    edge = cv2.dilate(m, kernel).astype(bool) & ~cv2.erode(m, kernel).astype(bool)
    out = np.where(mask, ANOMALY, 0).astype(np.uint8)
    out[edge] = IGNORE
    return out


def write_mask_bank(
    coco_root: str | Path, *, exclude: Sequence[str] = EXCLUDED_CLASSES, min_size: int = 480
) -> int:
    """Write one mask PNG per eligible instance (skips existing files: resumable). Returns the count."""
    coco_root = Path(coco_root)
    ann_file = coco_root / ANNOTATIONS
    if not ann_file.is_file():
        raise expected_tree_error(ann_file, COCO_TREE)
    with open(ann_file) as f:
        coco = json.load(f)
    names = {c["id"]: c["name"] for c in coco["categories"]}
    unknown = sorted(set(exclude) - set(names.values()))
    if unknown:
        raise ValueError(f"{ann_file}: excluded class(es) {unknown} are not COCO category names")
    excluded_ids = {i for i, n in names.items() if n in set(exclude)}
    images = {im["id"]: im for im in coco["images"]}
    by_image: dict[int, list[dict]] = {}
    for ann in coco["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    out_dir = coco_root / MASK_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    written = 0
    for image_id, anns in sorted(by_image.items()):
        im = images.get(image_id)
        if im is None:
            raise ValueError(f"{ann_file}: annotation refers to unknown image id {image_id}")
        h, w = im["height"], im["width"]
        if h < min_size or w < min_size or any(a["category_id"] in excluded_ids for a in anns):
            continue
        stem = Path(im["file_name"]).stem
        for ann in anns:
            if ann.get("iscrowd", 0):
                continue
            target = out_dir / f"{stem}_{ann['id']}.png"
            if target.exists():
                written += 1
                continue
            mask = annotation_mask(ann["segmentation"], h, w)
            if not mask.any():
                continue
            tmp = target.with_name(target.stem + ".tmp.png")
            if not cv2.imwrite(str(tmp), object_label_map(mask)):
                raise OSError(f"cannot write {tmp}")
            os.replace(tmp, target)
            written += 1
    return written


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
            stem = mask.stem.rsplit("_", 1)[0]
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
            raise ValueError(
                f"{mask_path}: invalid mask value(s) {bad.tolist()}; expected 0, {ANOMALY}, {IGNORE}"
            )
        rgb = read_rgb(image_path)
        if rgb.shape[:2] != mask.shape:
            raise ValueError(
                f"{mask_path}: size {mask.shape} differs from its image {image_path} {rgb.shape[:2]}"
            )
        rows, cols = np.flatnonzero((mask == ANOMALY).any(1)), np.flatnonzero((mask == ANOMALY).any(0))
        if rows.size == 0:
            raise ValueError(f"{mask_path}: mask holds no object pixels ({ANOMALY})")
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
    patch = torch.from_numpy(rgb).permute(2, 0, 1).float().div_(255.0)
    region = image[:, top : top + oh, left : left + ow]
    region.copy_(torch.where(obj, patch, region))
    label[top : top + oh, left : left + ow][obj] = ANOMALY
    return image, label
