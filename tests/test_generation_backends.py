"""CG-Aug backends and filters with tiny randomly initialised models built from configs in the test
(Stable Diffusion + ControlNet, SAM), saved to tmp_path and loaded through the project's own loaders;
the procedural backend's reading of a condition map; the score filter with a tiny torch module; and
retries with new seeds until the filters pass."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from generation.ade20k import ade150
from generation.backends import build_backend
from generation.backends.controlnet import control_size
from generation.condition import condition_from_train_ids
from generation.config import GenerationConfig
from generation.filters import AnomalyScoreFilter, FilterResult, SamIoUFilter, load_sam
from generation.pipeline import CGAugGenerator
from generation.source import SourceItem
from generation.tiny_models import save_tiny_sam, save_tiny_sd_controlnet
from lib.config import ConfigError
from lib.labels import ANOMALY, IGNORE, TRAIN_LABELS


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny_models")
    save_tiny_sd_controlnet(folder)
    return folder


@pytest.fixture(scope="module")
def controlnet_backend(tiny_models: Path):
    cfg = GenerationConfig(device="cpu")
    cfg.controlnet.base_model = str(tiny_models / "base")
    cfg.controlnet.controlnet = str(tiny_models / "controlnet")
    cfg.controlnet.steps = 2
    cfg.controlnet.resolution = 64
    return build_backend("controlnet", cfg)


def test_control_size_rounds_like_the_published_resize() -> None:
    assert control_size(1024, 2048, 512) == (512, 1024)
    assert control_size(1000, 1500, 512) == (512, 768)
    assert control_size(48, 100, 64) == (64, 128)


def test_controlnet_backend_renders_label_size(controlnet_backend) -> None:
    """2 DDIM steps on a 64x64 control map; the image comes back at the label's 32x40."""
    from diffusers import DDIMScheduler

    assert isinstance(controlnet_backend.pipe.scheduler, DDIMScheduler)
    cond = condition_from_train_ids(np.resize(np.arange(19, dtype=np.uint8), (32, 40)))
    image = controlnet_backend.render(cond, "a road", "blurry", seed=3)
    assert image.shape == (32, 40, 3) and image.dtype == np.uint8 and image.std() > 0
    batch = controlnet_backend.render_batch([cond, cond], ["a road", "a road"], ["blurry", ""], [3, 5])
    assert len(batch) == 2 and batch[1].shape == (32, 40, 3)
    np.testing.assert_allclose(batch[0], image, atol=2)
    assert np.abs(batch[1].astype(int) - image).mean() > 2


def test_controlnet_missing_weights_are_clear(tmp_path: Path) -> None:
    cfg = GenerationConfig(device="cpu")
    cfg.controlnet.controlnet = str(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="ControlNet folder not found"):
        build_backend("controlnet", cfg)
    (tmp_path / "empty").mkdir()
    cfg.controlnet.controlnet = str(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="ControlNet not found at"):
        build_backend("controlnet", cfg)
    with pytest.raises(KeyError, match="Did you mean 'procedural'"):
        build_backend("procedurall", cfg)


