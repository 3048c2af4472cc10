"""Write ToyShift datasets to disk in the real formats, so the real loaders read them unchanged.

- :func:`write_source_dataset`: Cityscapes layout (``leftImg8bit`` + ``gtFine`` trainIds), source domain.
- :func:`write_outlier_bank`: training-family objects in the COCO outlier layout (image + mask
  with ``ANOMALY`` object and an ``IGNORE`` edge band), replacing COCO outlier pasting.
- :func:`write_benchmark`: test sets in the MUAD encoding (trainIds, ``NUM_CLASSES`` = anomaly,
  ``IGNORE`` = void) for the kinds ``anomaly``, ``shift`` and ``covariate``.

Every file is written atomically (:mod:`lib.atomic`) and files that already exist
are skipped, so an interrupted run resumes. Each image draws its own seed from
``(seed, set, index)``, so image ``i`` is the same whatever ``n`` is. Each written set gets a
``toyshift.json`` manifest; writing into a set made with other parameters is an error.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from tqdm import tqdm

from lib.atomic import atomic_open, write_text_atomic
from lib.errors import UserError
from lib.labels import ANOMALY, IGNORE, NUM_CLASSES
from lib.toy.anomalies import TEST_FAMILIES, TRAIN_FAMILIES, place_anomaly, sample_anomaly_mask
from lib.toy.domains import SOURCE_DOMAIN, sample_shifted_domain
from lib.toy.render import render
from lib.toy.scenes import MIN_HEIGHT, MIN_WIDTH, sample_scene

VERSION = 1
MANIFEST = "toyshift.json"
MUAD_ANOMALY = NUM_CLASSES
"""MUAD labels its anomalies with the first id after the trainIds."""

TRAIN_CITIES = ("toyburg", "pixelheim", "shiftdorf")
VAL_CITIES = ("validstadt",)
BENCHMARK_KINDS = ("anomaly", "shift", "covariate")
_SPLIT_CODE = {"train": 0, "val": 1, "outliers": 2}
_KIND_CODE = {"anomaly": 3, "shift": 4, "covariate": 5}


def _rng(seed: int, part: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, part, index])


def _write_png(path: Path, array: np.ndarray) -> None:
    """Write a PNG atomically."""
    with atomic_open(path, "wb") as handle:
        Image.fromarray(array).save(handle, format="PNG", compress_level=1)


def _manifest(folder: Path, content: dict) -> None:
    """Check an existing manifest agrees on everything but the counts, then (re)write it."""
    path = folder / MANIFEST
    if path.exists():
        old = json.loads(path.read_text())
        fixed = {k: v for k, v in content.items() if k != "counts"}
        differs = {k: (old.get(k), v) for k, v in fixed.items() if old.get(k) != v}
        if differs:
            raise UserError(
                f"{path} was written with other parameters (key: (existing, requested)): {differs}; "
                "use another root or delete the folder"
            )
    write_text_atomic(path, json.dumps(content, indent=2, sort_keys=True))


def _check_size(height: int, width: int) -> None:
    if height < MIN_HEIGHT or width < MIN_WIDTH:
        raise ValueError(f"image size {height}x{width} is too small; need at least {MIN_HEIGHT}x{MIN_WIDTH}")


def _seed_of(rng: np.random.Generator) -> int:
    return int(rng.integers(2**31))


def write_source_dataset(
    root: str | Path, *, n_train: int, n_val: int, height: int, width: int, seed: int
) -> Path:
    """Write a source-domain Cityscapes-layout set under ``{root}/cityscapes``; returns that folder.

    Files: ``leftImg8bit/{split}/{city}/{city}_{seq:06d}_000019_leftImg8bit.png`` and
    ``gtFine/{split}/{city}/{city}_{seq:06d}_000019_gtFine_labelTrainIds.png`` (uint8 trainIds,
    ``IGNORE`` void), no anomalies.
    """
    _check_size(height, width)
    out = Path(root) / "cityscapes"
    counts = {"train": n_train, "val": n_val}
    _manifest(out, _content("cityscapes source set", seed, height, width, counts))
    for split, n in counts.items():
        cities = TRAIN_CITIES if split == "train" else VAL_CITIES
        for i in tqdm(range(n), desc=f"ToyShift cityscapes/{split}", unit="img"):
            city = cities[i % len(cities)]
            stem = f"{city}_{i:06d}_000019"
            image_path = out / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png"
            label_path = out / "gtFine" / split / city / f"{stem}_gtFine_labelTrainIds.png"
            if image_path.exists() and label_path.exists():
                continue
            rng = _rng(seed, _SPLIT_CODE[split], i)
            label = sample_scene(rng, height, width)
            _write_png(label_path, label)
            _write_png(image_path, render(label, SOURCE_DOMAIN, _seed_of(rng)))
    return out


def write_outlier_bank(root: str | Path, *, n_objects: int, seed: int) -> Path:
    """Write training-family objects in the COCO outlier layout under ``{root}/coco``; returns it.

    Object ``i`` (family ``TRAIN_FAMILIES[i % 4]``) stands in a small source-domain scene:
    ``train2017/{i:012d}.png`` (RGB) and ``ood_seg_train2017/{i:012d}_{i + 1}.png`` (uint8, image
    size: 0 background, ``ANOMALY`` object, ``IGNORE`` on a 2 px band across the object's edge).
    """
    out = Path(root) / "coco"
    content = _content("outlier objects", seed, None, None, {"objects": n_objects})
    content["families"] = list(TRAIN_FAMILIES)
    _manifest(out, content)
    band_kernel = np.ones((3, 3), dtype=np.uint8)
    for i in tqdm(range(n_objects), desc="ToyShift outlier objects", unit="obj"):
        stem = f"{i:012d}"
        image_path = out / "train2017" / f"{stem}.png"
        mask_path = out / "ood_seg_train2017" / f"{stem}_{i + 1}.png"
        if image_path.exists() and mask_path.exists():
            continue
        rng = _rng(seed, _SPLIT_CODE["outliers"], i)
        family = TRAIN_FAMILIES[i % len(TRAIN_FAMILIES)]
        height, width = int(rng.integers(64, 129)), int(rng.integers(64, 161))
        oh, ow = int(rng.integers(20, height * 3 // 4)), int(rng.integers(20, width * 3 // 4))
        obj = sample_anomaly_mask(rng, family, oh, ow)
        y0, x0 = int(rng.integers(2, height - oh - 1)), int(rng.integers(2, width - ow - 1))
        full = np.zeros((height, width), dtype=np.uint8)
        full[y0 : y0 + oh, x0 : x0 + ow] = obj
        label = sample_scene(rng, height, width)
        label[full > 0] = ANOMALY
        image = render(label, SOURCE_DOMAIN, _seed_of(rng), family)
        inner = cv2.erode(full, band_kernel)
        band = cv2.dilate(full, band_kernel) & ~inner.astype(bool)
        mask = np.where(inner > 0, ANOMALY, 0).astype(np.uint8)
        mask[band.astype(bool)] = IGNORE
        _write_png(mask_path, mask)
        _write_png(image_path, image)
    return out


def write_benchmark(
    root: str | Path, name: str, *, kind: str, n: int, height: int, width: int, seed: int
) -> Path:
    """Write a benchmark set in the MUAD encoding under ``{root}/{name}``; returns that folder.

    ``kind``: ``anomaly`` (source domain, one to two test-family objects on the road), ``shift``
    (a shifted domain per image, object-level shift included, plus test-family objects) or
    ``covariate`` (a shifted domain per image, no anomaly). Files: ``leftImg8bit/{i:06d}.png`` and
    ``leftLabel/{i:06d}.png`` (uint8: trainIds, ``MUAD_ANOMALY`` for anomalies, ``IGNORE`` void).
    """
    if kind not in BENCHMARK_KINDS:
        raise ValueError(f"unknown benchmark kind {kind!r}; expected one of {BENCHMARK_KINDS}")
    _check_size(height, width)
    out = Path(root) / name
    content = _content(f"{kind} benchmark (MUAD encoding)", seed, height, width, {"images": n})
    families = [] if kind == "covariate" else list(TEST_FAMILIES)
    content.update(kind=kind, anomaly_label=MUAD_ANOMALY, families=families)
    _manifest(out, content)
    for i in tqdm(range(n), desc=f"ToyShift {name}", unit="img"):
        image_path = out / "leftImg8bit" / f"{i:06d}.png"
        label_path = out / "leftLabel" / f"{i:06d}.png"
        if image_path.exists() and label_path.exists():
            continue
        rng = _rng(seed, _KIND_CODE[kind], i)
        label = sample_scene(rng, height, width)
        family = None
        if kind != "covariate":
            family = TEST_FAMILIES[int(rng.integers(len(TEST_FAMILIES)))]
            for _ in range(int(rng.integers(1, 3))):
                label = place_anomaly(rng, label, family)
        domain = SOURCE_DOMAIN if kind == "anomaly" else sample_shifted_domain(rng)
        image = render(label, domain, _seed_of(rng), family)
        _write_png(label_path, np.where(label == ANOMALY, MUAD_ANOMALY, label).astype(np.uint8))
        _write_png(image_path, image)
    return out


def _content(what: str, seed: int, height: int | None, width: int | None, counts: dict) -> dict:
    return {
        "what": what,
        "version": VERSION,
        "seed": seed,
        "height": height,
        "width": width,
        "counts": counts,
    }
