"""How fast does the training pipeline deliver pairs? Images/s at crop 700 on Cityscapes-size data.

Writes a few 1024x2048 Cityscapes + MultiShift + COCO fixtures to a temporary folder, then times
decode speed (OpenCV vs Pillow vs the project's checked reader ``read_rgb``, PNG/JPEG/WebP) and
``MultiShiftPairs`` with each training augmentation (``data.augmentation``: the DeepLab and the
published Mask2Former recipe), mixup and COCO pasting through a DataLoader with 0 and 2 workers.

    python benchmarks/bench_data.py [--pairs 8] [--batches 4] [--workers 0 2]
        [--augmentations deeplab mask2former]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from lib.config import DataConfig
from lib.data import MultiShiftPairs, OutlierObjects, collate_items
from lib.data.coco_ood.mask_bank import write_mask_bank
from lib.data.io import read_rgb
from lib.engine.builders import AUGMENTATIONS, paired_train_transform
from lib.labels import ANOMALY, NUM_CLASSES

CROP = 700


def _photo(h: int, w: int, seed: int) -> np.ndarray:
    """Smooth random image with noise: compresses like a photo, unlike pure noise."""
    rng = np.random.default_rng(seed)
    base = cv2.resize(rng.integers(0, 256, (h // 16, w // 16, 3), dtype=np.uint8), (w, h))
    return np.clip(base.astype(np.int16) + rng.integers(-8, 8, base.shape), 0, 255).astype(np.uint8)


def _label(h: int, w: int, seed: int, anomaly: bool) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lab = cv2.resize(
        rng.integers(0, NUM_CLASSES, (h // 64, w // 64), dtype=np.uint8),
        (w, h),
        interpolation=cv2.INTER_NEAREST,
    )
    if anomaly:
        lab[h // 2 : h // 2 + 150, w // 2 : w // 2 + 200] = ANOMALY
    return lab


def write_fixtures(root: Path, pairs: int) -> None:
    h, w = 1024, 2048
    for i in range(pairs):
        stem = f"aachen_{i:06d}_000019"
        for tree, suffix, anomaly in (("cityscapes", "", False), ("multishift_cityscapes", "_fog", True)):
            img_dir = root / tree / "leftImg8bit/train/aachen"
            gt_dir = root / tree / "gtFine/train/aachen"
            img_dir.mkdir(parents=True, exist_ok=True)
            gt_dir.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(img_dir / f"{stem}{suffix}_leftImg8bit.png"), _photo(h, w, i))
            cv2.imwrite(str(gt_dir / f"{stem}{suffix}_gtFine_labelTrainIds.png"), _label(h, w, i, anomaly))
    coco = root / "coco"
    (coco / "train2017").mkdir(parents=True)
    (coco / "annotations").mkdir()
    cv2.imwrite(str(coco / "train2017/000000000001.jpg"), _photo(480, 640, 99))
    poly = [[100.0, 100.0, 400.0, 120.0, 380.0, 400.0, 120.0, 380.0]]
    ann = {
        "images": [{"id": 1, "file_name": "000000000001.jpg", "height": 480, "width": 640}],
        "annotations": [{"id": 5, "image_id": 1, "category_id": 18, "iscrowd": 0, "segmentation": poly}],
        "categories": [{"id": 18, "name": "dog"}],
    }
    (coco / "annotations/instances_train2017.json").write_text(json.dumps(ann))
    write_mask_bank(coco, exclude=[])


def time_decoders(root: Path) -> None:
    img = _photo(1024, 2048, 0)
    for ext in ("png", "jpg", "webp"):
        path = root / f"decode.{ext}"
        cv2.imwrite(str(path), img)
        timings = {}
        for name, fn in (
            ("opencv", lambda p=path: cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB)),
            ("pillow", lambda p=path: np.asarray(Image.open(p).convert("RGB"))),
            ("read_rgb", lambda p=path: read_rgb(p)),
        ):
            fn()
            start = time.perf_counter()
            for _ in range(5):
                fn()
            timings[name] = (time.perf_counter() - start) / 5 * 1000
        print(
            f"decode {ext:4s} 1024x2048: opencv {timings['opencv']:.1f} ms, "
            f"pillow {timings['pillow']:.1f} ms, checked read_rgb {timings['read_rgb']:.1f} ms "
            f"(pillow/opencv {timings['pillow'] / timings['opencv']:.2f}, "
            f"read_rgb/opencv {timings['read_rgb'] / timings['opencv']:.2f})"
        )


def time_pipeline(root: Path, augmentation: str, workers: int, batches: int, batch_size: int) -> float:
    ds = MultiShiftPairs(
        root / "cityscapes",
        root / "multishift_cityscapes",
        transform=paired_train_transform(DataConfig(augmentation=augmentation, crop_size=CROP)),
        outliers=OutlierObjects(root / "coco"),
    )
    loader = DataLoader(
        ds, batch_size=batch_size, shuffle=True, num_workers=workers, collate_fn=collate_items, drop_last=True
    )
    n, start = 0, None
    for epoch in range(batches * batch_size // len(ds) + 2):
        ds.set_epoch(epoch)
        for batch in loader:
            if start is None:  # skip the first batch: worker start-up
                start = time.perf_counter()
                continue
            n += 2 * batch["image"].shape[0]
            if n >= 2 * batches * batch_size:
                return n / (time.perf_counter() - start)
    return n / (time.perf_counter() - start)


def main(args: argparse.Namespace) -> None:
    print(
        f"torch {torch.__version__}, opencv {cv2.__version__}, python {platform.python_version()}, "
        f"cpus {torch.get_num_threads()} threads"
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        time_decoders(root)
        write_fixtures(root, args.pairs)
        for augmentation in args.augmentations:
            for workers in args.workers:
                rate = time_pipeline(root, augmentation, workers, args.batches, args.batch_size)
                print(
                    f"training pipeline, {augmentation} augmentation, crop {CROP}, float32, "
                    f"{workers} workers: {rate:.2f} images/s (originals + generated)"
                )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument(
        "--augmentations", nargs="+", choices=sorted(AUGMENTATIONS), default=sorted(AUGMENTATIONS)
    )
    main(parser.parse_args())
