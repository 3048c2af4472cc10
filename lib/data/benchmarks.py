"""Anomaly-segmentation benchmarks, each read from its released layout under the datasets root.

Every item is ``{"image": float32 [3, H, W] normalised, "ood_label": uint8 [H, W] 0/1/255,
"name": stem}`` plus ``"sem_label": int64 [H, W]`` (trainIds, 255 void) where the benchmark has
semantic labels. Each class converts its benchmark's own label encoding to that, nowhere else.
The SMIYC tracks publish labels for their validation frames only; ``include_unlabelled=True``
also lists the test frames (for score export), whose items carry no ``ood_label``.
``transform`` acts jointly on the ``0..1`` image and the label maps (see
:mod:`lib.data.transforms`); normalisation comes last.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from lib.config import ConfigError
from lib.data.cityscapes import present_values
from lib.data.io import (
    IMAGE_EXTENSIONS,
    check_same_size,
    expected_tree_error,
    index_by_stem,
    pair_by_stem,
    read_label,
    read_rgb,
)
from lib.data.transforms import IMAGENET_MEAN, IMAGENET_STD, JointTransform, Normalize, ToTensor
from lib.errors import UserError
from lib.image_tensor import rgb_to_unit
from lib.labels import ID_TO_TRAIN_ID, IGNORE, LABELS, NUM_CLASSES, OOD_IN, OOD_OUT, OOD_VOID, check_ood_label
from lib.registry import Registry

DEFAULT_ROOT = "./datasets"

MAX_CITYSCAPES_ID = max(lb.id for lb in LABELS)
"""33: ACDC-POC keeps Cityscapes label ids 1..33; larger ids are the inserted objects."""

MUAD_ANOMALY_IDS = (NUM_CLASSES, NUM_CLASSES + 1)
"""MUAD's two anomaly ids (19, 20) right after the 19 trainIds."""

BENCHMARKS: Registry[Callable[..., AnomalyBenchmark]] = Registry("benchmark", key="benchmark")
"""Benchmark name -> builder ``(root, transform, *, mean, std) -> dataset``; each knows its subfolder
of ``root``. A module of one's own adds one with ``@register_benchmark("name")`` on an
:class:`AnomalyBenchmark` subclass, or ``register_benchmark("name")(muad_like("folder"))`` for a
folder in MUAD's layout."""
register_benchmark = BENCHMARKS.register


def _lut(pairs: dict[int, int], default: int) -> np.ndarray:
    lut = np.full(256, default, dtype=np.uint8)
    for k, v in pairs.items():
        lut[k] = v
    return lut


class AnomalyBenchmark(Dataset, ABC):
    """Base class: a list of ``(name, image, label)`` files and a label decoder per subclass."""

    folder: str = ""
    folder_aliases: tuple[str, ...] = ()
    """Other folder names in use (the published README's), accepted when ``folder`` is absent."""
    tree: str = ""
    has_semantics: bool = False
    allow_unlabelled: bool = False
    """The release holds images without labels (a hidden test part); they are skipped unless
    ``include_unlabelled``."""

    def __init__(
        self,
        root: str | Path = DEFAULT_ROOT,
        transform: JointTransform | None = None,
        *,
        include_unlabelled: bool = False,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        if include_unlabelled and not self.allow_unlabelled:
            raise ValueError(
                f"{type(self).__name__} has no unlabelled images; include_unlabelled is not available"
            )
        self.include_unlabelled = include_unlabelled
        candidates = [Path(root) / name for name in (self.folder, *self.folder_aliases)]
        self.root = next((path for path in candidates if path.is_dir()), candidates[0])
        if not self.root.is_dir():
            raise expected_tree_error(self.root, self.expected_tree())
        self.transform = transform
        self.to_tensor, self.normalize = ToTensor(), Normalize(mean, std)
        self.samples: list[tuple[str, Path, Path | None]] = self.list_samples()

    def expected_tree(self) -> str:
        return f"{self.root}/\n{self.tree}"

    def subdir(self, *parts: str) -> Path:
        path = self.root.joinpath(*parts)
        if not path.is_dir():
            raise expected_tree_error(path, self.expected_tree())
        return path

    @abstractmethod
    def list_samples(self) -> list[tuple[str, Path, Path | None]]:
        """``(name, image, label)`` files of the benchmark, matched and checked (label ``None``:
        an unlabelled image, listed only with ``include_unlabelled``)."""

    def read_image(self, path: Path) -> np.ndarray:
        return read_rgb(path)

    @abstractmethod
    def decode(self, raw: np.ndarray, path: Path) -> tuple[np.ndarray, np.ndarray | None]:
        """Raw label file -> (anomaly map 0/1/255, trainId map or None); bad values name the file."""

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | str]:
        name, img_path, lab_path = self.samples[index]
        image = self.read_image(img_path)
        if lab_path is None:
            return {"image": self._image_only(image), "name": name}
        raw = read_label(lab_path)
        check_same_size(image, img_path, raw, lab_path)
        ood, sem = self.decode(raw, lab_path)
        maps = [ood] if sem is None else [ood, sem]
        images, labels = self.to_tensor([image], maps)
        if self.transform is not None:
            images, labels = self.transform(images, labels)
        images, labels = self.normalize(images, labels)
        item: dict[str, torch.Tensor | str] = {
            "image": images[0].contiguous(),
            "ood_label": labels[0].to(torch.uint8).contiguous(),
            "name": name,
        }
        if sem is not None:
            item["sem_label"] = labels[1].contiguous()
        return item

    def _image_only(self, image: np.ndarray) -> torch.Tensor:
        """``[3, H, W]`` normalised tensor of an unlabelled image (the transform sees no label maps)."""
        images = rgb_to_unit(image[None])
        labels = torch.empty((0, *image.shape[:2]), dtype=torch.int64)
        if self.transform is not None:
            images, labels = self.transform(images, labels)
        return self.normalize(images, labels)[0][0].contiguous()


