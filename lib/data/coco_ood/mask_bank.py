"""The mask-bank tool: COCO instance annotations -> one outlier-object mask PNG per instance.

``python -m lib.data.coco_ood --coco ROOT`` reads ``ROOT/annotations/instances_train2017.json`` and
writes, for every non-crowd instance of a COCO class that Cityscapes does not have,
``ROOT/ood_seg_train2017/{stem}_{ann_id}.png``: a full-image uint8 mask with 0 background,
``ANOMALY`` (254) object and ``IGNORE`` (255) on the object's one-pixel boundary band. As in
Meta-OoD / PEBAL, images that contain any excluded class are skipped altogether, as are images
smaller than ``min_size`` on either side. Polygons and RLE (compressed or not) are decoded by
``pycocotools.mask``, COCO's reference implementation, so masks match every other COCO tool.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as coco_mask

from lib.atomic import write_bytes_atomic
from lib.data.coco_ood import ANNOTATIONS, COCO_TREE, EXCLUDED_CLASSES, MASK_DIR
from lib.data.image_file import read_file_bytes
from lib.data.io import encode_png, expected_tree_error
from lib.errors import UserError
from lib.labels import ANOMALY, IGNORE

SEGMENTATION_FORMS = "polygons [[x1, y1, x2, y2, ...], ...] or RLE {'size': [h, w], 'counts': ...}"


def read_annotations(ann_file: Path) -> dict:
    """The parsed COCO instances file; invalid JSON or a missing top-level list names the file."""
    try:
        coco = json.loads(read_file_bytes(ann_file, "annotations"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(
            f"{ann_file}: not valid JSON ({err}); expected COCO instances annotations (a truncated download?)"
        ) from None
    if not isinstance(coco, dict):
        raise UserError(f"{ann_file}: expected a JSON object with images, annotations and categories")
    for key in ("images", "annotations", "categories"):
        if not isinstance(coco.get(key), list):
            raise UserError(f"{ann_file}: expected a list under {key!r} (COCO instances format)")
    return coco


def required(record: object, key: str, what: str, expected: str = "") -> object:
    """``record[key]``, or an error naming ``what`` (the file and record), the key and what it should hold."""
    if not isinstance(record, dict) or key not in record:
        raise UserError(f"{what} has no {key!r}" + (f"; expected {expected}" if expected else ""))
    return record[key]


def annotation_mask(segmentation: object, height: int, width: int, what: str) -> np.ndarray:
    """An instance's ``segmentation`` (polygons or RLE) as a ``[height, width]`` bool mask.

    Polygons of fewer than three points enclose nothing and are dropped (COCO holds a few).
    """
    if isinstance(segmentation, list):
        try:
            polygons = [np.asarray(p, dtype=np.float64).ravel().tolist() for p in segmentation]
        except (TypeError, ValueError):
            raise UserError(
                f"{what}: polygon coordinates are not numbers; expected {SEGMENTATION_FORMS}"
            ) from None
        if any(len(p) % 2 for p in polygons):
            raise UserError(f"{what}: a polygon has an odd number of coordinates; expected x, y pairs")
        polygons = [p for p in polygons if len(p) >= 6]
        if not polygons:
            return np.zeros((height, width), dtype=bool)
        rle = coco_mask.merge(coco_mask.frPyObjects(polygons, height, width))
    elif isinstance(segmentation, dict) and {"size", "counts"} <= segmentation.keys():
        if list(segmentation["size"]) != [height, width]:
            raise UserError(
                f"{what}: RLE size {segmentation['size']} differs from the image size [{height}, {width}]"
            )
        counts = segmentation["counts"]
        if isinstance(counts, list):
            if any(not isinstance(c, int) or c < 0 for c in counts) or sum(counts) != height * width:
                raise UserError(
                    f"{what}: uncompressed RLE counts must be non-negative integers summing to "
                    f"{height} x {width} = {height * width}"
                )
            rle = coco_mask.frPyObjects(segmentation, height, width)
        elif isinstance(counts, str):
            rle = {"size": [height, width], "counts": counts.encode("ascii", errors="replace")}
        else:
            raise UserError(f"{what}: RLE counts must be a list or a string, got {type(counts).__name__}")
    else:
        raise UserError(f"{what}: unreadable segmentation; expected {SEGMENTATION_FORMS}")
    try:
        return coco_mask.decode(rle).astype(bool)
    except ValueError as err:
        raise UserError(f"{what}: cannot decode its RLE ({err})") from None


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
    coco = read_annotations(ann_file)
    names = {}
    for category in coco["categories"]:
        names[required(category, "id", f"{ann_file}: a category")] = required(
            category, "name", f"{ann_file}: a category"
        )
    unknown = sorted(set(exclude) - set(names.values()))
    if unknown:
        raise UserError(f"{ann_file}: excluded class(es) {unknown} are not COCO category names")
    excluded_ids = {i for i, n in names.items() if n in set(exclude)}
    images = {required(im, "id", f"{ann_file}: an image"): im for im in coco["images"]}
    by_image: dict[int, list[dict]] = {}
    for index, ann in enumerate(coco["annotations"]):
        what = f"{ann_file}: annotation {required(ann, 'id', f'{ann_file}: annotation #{index}')}"
        required(ann, "category_id", what)
        by_image.setdefault(required(ann, "image_id", what), []).append(ann)
    out_dir = coco_root / MASK_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    written = 0
    for image_id, anns in sorted(by_image.items()):
        im = images.get(image_id)
        if im is None:
            raise UserError(f"{ann_file}: annotation {anns[0]['id']} refers to unknown image id {image_id}")
        what = f"{ann_file}: image {image_id}"
        h, w = required(im, "height", what), required(im, "width", what)
        if h < min_size or w < min_size or any(a["category_id"] in excluded_ids for a in anns):
            continue
        stem = Path(str(required(im, "file_name", what))).stem
        for ann in anns:
            if ann.get("iscrowd", 0):
                continue
            target = out_dir / f"{stem}_{ann['id']}.png"
            if target.exists():
                written += 1
                continue
            what = f"{ann_file}: annotation {ann['id']}"
            mask = annotation_mask(required(ann, "segmentation", what, SEGMENTATION_FORMS), h, w, what)
            if not mask.any():
                continue
            write_bytes_atomic(target, encode_png(object_label_map(mask), str(target)))
            written += 1
    return written
