"""Writers of tiny datasets in the real on-disk layouts and file names, for tests of any module.

Each writer takes the datasets root (e.g. ``tmp_path``), writes a few small images with label
values that exercise every rule of that dataset, and returns what it wrote (stems, counts) so
tests can check against it. Images are deterministic; ``colour_of(label)`` paints a label map so
that alignment can be checked after geometric transforms.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from lib.labels import ANOMALY, IGNORE, NUM_CLASSES

CITIES = ("aachen", "bochum")


def colour_of(label: np.ndarray) -> np.ndarray:
    """``[H, W]`` uint8 label -> ``[H, W, 3]`` uint8 RGB, a bijection so the label can be read back."""
    lab = label.astype(np.int32)
    return np.stack([lab, (lab * 7) % 256, 255 - lab], axis=-1).astype(np.uint8)


def write_rgb(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    params = [cv2.IMWRITE_WEBP_QUALITY, 101] if path.suffix == ".webp" else []
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params):
        raise OSError(f"cannot write {path}")


def write_gray(path: Path, label: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), label.astype(np.uint8)):
        raise OSError(f"cannot write {path}")


def train_label(h: int, w: int, seed: int, *, anomaly: bool = False) -> np.ndarray:
    """A blocky trainId map using every class, IGNORE, and (optionally) an ANOMALY square."""
    rng = np.random.default_rng(seed)
    values = np.append(np.arange(NUM_CLASSES), IGNORE).astype(np.uint8)
    blocks = rng.permutation(np.resize(values, ((h + 3) // 4) * ((w + 3) // 4)))
    lab = np.kron(blocks.reshape((h + 3) // 4, (w + 3) // 4), np.ones((4, 4), np.uint8))[:h, :w]
    if anomaly:
        lab[h // 4 : h // 2, w // 4 : w // 2] = ANOMALY
    return lab.astype(np.uint8)


def write_cityscapes(
    root: Path, *, split: str = "train", per_city: int = 2, size: tuple[int, int] = (32, 64)
) -> list[str]:
    """``root/cityscapes`` with ``per_city`` frames in each of two cities; returns the stems."""
    h, w = size
    stems = []
    for c, city in enumerate(CITIES):
        for i in range(per_city):
            stem = f"{city}_{c:06d}_{i:06d}"
            lab = train_label(h, w, seed=10 * c + i)
            write_rgb(
                root / "cityscapes" / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", colour_of(lab)
            )
            write_gray(
                root / "cityscapes" / "gtFine" / split / city / f"{stem}_gtFine_labelTrainIds.png", lab
            )
            stems.append(stem)
    return sorted(stems)


def write_multishift(
    root: Path, stems: list[str], *, split: str = "train", variants: int = 2, size: tuple[int, int] = (32, 64)
) -> dict[str, list[str]]:
    """``root/multishift_cityscapes``: ``variants`` generated images for all but the last stem.

    Variant ``k`` has the domain suffix ``_gen{k}`` and an ANOMALY square. Returns original stem
    -> generated stems.
    """
    h, w = size
    out: dict[str, list[str]] = {}
    for s, stem in enumerate(stems[:-1]):
        city = stem.split("_")[0]
        for k in range(variants):
            gen = f"{stem}_gen{k}"
            lab = train_label(h, w, seed=100 + 10 * s + k, anomaly=True)
            base = root / "multishift_cityscapes"
            write_rgb(base / "leftImg8bit" / split / city / f"{gen}_leftImg8bit.png", colour_of(lab))
            write_gray(base / "gtFine" / split / city / f"{gen}_gtFine_labelTrainIds.png", lab)
            out.setdefault(stem, []).append(gen)
    return out


def write_coco(root: Path, *, size: tuple[int, int] = (40, 48)) -> dict:
    """``root/coco`` with 3 images and an ``instances_train2017.json`` of polygon, RLE and crowd
    annotations; image 3 holds a person (excluded). Returns the annotation dict."""
    h, w = size
    coco = root / "coco"
    images = [{"id": i, "file_name": f"{i:012d}.jpg", "height": h, "width": w} for i in (1, 2, 3)]
    for im in images:
        write_rgb(coco / "train2017" / im["file_name"], np.full((h, w, 3), 40 * im["id"], np.uint8))
    square = [[10.0, 5.0, 30.0, 5.0, 30.0, 25.0, 10.0, 25.0]]
    col = np.zeros((h, w), bool)
    col[2:12, 3:9] = True
    runs, flat, cur, n = [], col.T.ravel(), False, 0
    for v in flat:
        if v != cur:
            runs.append(n)
            cur, n = v, 0
        n += 1
    runs.append(n)
    anns = [
        {"id": 11, "image_id": 1, "category_id": 18, "iscrowd": 0, "segmentation": square},
        {
            "id": 12,
            "image_id": 1,
            "category_id": 62,
            "iscrowd": 1,
            "segmentation": {"size": [h, w], "counts": runs},
        },
        {
            "id": 21,
            "image_id": 2,
            "category_id": 62,
            "iscrowd": 0,
            "segmentation": {"size": [h, w], "counts": runs},
        },
        {"id": 31, "image_id": 3, "category_id": 18, "iscrowd": 0, "segmentation": square},
        {"id": 32, "image_id": 3, "category_id": 1, "iscrowd": 0, "segmentation": square},
    ]
    cats = [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}, {"id": 62, "name": "chair"}]
    for name, cid in (("bicycle", 2), ("car", 3), ("motorcycle", 4), ("bus", 6), ("train", 7), ("truck", 8)):
        cats.append({"id": cid, "name": name})
    cats += [{"id": 10, "name": "traffic light"}, {"id": 13, "name": "stop sign"}]
    data = {"images": images, "annotations": anns, "categories": cats}
    (coco / "annotations").mkdir(parents=True, exist_ok=True)
    (coco / "annotations" / "instances_train2017.json").write_text(json.dumps(data))
    return data


def _ood_image_label(h: int, w: int, values: list[int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    lab = np.zeros((h, w), np.uint8)
    for i, v in enumerate(values):
        lab[:, i * w // len(values) : (i + 1) * w // len(values)] = v
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8), lab


def write_flat_benchmark(
    root: Path,
    folder: str,
    image_dir: str,
    label_dir: str,
    image_ext: str,
    label_suffix: str,
    values: list[int],
    *,
    n: int = 2,
    unlabelled: int = 0,
    size: tuple[int, int] = (24, 40),
) -> list[str]:
    """A flat image/label benchmark; ``unlabelled`` extra images have no label. Returns labelled stems."""
    stems = []
    for i in range(n + unlabelled):
        stem = f"{Path(folder).name}_{i:03d}"
        img, lab = _ood_image_label(*size, values, seed=i)
        write_rgb(root / folder / image_dir / f"{stem}{image_ext}", img)
        if i < n:
            write_gray(root / folder / label_dir / f"{stem}{label_suffix}", lab)
            stems.append(stem)
    return stems


def write_all_flat_benchmarks(root: Path) -> dict[str, list[str]]:
    """RoadAnomaly, RoadAnomaly21 (+1 unlabelled test image), RoadObstacle21 (WebP), FS_* trees."""
    return {
        "RoadAnomaly": write_flat_benchmark(
            root, "road_anomaly", "original", "labels", ".jpg", ".png", [0, 1]
        ),
        "RoadAnomaly21": write_flat_benchmark(
            root,
            "dataset_AnomalyTrack",
            "images",
            "labels_masks",
            ".jpg",
            "_labels_semantic.png",
            [0, 1, 255],
            unlabelled=1,
        ),
        "RoadObstacle21": write_flat_benchmark(
            root,
            "dataset_ObstacleTrack",
            "images",
            "labels_masks",
            ".webp",
            "_labels_semantic.png",
            [0, 1, 255],
            unlabelled=1,
        ),
        "FS_LostAndFound": write_flat_benchmark(
            root, "fs_lost_and_found", "original", "labels", ".png", ".png", [0, 1, 255]
        ),
        "FS_Static": write_flat_benchmark(
            root, "fs_static", "original", "labels", ".png", ".png", [0, 1, 255]
        ),
    }


MUAD_VALUES = [0, 5, 18, NUM_CLASSES, NUM_CLASSES + 1, IGNORE]


def write_muad_like(
    root: Path, folder: str = "MUAD_challenge/test_sets/test_OOD", *, n: int = 2, release_names: bool = False
) -> list[str]:
    """MUAD-encoded set: trainIds, 19, 20 and 255 in every label. Files are named ``{stem}.png``
    (the ToyShift test-set layout) or, with ``release_names``, as in the MUAD release:
    ``{stem}_leftImg8bit.png`` and ``{stem}_leftLabel.png``."""
    image_ext, label_suffix = ("_leftImg8bit.png", "_leftLabel.png") if release_names else (".png", ".png")
    return write_flat_benchmark(
        root, folder, "leftImg8bit", "leftLabel", image_ext, label_suffix, MUAD_VALUES, n=n
    )


ACDC_VALUES = [0, 7, 26, 1, 100, 124]
"""void, road, car, ego vehicle (an id without trainId), two inserted objects."""


def write_acdc_poc(
    root: Path,
    *,
    domains: tuple[str, ...] = ("fog", "night", "rain", "snow"),
    size: tuple[int, int] = (24, 36),
) -> list[str]:
    """``root/acdc_poc`` with one sequence and one frame per domain (reconstructed .png images)."""
    stems = []
    for d, domain in enumerate(domains):
        stem = f"GOPR{d:04d}_frame_000001_rgb_anon_poc0"
        img, lab = _ood_image_label(*size, ACDC_VALUES, seed=d)
        base = root / "acdc_poc"
        write_rgb(
            base / "rgb_anon_trainvaltest" / "rgb_anon" / domain / "val" / f"GOPR{d:04d}" / f"{stem}.png", img
        )
        write_gray(base / "gt_trainval" / "gt" / domain / "val" / f"GOPR{d:04d}" / f"{stem}.png", lab)
        stems.append(stem)
    return stems


def write_training_tree(root: Path, *, size: tuple[int, int] = (24, 48)) -> list[str]:
    """Everything a training run reads: Cityscapes + one generated variant each, the flat benchmarks
    (validation), COCO and its outlier mask bank. Returns the Cityscapes stems."""
    from lib.data.coco_ood.mask_bank import write_mask_bank

    stems = write_cityscapes(root, per_city=2, size=size)
    write_multishift(root, stems, variants=1, size=size)
    write_all_flat_benchmarks(root)
    write_coco(root)
    write_mask_bank(root / "coco", min_size=1)
    return stems