class _FlatPairs(AnomalyBenchmark):
    """``{images}/{stem}.{ext}`` with ``{labels}/{stem}{label_suffix}``; labels 0/1/255 by default."""

    image_dir = ""
    label_dir = ""
    label_suffix = ".png"
    image_tag = ""
    label_tag = ""
    """Optional name endings before the extension, dropped from the stem when present, so that
    ``{frame}{image_tag}.png`` pairs with ``{frame}{label_tag}.png`` (and with ``{frame}.png``)."""
    allow_void = True

    def list_samples(self) -> list[tuple[str, Path, Path | None]]:
        img_dir, lab_dir = self.subdir(self.image_dir), self.subdir(self.label_dir)
        images = index_by_stem(
            (p for p in img_dir.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS),
            "",
            "image",
            tag=self.image_tag,
        )
        labels = index_by_stem(
            lab_dir.glob(f"*{self.label_suffix}"), self.label_suffix, "label", tag=self.label_tag
        )
        if not self.include_unlabelled:
            return pair_by_stem(images, labels, source=str(self.root), allow_unlabelled=self.allow_unlabelled)
        if not images:
            raise FileNotFoundError(f"{img_dir}: no images ({', '.join(IMAGE_EXTENSIONS)})")
        # A download of only the test part has no label at all: every image is unlabelled.
        pairs = pair_by_stem(images, labels, source=str(self.root), allow_unlabelled=True) if labels else []
        unlabelled = [(k, images[k], None) for k in images if k not in labels]
        return sorted([*pairs, *unlabelled], key=lambda sample: sample[0])

    def decode(self, raw: np.ndarray, path: Path) -> tuple[np.ndarray, None]:
        values = present_values(raw)
        if self.allow_void:
            check_ood_label(values, str(path))
        else:
            bad = values[(values != OOD_IN) & (values != OOD_OUT)]
            if bad.size:
                raise UserError(
                    f"{path}: invalid anomaly label value(s) {bad.tolist()}; expected {OOD_IN} or {OOD_OUT}"
                )
        return raw, None


@register_benchmark("RoadAnomaly")
class RoadAnomaly(_FlatPairs):
    """RoadAnomaly (Lis et al.): 60 images; labels 0 in-distribution, 1 anomaly."""

    folder, image_dir, label_dir, allow_void = "road_anomaly", "original", "labels", False
    tree = "  original/{name}.jpg\n  labels/{name}.png            0 in-distribution, 1 anomaly\n"


@register_benchmark("RoadAnomaly21")
class RoadAnomaly21(_FlatPairs):
    """SegmentMeIfYouCan anomaly track: the labelled validation frames (+ the test frames with
    ``include_unlabelled``)."""

    folder, image_dir, label_dir = "dataset_AnomalyTrack", "images", "labels_masks"
    label_suffix, allow_unlabelled = "_labels_semantic.png", True
    tree = "  images/{name}.jpg\n  labels_masks/{name}_labels_semantic.png   0 / 1 anomaly / 255 void\n"


@register_benchmark("RoadObstacle21")
class RoadObstacle21(_FlatPairs):
    """SegmentMeIfYouCan obstacle track (WebP images); 255 marks everything off the road."""

    folder, image_dir, label_dir = "dataset_ObstacleTrack", "images", "labels_masks"
    label_suffix, allow_unlabelled = "_labels_semantic.png", True
    tree = "  images/{name}.webp\n  labels_masks/{name}_labels_semantic.png   0 / 1 obstacle / 255 off-road\n"


