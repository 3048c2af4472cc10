"""Crop-early execution equals the full-frame pipeline for the same draws; per-item draws in loaders."""

import random

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DistributedSampler

from lib.config import Config, DataConfig, load_config
from lib.data import CityscapesSeg, MultiShiftPairs, collate_items, crop_early
from lib.data.crop_early import Box, Frames, run_crop_early
from lib.data.transforms import (
    AutoContrast,
    Blur,
    ColorJitter,
    Compose,
    Crop,
    Equalize,
    GaussianBlur,
    HorizontalFlip,
    Hue,
    RandomCrop,
    RandomSharpness,
    Resize,
    Rotate,
    Sharpen,
    ToTensor,
    VerticalFlip,
    run_steps,
)
from lib.engine.builders import paired_train_transform
from lib.engine.distributed import DistInfo
from lib.engine.trainer import _train_loader
from lib.errors import UserError
from lib.labels import NUM_CLASSES
from tests.data_fixtures import write_cityscapes, write_multishift

pytestmark = pytest.mark.usefixtures("one_thread")


def _photo(h, w, seed):
    """Smooth colours plus noise: every colour step and filter changes it."""
    rng = np.random.default_rng(seed)
    base = cv2.resize(rng.integers(0, 256, (max(h // 6, 2), max(w // 6, 2), 3), dtype=np.uint8), (w, h))
    return np.clip(base.astype(np.int16) + rng.integers(-9, 9, base.shape), 0, 255).astype(np.uint8)


def _labels(h, w, seed):
    rng = np.random.default_rng(seed)
    small = rng.integers(0, NUM_CLASSES, (max(h // 6, 2), max(w // 6, 2)), dtype=np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)


def _frames(h, w, seed):
    return Frames(
        [_photo(h, w, seed), _photo(h, w, seed + 1)], [_labels(h, w, seed), _labels(h, w, seed + 2)]
    )


def _both(steps, frames):
    return run_steps(steps, *frames.whole()), run_crop_early(steps, frames)


@pytest.mark.parametrize("augmentation", ["deeplab", "mask2former"])
def test_drawing_first_gives_the_draws_of_calling_in_order(augmentation):
    transform = paired_train_transform(DataConfig(augmentation=augmentation, crop_size=24))
    for seed in range(6):
        frames = _frames(30, 44, seed)
        random.seed(seed)
        called = transform(*frames.whole())
        random.seed(seed)
        planned = run_steps(transform.draw(frames.size, random), *frames.whole())
        assert torch.equal(called[0], planned[0]) and torch.equal(called[1], planned[1])


@pytest.mark.parametrize("band_pixels", [64, 1 << 16])
def test_colour_steps_flips_and_crops_are_bit_identical(band_pixels, monkeypatch):
    """Crops that touch every border (crop as large as the frame, or larger: padding) included;
    whole frames needed for a statistic run in bands of 8 rows or at once."""
    monkeypatch.setattr(crop_early, "_BAND_PIXELS", band_pixels)
    recipe = Compose(
        [
            (ColorJitter(), 0.5),
            (GaussianBlur(), 0.5),
            (RandomSharpness(), 0.5),
            (AutoContrast(), 0.5),
            (Equalize(), 0.5),
            (HorizontalFlip(), 0.5),
            (VerticalFlip(), 0.5),
            RandomCrop((26, 36)),
        ]
    )
    kinds = set()
    for seed, (h, w) in enumerate([(40, 70), (37, 53), (26, 36), (20, 30), (61, 203)] * 8):
        frames = _frames(h, w, seed)
        steps = recipe.draw(frames.size, random.Random(seed))
        kinds |= {type(s).__name__ for s in steps}
        (full_img, full_lab), (early_img, early_lab) = _both(steps, frames)
        assert torch.equal(early_img, full_img) and torch.equal(early_lab, full_lab), (seed, steps)
    assert {"Contrast", "Hue", "Blur", "Sharpen", "AutoContrast", "Equalize", "VerticalFlip"} <= kinds


@pytest.mark.parametrize("augmentation", ["deeplab", "mask2former"])
def test_recipes_equal_the_full_frame_pipeline_within_rounding(augmentation):
    transform = paired_train_transform(DataConfig(augmentation=augmentation, crop_size=40))
    worst, mismatched, pixels, border = 0.0, 0, 0, 0
    for seed, (h, w) in enumerate([(48, 80), (40, 64), (33, 47)] * 10):
        frames = _frames(h, w, seed)
        steps = transform.draw(frames.size, random.Random(seed))
        (full_img, full_lab), (early_img, early_lab) = _both(steps, frames)
        assert early_img.shape == full_img.shape == (2, 3, 40, 40) and early_lab.dtype == torch.int64
        worst = max(worst, float((early_img - full_img).abs().max()))
        mismatched += int((early_lab != full_lab).sum())
        pixels += full_lab.numel()
        crop = next(s for s in steps if isinstance(s, Crop))
        size = frames.size
        for s in steps[: steps.index(crop)]:
            size = s.out_size(size)
        border += crop.top == 0 or crop.left == 0 or crop.top + 40 >= size[0] or crop.left + 40 >= size[1]
    assert worst <= 1 / 255
    assert mismatched / pixels < 1e-3
    assert border >= 10  # many crops touch or pass the frame's border


def test_resize_and_rotation_windows_match_whole_frames():
    frames = _frames(50, 70, 3)
    for steps in (
        [Resize((91, 133)), Crop(30, 50, (40, 40))],
        [Resize((31, 45)), Crop(0, 0, (40, 40))],  # smaller than the crop: padded
        [Resize((100, 140)), Resize((70, 81)), Crop(30, 41, (40, 40))],
        [Rotate(0.17), Crop(10, 30, (40, 40))],
        [Rotate(-0.3), VerticalFlip(), Crop(0, 0, (50, 70))],  # the corners fall outside
    ):
        (full_img, full_lab), (early_img, early_lab) = _both(steps, frames)
        assert float((early_img - full_img).abs().max()) < 1e-4
        assert (early_lab != full_lab).float().mean() < 1e-3


def test_box_growth_aligns_columns_and_clips():
    box = Box(5, 19, 9, 40).grow(2, (12, 50), align=16)
    assert box == Box(3, 16, 11, 48)
    assert Box(0, 40, 3, 45).grow(4, (12, 50), align=16) == Box(0, 32, 7, 50)
    assert Box(3, 3, 3, 9).empty and Box(0, 0, 4, 4).edges((4, 6)) == (True, True, True, False)


def test_pipeline_of_other_step_orders_runs_on_whole_frames():
    frames = _frames(30, 40, 0)
    steps = [Crop(2, 3, (20, 24)), AutoContrast()]  # colour after geometry: no window plan
    (full_img, full_lab), (early_img, early_lab) = _both(steps, frames)
    assert torch.equal(early_img, full_img) and torch.equal(early_lab, full_lab)


def _pairs(root, augmentation, crop_early, **kwargs):
    return MultiShiftPairs(
        root / "cityscapes",
        root / "multishift_cityscapes",
        transform=paired_train_transform(DataConfig(augmentation=augmentation, crop_size=24)),
        crop_early=crop_early,
        **kwargs,
    )


@pytest.mark.parametrize("augmentation", ["deeplab", "mask2former"])
def test_training_pairs_crop_early_equal_full_frame(tmp_path, augmentation):
    stems = write_cityscapes(tmp_path, size=(32, 48))
    write_multishift(tmp_path, stems, size=(32, 48))
    early, full = _pairs(tmp_path, augmentation, True), _pairs(tmp_path, augmentation, False)
    assert early.crop_early and not full.crop_early
    for epoch in range(3):
        early.set_epoch(epoch)
        full.set_epoch(epoch)
        for i in range(len(early)):
            a, b = early[i], full[i]
            for key in ("image", "aug_image"):
                assert float((a[key] - b[key]).abs().max()) <= 1 / 255 / 0.225
            for key in ("label", "aug_label"):
                assert (a[key] != b[key]).float().mean() < 1e-3


def test_item_draws_follow_seed_epoch_and_index(tmp_path):
    stems = write_cityscapes(tmp_path, size=(32, 48))
    write_multishift(tmp_path, stems, size=(32, 48))
    ds = _pairs(tmp_path, "mask2former", True)
    ds.set_epoch(1)
    first = ds[0]["image"]
    random.seed(123)  # the global generator plays no part
    assert torch.equal(ds[0]["image"], first)
    ds.set_epoch(2)
    assert not torch.equal(ds[0]["image"], first)
    assert not torch.equal(_pairs(tmp_path, "mask2former", True, seed=5)[0]["image"], ds[0]["image"])


def test_persistent_workers_of_each_rank_draw_per_epoch(tmp_path):
    """Two ranks with two persistent workers each: every batch equals the items drawn directly for
    its (epoch, index), ranks hold disjoint items, and each epoch draws anew."""
    stems = write_cityscapes(tmp_path, per_city=3, size=(32, 48))
    write_multishift(tmp_path, stems, size=(32, 48))
    cfg = load_config(Config, "exp/DeepLab.yaml", ["data.num_workers=2", "data.prefetch_factor=3"])
    cfg.train.batch_size = 2
    ds = _pairs(tmp_path, "mask2former", True)
    seen: dict[int, list[str]] = {0: [], 1: []}
    images: dict[int, list[torch.Tensor]] = {0: [], 1: []}
    for rank in (0, 1):
        loader, sampler = _train_loader(cfg, ds, DistInfo(rank, 2, torch.device("cpu")))
        assert loader.persistent_workers and loader.prefetch_factor == 3
        assert isinstance(sampler, DistributedSampler)
        for epoch in (0, 1):
            sampler.set_epoch(epoch)
            ds.set_epoch(epoch)
            for batch in loader:
                names = batch["name"]
                for name, image in zip(names, batch["image"], strict=True):
                    index = [p[0] for p in ds.pairs].index(name)
                    assert torch.equal(image, ds[index]["image"])
                    seen[epoch].append(f"{rank}:{name}")
                    images[epoch].append(image)
    for epoch in (0, 1):
        names = [s.split(":")[1] for s in seen[epoch]]
        assert len(names) == len(set(names)) == len(ds) - len(ds) % 2  # disjoint shares
    assert not torch.equal(torch.stack(images[0]).sum(0), torch.stack(images[1]).sum(0))


def test_loader_settings_without_workers_and_bad_prefetch(tmp_path):
    stems = write_cityscapes(tmp_path, size=(32, 48))
    write_multishift(tmp_path, stems, size=(32, 48))
    ds = _pairs(tmp_path, "deeplab", True)
    cfg = load_config(Config, "exp/DeepLab.yaml", ["data.num_workers=0", "train.batch_size=2"])
    loader, _ = _train_loader(cfg, ds, DistInfo(0, 1, torch.device("cpu")))
    assert not loader.persistent_workers and loader.prefetch_factor is None
    assert collate_items([ds[0], ds[1]])["image"].shape == (2, 3, 24, 24)
    cfg = load_config(Config, "exp/DeepLab.yaml", ["data.num_workers=2", "data.prefetch_factor=0"])
    with pytest.raises(UserError, match="data.prefetch_factor must be at least 1"):
        _train_loader(cfg, ds, DistInfo(0, 1, torch.device("cpu")))


def test_to_tensor_and_frames_read_the_same_values():
    rgb, label = [_photo(20, 30, 1), _photo(20, 30, 2)], [_labels(20, 30, 1), _labels(20, 30, 3)]
    frames = Frames(rgb, label)
    images, labels = ToTensor()(rgb, label)
    whole = frames.whole()
    assert torch.equal(whole[0], images) and torch.equal(whole[1], labels)
    window = frames.images(Box(3, 4, 11, 19))
    assert torch.equal(window, images[..., 3:11, 4:19]) and window.stride(1) == 1
    planes = frames.images(Box(3, 4, 11, 19), planar=True)
    assert torch.equal(planes, images[..., 3:11, 4:19]) and planes.is_contiguous()


@pytest.mark.parametrize("augmentation", ["deeplab", "mask2former"])
def test_closed_world_items_crop_early_equal_full_frame(tmp_path, augmentation):
    write_cityscapes(tmp_path, size=(32, 48))
    transform = paired_train_transform(DataConfig(augmentation=augmentation, crop_size=24))
    early = CityscapesSeg(tmp_path / "cityscapes", transform=transform)
    full = CityscapesSeg(tmp_path / "cityscapes", transform=transform, crop_early=False)
    assert early.crop_early and not full.crop_early
    for i in range(len(early)):
        random.seed(i)
        a = early[i]
        random.seed(i)
        b = full[i]
        assert a["image"].shape == (3, 24, 24)
        assert float((a["image"] - b["image"]).abs().max()) <= 1 / 255 / 0.225
        assert (a["label"] != b["label"]).float().mean() < 1e-3


def test_frames_check_sizes_and_apply_the_pixelwise_preparation():
    with pytest.raises(ValueError, match="share one height/width"):
        Frames([_photo(8, 9, 0)], [_labels(8, 10, 0)])
    rgb = [_photo(12, 16, 0), _photo(12, 16, 1)]
    frames = Frames(rgb, [_labels(12, 16, 0)] * 2, lambda ims: [ims[0], 255 - ims[1]])
    window = frames.images(Box(2, 3, 9, 11))
    assert torch.equal(window[1], ToTensor()([255 - rgb[1]], [_labels(12, 16, 0)])[0][0, :, 2:9, 3:11])
    counts = frames.histograms(rows=5)
    assert counts.shape == (2, 3, 256) and (counts.sum(-1) == 12 * 16).all()
    assert counts[1, 0, 255 - rgb[1][0, 0, 0]] >= 1
    frames.settle(rows=5)  # prepared once: the same pixels, the untouched image not copied
    assert torch.equal(frames.images(Box(2, 3, 9, 11)), window)
    assert np.array_equal(frames.histograms(rows=7), counts)
    assert frames._images[0] is rgb[0] and np.array_equal(frames._images[1], 255 - rgb[1])


def test_whole_frame_results_kept_between_pairs_never_reach_an_output():
    """Whole-frame passes write into memory reused by the next pair: outputs must not lie there."""
    steps = [Blur(5, 1.2), AutoContrast(), Equalize(), Crop(3, 5, (20, 24))]
    first = run_crop_early(steps, _frames(30, 40, 0))[0]
    kept = first.clone()
    second = run_crop_early(steps, _frames(30, 40, 7))[0]
    assert torch.equal(first, kept) and not torch.equal(first, second)
    assert not crop_early._KEPT.holds(first) and not crop_early._KEPT.holds(second)
    assert torch.equal(second, run_steps(steps, *_frames(30, 40, 7).whole())[0])


def test_opencv_steps_on_unaligned_windows_are_bit_identical():
    """OpenCV's vector loops round a row's last pixels differently: windows must align to them."""
    rng = np.random.default_rng(0)
    noise = [rng.integers(0, 256, (24, 203, 3), dtype=np.uint8) for _ in range(2)]
    frames = Frames(noise, [np.zeros((24, 203), np.uint8)] * 2)
    for step in (Hue(0.13), Sharpen(1.7, (24, 203)), Blur(9, 2.3)):
        for left, width in [(1, 150), (3, 151), (5, 160), (17, 170), (0, 203)]:
            steps = [step, Crop(2, left, (20, width))]
            (full_img, _), (early_img, _) = _both(steps, frames)
            assert torch.equal(early_img, full_img), (type(step).__name__, left, width)