@pytest.fixture(scope="module")
def tiny_sam(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny_sam")
    save_tiny_sam(folder)
    return folder


def test_sam_filter_with_tiny_sam(tiny_sam: Path) -> None:
    model, processor = load_sam(str(tiny_sam), "cpu")
    image = np.random.default_rng(0).integers(0, 255, (48, 80, 3), dtype=np.uint8)
    pasted = np.zeros((48, 80), dtype=bool)
    pasted[10:30, 20:50] = True
    low = SamIoUFilter(model=model, processor=processor, threshold=-1.0)(image, pasted)
    assert low.passed and low.mask.shape == (48, 80) and low.mask.dtype == bool
    expected = np.logical_and(low.mask, pasted).sum() / np.logical_or(low.mask, pasted).sum()
    assert low.value == pytest.approx(expected)
    assert not SamIoUFilter(model=model, processor=processor, threshold=1.0)(image, pasted).passed
    with pytest.raises(FileNotFoundError, match="SAM folder not found"):
        load_sam("./missing_sam_folder", "cpu")


class MeanRedScore(nn.Module):
    """Forward contract of the project's models: anomaly score = the normalised red channel."""

    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x[:, 0] + self.dummy, x.new_zeros(x.shape[0], 19, *x.shape[2:])


def test_anomaly_score_filter() -> None:
    image = np.zeros((8, 8, 3), dtype=np.uint8)
    image[2:4, 2:4, 0] = 255
    mask = np.zeros((8, 8), dtype=bool)
    mask[2:4, 2:4] = True
    f = AnomalyScoreFilter(model=MeanRedScore(), threshold=2.0, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    res = f(image, mask)
    assert res.value == pytest.approx(2.0) and res.passed
    assert not f(image, ~mask).passed and f(image, ~mask).value == pytest.approx(-2.0)


def test_procedural_backend_reads_the_condition() -> None:
    from generation.backends.procedural import ToyFamilyBank, condition_to_toy_label
    from lib.toy.anomalies import FAMILY_ADE_INDEX

    label = np.array([[lb.trainId for lb in TRAIN_LABELS] + [IGNORE]], dtype=np.uint8).repeat(2, 0)
    cond = condition_from_train_ids(label)
    cond[1, :3] = ade150().color(FAMILY_ADE_INDEX["barrel"])
    back, family = condition_to_toy_label(cond)
    shared = {"rider": "person", "train": "bus", "motorcycle": "bicycle"}
    names = [lb.name for lb in TRAIN_LABELS]
    expected = [names.index(shared.get(n, n)) for n in names] + [IGNORE]
    np.testing.assert_array_equal(back[0], expected)
    assert family == "barrel" and (back[1, :3] == ANOMALY).all()
    obj = ToyFamilyBank().sample(np.random.default_rng(0))
    assert obj.mask.any() and tuple(obj.color) == tuple(ade150().color(obj.ade_index))
    cfg = GenerationConfig(backend="procedural", device="cpu")
    image = build_backend("procedural", cfg).render(cond, "dash cam in Paris in a foggy night.", "", 1)
    assert image.shape == (2, 20, 3) and image.dtype == np.uint8


class _ScriptedFilter:
    """Fails the first ``fails`` calls, then passes with the given mask."""

    def __init__(self, fails: int) -> None:
        self.fails, self.calls = fails, 0

    def __call__(self, image: np.ndarray, mask: np.ndarray) -> FilterResult:
        self.calls += 1
        return FilterResult(passed=self.calls > self.fails, value=float(self.calls), mask=mask)


def _toy_item(tmp_path: Path) -> SourceItem:
    from PIL import Image

    label = np.full((64, 128), 10, dtype=np.uint8)
    label[32:] = 0
    path = tmp_path / "aachen_000000_000019_gtFine_labelTrainIds.png"
    Image.fromarray(label).save(path)
    return SourceItem("train", "aachen", "aachen_000000_000019", path, None)


@pytest.mark.parametrize("fails,status", [(2, "generated"), (3, "skipped")])
def test_retries_with_new_seeds_then_skip(tmp_path: Path, fails: int, status: str) -> None:
    from generation.backends.procedural import ProceduralBackend, ToyFamilyBank

    cfg = GenerationConfig(backend="procedural", device="cpu", max_attempts=3)
    sam = _ScriptedFilter(fails)
    gen = CGAugGenerator(cfg=cfg, backend=ProceduralBackend(), object_bank=ToyFamilyBank(), sam_filter=sam)
    result = gen.generate(_toy_item(tmp_path))
    assert result.status == status and sam.calls == 3
    assert result.rejections["sam"] == fails
    if status == "skipped":
        assert result.record["reason"] == "rejected in all 3 attempts (sam x3)" and result.image is None
    else:
        assert result.record["retries"] == 2 and result.record["iou"] == 3.0
        assert (result.label == ANOMALY).any()


class _MaskParityFilter:
    """Passes an attempt by its pasted mask alone (so the verdict does not depend on call order)."""

    def __call__(self, image: np.ndarray, mask: np.ndarray) -> FilterResult:
        return FilterResult(passed=int(mask.sum()) % 3 != 0, value=float(mask.sum()), mask=mask)


class _CountingBackend:
    """Records the size of every backend call."""

    def __init__(self, backend) -> None:
        self.backend, self.name, self.calls = backend, backend.name, []

    def render_batch(self, conditions, prompts, negative_prompts, seeds):
        self.calls.append(len(conditions))
        return self.backend.render_batch(conditions, prompts, negative_prompts, seeds)


def _road_items(tmp_path: Path, sizes: list[tuple[int, int]]) -> list[SourceItem]:
    from PIL import Image

    items = []
    for i, (h, w) in enumerate(sizes):
        label = np.full((h, w), 10, dtype=np.uint8)
        label[h // 3 :] = 0
        stem = f"aachen_{i:06d}_000019"
        path = tmp_path / f"{stem}_gtFine_labelTrainIds.png"
        Image.fromarray(label).save(path)
        items.append(SourceItem("train", "aachen", stem, path, None))
    return items


def test_controlnet_batches_equal_one_at_a_time(controlnet_backend, tmp_path: Path) -> None:
    """batch_size 3 over 5 items (4 of one size, 1 of another) with per-item retries: the same records
    and labels as one item at a time, images equal up to the batched sampler's rounding."""
    from generation.backends.procedural import ToyFamilyBank

    items = _road_items(tmp_path, [(48, 64)] * 2 + [(40, 56)] + [(48, 64)] * 2)
    outcomes = {}
    for batch_size in (1, 3):
        cfg = GenerationConfig(backend="controlnet", device="cpu", max_attempts=3, batch_size=batch_size)
        cfg.paste.reference_short_side, cfg.paste.margin, cfg.paste.size_range = 48, 4, [12, 20]
        backend = _CountingBackend(controlnet_backend)
        gen = CGAugGenerator(
            cfg=cfg, backend=backend, object_bank=ToyFamilyBank(), sam_filter=_MaskParityFilter()
        )
        outcomes[batch_size] = (gen.generate_batch(items), backend.calls)
    (alone, alone_calls), (batched, batched_calls) = outcomes[1], outcomes[3]
    assert set(alone_calls) == {1} and max(batched_calls) == 3
    assert len(batched_calls) < len(alone_calls) == sum(batched_calls)
    assert sum(r.record["retries"] for r in alone) > 0, "the fixture should exercise retries"
    for one, many in zip(alone, batched, strict=True):
        assert one.record == many.record and one.status == many.status
        if one.status == "generated":
            np.testing.assert_array_equal(one.label, many.label)
            np.testing.assert_array_equal(one.condition, many.condition)
            np.testing.assert_allclose(one.image, many.image, atol=2)


def test_batch_size_must_be_positive() -> None:
    from generation.backends.procedural import ProceduralBackend, ToyFamilyBank

    cfg = GenerationConfig(backend="procedural", device="cpu", batch_size=0)
    with pytest.raises(ConfigError, match="batch_size must be >= 1, got 0"):
        CGAugGenerator(cfg=cfg, backend=ProceduralBackend(), object_bank=ToyFamilyBank())