@register_benchmark("FS_LostAndFound")
class FS_LostAndFound(_FlatPairs):
    """Fishyscapes Lost & Found validation, Synboost's preprocessed release."""

    folder, image_dir, label_dir = "fs_lost_and_found", "original", "labels"
    folder_aliases = ("fs_LostAndFound",)
    tree = "  original/{name}.png\n  labels/{name}.png            0 / 1 anomaly / 255 void\n"


@register_benchmark("FS_Static")
class FS_Static(_FlatPairs):
    """Fishyscapes Static validation, Synboost's preprocessed release."""

    folder, image_dir, label_dir = "fs_static", "original", "labels"
    tree = "  original/{name}.png\n  labels/{name}.png            0 / 1 anomaly / 255 void\n"


_MUAD_OOD = _lut(
    {**dict.fromkeys(range(NUM_CLASSES), OOD_IN), **dict.fromkeys(MUAD_ANOMALY_IDS, OOD_OUT)}, OOD_VOID
)
_MUAD_SEM = _lut({i: i for i in range(NUM_CLASSES)}, IGNORE)


class MUADLike(_FlatPairs):
    """MUAD's encoding: trainIds 0..18 in-distribution, 19 and 20 anomaly (void in ``sem_label``), 255 void.

    The MUAD release names a frame ``leftImg8bit/{frame}_leftImg8bit.png`` with the label
    ``leftLabel/{frame}_leftLabel.png`` (its reader swaps ``leftImg8bit`` for ``leftLabel`` in the
    path); frames are paired by ``{frame}``, and also when image and label share one name. The item
    ``name`` is ``{frame}``. Parameterised by ``folder`` so the ToyShift test sets (same encoding,
    plain names) share it.
    """

    image_dir, label_dir = "leftImg8bit", "leftLabel"
    image_tag, label_tag = "_leftImg8bit", "_leftLabel"
    has_semantics = True
    tree = (
        "  leftImg8bit/{name}_leftImg8bit.png   (or {name}.png)\n"
        "  leftLabel/{name}_leftLabel.png       (or {name}.png) 0..18 trainIds, 19/20 anomaly, 255 void\n"
    )

    def __init__(
        self,
        root: str | Path = DEFAULT_ROOT,
        transform: JointTransform | None = None,
        *,
        folder: str,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        self.folder = folder
        super().__init__(root, transform, mean=mean, std=std)

    def decode(self, raw: np.ndarray, path: Path) -> tuple[np.ndarray, np.ndarray]:
        values = present_values(raw)
        bad = values[(_MUAD_OOD[values] == OOD_VOID) & (values != IGNORE)]
        if bad.size:
            raise UserError(
                f"{path}: invalid label value(s) {bad.tolist()}; expected 0..{NUM_CLASSES - 1}, "
                f"{MUAD_ANOMALY_IDS[0]}/{MUAD_ANOMALY_IDS[1]} (anomaly) or {IGNORE} (void)"
            )
        return _MUAD_OOD[raw], _MUAD_SEM[raw]


_ACDC_OOD = _lut({0: OOD_VOID, **dict.fromkeys(range(1, MAX_CITYSCAPES_ID + 1), OOD_IN)}, OOD_OUT)
_ACDC_SEM = ID_TO_TRAIN_ID.copy()
_ACDC_SEM[MAX_CITYSCAPES_ID + 1 :] = IGNORE

ACDC_DOMAINS = ("fog", "night", "rain", "snow")


@register_benchmark("ACDC_POC")
class ACDC_POC(AnomalyBenchmark):
    """ACDC validation images with objects placed by POC (de Jorge et al. 2024).

    Labels hold Cityscapes label ids: 0 -> void, 1..33 -> in-distribution (and their trainIds
    in ``sem_label``), above 33 -> anomaly (the inserted objects, ids 100+), as the published
    evaluation reads them. Images are the reconstructed ``.png`` files, or the release's
    ``.npz`` difference images (key ``img``, ``uint8`` wrap-around) which are added to the
    original ACDC image found under ``acdc_root`` (``rgb_anon_trainvaltest/rgb_anon/...`` or
    ``rgb_anon/...``).
    """

    folder = "acdc_poc"
    folder_aliases = ("acdc_ood",)
    has_semantics = True
    tree = (
        "  rgb_anon_trainvaltest/rgb_anon/{domain}/val/{seq}/{name}.png   (or the release's .npz)\n"
        "  gt_trainval/gt/{domain}/val/{seq}/{name}.png   ids: 0 void, 1..33 Cityscapes, >33 anomaly\n"
    )

    def __init__(
        self,
        root: str | Path = DEFAULT_ROOT,
        transform: JointTransform | None = None,
        *,
        domains: Sequence[str] = ACDC_DOMAINS,
        acdc_root: str | Path | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        unknown = sorted(set(domains) - set(ACDC_DOMAINS))
        if unknown or not domains:
            raise ConfigError(
                f"ACDC_POC domains {unknown or list(domains)} invalid; choose from {ACDC_DOMAINS}"
            )
        self.domains = tuple(domains)
        self.acdc_root = Path(acdc_root) if acdc_root is not None else None
        super().__init__(root, transform, mean=mean, std=std)

    def list_samples(self) -> list[tuple[str, Path, Path]]:
        samples = []
        for domain in self.domains:
            img_dir = self.subdir("rgb_anon_trainvaltest", "rgb_anon", domain, "val")
            gt_dir = self.subdir("gt_trainval", "gt", domain, "val")
            images = {
                f"{p.parent.name}/{p.stem}": p for p in img_dir.glob("*/*") if p.suffix in (".png", ".npz")
            }
            labels = {f"{p.parent.name}/{p.stem}": p for p in gt_dir.glob("*/*.png")}
            pairs = pair_by_stem(images, labels, source=f"{self.root} ({domain})")
            samples += [(img.stem, img, lab) for _, img, lab in pairs]
        return samples

    def read_image(self, path: Path) -> np.ndarray:
        if path.suffix != ".npz":
            return read_rgb(path)
        if self.acdc_root is None:
            raise FileNotFoundError(
                f"{path} is a POC difference image; pass acdc_root= (the original ACDC folder) "
                "or reconstruct the .png images with POC's prepare_datasets.py"
            )
        rel = path.relative_to(self.root / "rgb_anon_trainvaltest" / "rgb_anon").parent
        name = path.stem.split("_rgb_anon_")[0] + "_rgb_anon.png"
        candidates = [
            self.acdc_root / top / rel / name for top in ("rgb_anon_trainvaltest/rgb_anon", "rgb_anon")
        ]
        original = next((c for c in candidates if c.is_file()), None)
        if original is None:
            raise FileNotFoundError(
                f"{path}: original ACDC image not found at {candidates[0]} or {candidates[1]}"
            )
        with np.load(path) as data:
            if "img" not in data.files:
                raise UserError(f"{path}: expected an array 'img' in this .npz, found {data.files}")
            diff = data["img"]
        base = read_rgb(original)
        if diff.shape != base.shape or diff.dtype != np.uint8:
            raise UserError(
                f"{path}: difference {diff.shape} {diff.dtype} does not fit {original} {base.shape}"
            )
        return base + diff

    def decode(self, raw: np.ndarray, path: Path) -> tuple[np.ndarray, np.ndarray]:
        return _ACDC_OOD[raw], _ACDC_SEM[raw]


def muad_like(folder: str) -> Callable[..., MUADLike]:
    """The builder of a benchmark in MUAD's layout and encoding under ``root/folder``."""

    def build(
        root: str | Path = DEFAULT_ROOT,
        transform: JointTransform | None = None,
        *,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> MUADLike:
        return MUADLike(root, transform, folder=folder, mean=mean, std=std)

    return build


register_benchmark("MUAD")(muad_like("MUAD_challenge/test_sets/test_OOD"))
register_benchmark("toy_anomaly")(muad_like("toy_anomaly"))
register_benchmark("toy_shift")(muad_like("toy_shift"))
register_benchmark("toy_covariate")(muad_like("toy_covariate"))


def build_benchmark(
    name: str,
    root: str | Path | None = None,
    transform: JointTransform | None = None,
    *,
    include_unlabelled: bool = False,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> AnomalyBenchmark:
    """Build benchmark ``name`` under the datasets ``root`` (default ``./datasets``), its images
    normalised with ``mean``/``std`` (the model's ``data.mean``/``data.std``); ``include_unlabelled``
    also lists the images without a public label (SMIYC tracks only)."""
    builder = BENCHMARKS.get(name)
    root = DEFAULT_ROOT if root is None else root
    if not include_unlabelled:
        return builder(root, transform, mean=mean, std=std)
    if not getattr(builder, "allow_unlabelled", False):
        with_unlabelled = [
            n for n in BENCHMARKS.names() if getattr(BENCHMARKS.get(n), "allow_unlabelled", False)
        ]
        raise ValueError(
            f"benchmark {name!r} has no unlabelled images; "
            f"include_unlabelled is for {', '.join(with_unlabelled)}"
        )
    return builder(root, transform, include_unlabelled=True, mean=mean, std=std)
