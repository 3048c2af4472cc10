"""Builders from the config: the augmentation per model family (``data.augmentation``)."""

import pytest

from lib.config import Config, load_config
from lib.data.transforms import (
    ColorJitter,
    HorizontalFlip,
    RandomCrop,
    RandomResize,
    RandomRotate,
    mask2former_train_transform,
)
from lib.engine.builders import build_paired_train_set, paired_train_transform
from tests.data_fixtures import write_cityscapes, write_multishift


def _recipe(compose):
    return [(type(t).__name__, p) for t, p in compose.steps]


def test_deeplab_config_uses_rescale_crop_flip():
    data = load_config(Config, "exp/DeepLab.yaml", ["data.crop_size=96", "data.scale_range=[0.5,1.5]"]).data
    steps = paired_train_transform(data).steps
    assert [(type(t), p) for t, p in steps] == [(RandomResize, 1.0), (RandomCrop, 1.0), (HorizontalFlip, 0.5)]
    assert steps[0][0].scale_range == (0.5, 1.5) and steps[1][0].size == (96, 96)


def test_m2f_config_uses_the_published_mask2former_recipe():
    data = load_config(Config, "exp/M2F.yaml", ["data.crop_size=96"]).data
    compose = paired_train_transform(data)
    assert _recipe(compose) == _recipe(mask2former_train_transform((96, 96)))
    assert isinstance(compose.steps[0][0], ColorJitter) and compose.steps[0][1] == 0.5
    assert any(isinstance(t, RandomRotate) for t, _ in compose.steps)
    assert compose.steps[-1][0].size == (96, 96)


def test_unknown_augmentation_lists_the_valid_ones():
    data = load_config(Config, "exp/M2F.yaml", ["data.augmentation=mask2formr"]).data
    with pytest.raises(
        ValueError, match="unknown data.augmentation 'mask2formr'; expected one of deeplab, mask2former"
    ):
        paired_train_transform(data)


def test_paired_train_set_gets_the_configured_augmentation(tmp_path):
    stems = write_cityscapes(tmp_path, per_city=1, size=(16, 24))
    write_multishift(tmp_path, stems, variants=1, size=(16, 24))
    cfg = load_config(
        Config, "exp/M2F.yaml", [f"data.root={tmp_path}", "data.ood_prob=0", "data.crop_size=8"]
    )
    pairs = build_paired_train_set(cfg)
    assert _recipe(pairs.transform) == _recipe(mask2former_train_transform((8, 8)))
    assert pairs[0]["image"].shape == (3, 8, 8)
