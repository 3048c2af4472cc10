"""How fast does the training pipeline deliver pairs? Crop-early vs full-frame images/s at crop 700.

Writes a few 1024x2048 Cityscapes + MultiShift + COCO fixtures to a temporary folder, times decode
speed (OpenCV vs Pillow vs the project's checked reader ``read_rgb``, PNG/JPEG/WebP), then, for
each training augmentation (``data.augmentation``: the DeepLab and the published Mask2Former
recipe), runs ``MultiShiftPairs`` (decoding, mixup, augmentation, COCO pasting) with
``crop_early`` on and off on the same items and draws, each in a timed pass of its own, in one
thread as each DataLoader worker runs (``--threads``), and ends with one line per recipe: images/s
of both, the speed-up, the largest image difference (0..1 units) and the share of differing label
pixels.
The cost of a pair depends on its draws (which colour steps, which scale), so the comparison
runs 64 draws by default; fewer make the ratio a matter of luck.

The full-frame path spends much of its time in page faults on its large temporaries (glibc hands
allocations above 32 MB straight back to the system); compare with them kept, e.g.
``MALLOC_MMAP_THRESHOLD_=268435456 MALLOC_TRIM_THRESHOLD_=1073741824 python benchmarks/bench_data.py``.

    python benchmarks/bench_data.py [--pairs 8] [--epochs 8] [--threads 1] [--workers 0 2]
        [--augmentations deeplab mask2former]
"""

from __future__ import annotations

import argparse
import json
import os
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


def _pairs(root: Path, augmentation: str, crop_early: bool) -> MultiShiftPairs:
    return MultiShiftPairs(
        root / "cityscapes",
        root / "multishift_cityscapes",
        transform=paired_train_transform(DataConfig(augmentation=augmentation, crop_size=CROP)),
        outliers=OutlierObjects(root / "coco"),
        crop_early=crop_early,
    )


def _seconds_per_pass(ds: MultiShiftPairs, epochs: int) -> float:
    """CPU seconds of this one thread (user and system, page faults included) for every item of
    ``epochs`` epochs, after one untimed item; a busy neighbour on the machine adds none."""
    ds[0]
    seconds = 0.0
    for epoch in range(epochs):
        ds.set_epoch(epoch)
        for index in range(len(ds)):
            start = time.process_time()
            ds[index]
            seconds += time.process_time() - start
    return seconds


def compare_pipelines(root: Path, augmentation: str, epochs: int) -> str:
    """Crop-early vs full-frame on the same items and draws: each pipeline timed in a pass of its
    own, as a DataLoader worker runs one of them (taking turns item by item changes what the
    memory allocator keeps, and slowed the full-frame path by up to 20%), then both compared in
    an untimed pass; the summary line with speed-up and differences."""
    early, full = _pairs(root, augmentation, True), _pairs(root, augmentation, False)
    seconds = {"early": _seconds_per_pass(early, epochs), "full": _seconds_per_pass(full, epochs)}
    std = torch.tensor(DataConfig().std).view(3, 1, 1)
    max_diff, mismatched, pixels = 0.0, 0, 0
    for epoch in range(epochs):
        early.set_epoch(epoch)
        full.set_epoch(epoch)
        for index in range(len(early)):
            a, b = early[index], full[index]
            for image, label in (("image", "label"), ("aug_image", "aug_label")):
                diff = (a[image] - b[image]).abs() * std  # in 0..1 units
                max_diff = max(max_diff, float(diff.max()))
                mismatched += int((a[label] != b[label]).sum())
                pixels += b[label].numel()
    n = 2 * epochs * len(early)
    rate_early, rate_full = n / seconds["early"], n / seconds["full"]
    return (
        f"{augmentation}: crop-early {rate_early:.2f} img/s vs full-frame {rate_full:.2f} img/s "
        f"({rate_early / rate_full:.1f}x), max image diff {max_diff:.2g}, "
        f"label mismatch {100 * mismatched / pixels:.4f}%"
    )


def time_loader(root: Path, augmentation: str, workers: int, batches: int, batch_size: int) -> float:
    """Images/s of the default (crop-early) pipeline through a DataLoader."""
    ds = _pairs(root, augmentation, True)
    loader = DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        collate_fn=collate_items,
        drop_last=True,
        persistent_workers=workers > 0,
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
    torch.set_num_threads(args.threads)  # default 1: one thread per process, as in DataLoader workers
    cv2.setNumThreads(args.threads)
    load = os.getloadavg()
    print(
        f"torch {torch.__version__}, opencv {cv2.__version__}, python {platform.python_version()}, "
        f"{os.cpu_count()} cpus, torch threads {torch.get_num_threads()}, "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        time_decoders(root)
        write_fixtures(root, args.pairs)
        for augmentation in args.augmentations:
            for workers in args.workers:
                rate = time_loader(root, augmentation, workers, args.batches, args.batch_size)
                print(
                    f"crop-early training pipeline, {augmentation} augmentation, crop {CROP}, "
                    f"{workers} workers: {rate:.2f} images/s (originals + generated)"
                )
        summary = [compare_pipelines(root, augmentation, args.epochs) for augmentation in args.augmentations]
    load = os.getloadavg()
    print(f"load average at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print("\n".join(summary))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--workers", type=int, nargs="*", default=[], help="also time DataLoaders")
    parser.add_argument(
        "--epochs",
        type=int,
        default=8,
        help="epochs of the crop-early/full-frame comparison (8 x 8 = 64 draws)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch and OpenCV threads")
    parser.add_argument(
        "--augmentations", nargs="+", choices=AUGMENTATIONS.names(), default=AUGMENTATIONS.names()
    )
    main(parser.parse_args())
