"""Builders from the config: the augmentation per model family (``data.augmentation``) and the
starting model with its OOD-head initialisation (``model.init_ood_head``)."""

import logging

import pytest
import torch

from lib.config import Config, load_config
from lib.data.transforms import (
    ColorJitter,
    HorizontalFlip,
    RandomCrop,
    RandomResize,
    RandomRotate,
    mask2former_train_transform,
)
from lib.engine.builders import build_paired_train_set, build_training_model, paired_train_transform
from lib.engine.logging_utils import LOGGER_NAME
from lib.errors import UnknownNameError
from lib.models import build_model
from lib.models.checkpoints import WrongModelError, save_checkpoint
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
        UnknownNameError,
        match=r"unknown data.augmentation 'mask2formr'\. Did you mean 'mask2former'\? "
        r"Known augmentations: deeplab, mask2former",
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


HEAD2 = "sem_seg_head.predictor.class_embed2."
HEAD1 = "sem_seg_head.predictor.class_embed."


def test_mask2anomaly_uncertainty_head_init_copies_class_embed():
    torch.manual_seed(0)
    model = build_model("mask2anomaly_tiny")
    predictor = model.sem_seg_head.predictor
    assert not torch.equal(predictor.class_embed2.weight, predictor.class_embed.weight)
    model.uncertainty_head_init()
    for name in ("weight", "bias"):
        head, ood = getattr(predictor.class_embed, name), getattr(predictor.class_embed2, name)
        assert torch.equal(head, ood) and head.data_ptr() != ood.data_ptr()


@pytest.mark.parametrize("init", [True, False])
def test_training_model_ood_head_initialisation_switch(tmp_path, caplog, monkeypatch, init):
    monkeypatch.setattr(logging.getLogger(LOGGER_NAME), "propagate", True)  # setup_logging turns it off
    torch.manual_seed(0)
    released = build_model("mask2anomaly_tiny").state_dict()  # a trained OOD head differs from the classifier
    torch.save({"model": released}, tmp_path / "released.pth")
    cfg = load_config(
        Config,
        "exp/M2F.yaml",
        [
            "model.name=mask2anomaly_tiny",
            f"model.weight_path={tmp_path / 'released.pth'}",
            f"model.init_ood_head={init}",
        ],
    )
    with caplog.at_level(logging.INFO, logger=LOGGER_NAME):
        state = build_training_model(cfg).state_dict()
    source = HEAD1 if init else HEAD2
    for name in ("weight", "bias"):
        assert torch.equal(state[HEAD2 + name], released[source + name])
    assert torch.equal(state[HEAD1 + "weight"], released[HEAD1 + "weight"])
    expected = "copy of the classifier (model.init_ood_head=true)" if init else "model.init_ood_head=false"
    assert expected in caplog.text


def test_deeplab_training_model_keeps_a_loaded_head_when_asked(tmp_path):
    torch.manual_seed(0)
    released = build_model("deeplab_wrn_light").state_dict()
    torch.save(released, tmp_path / "released.pth")
    overrides = ["model.name=deeplab_wrn_light", f"model.weight_path={tmp_path / 'released.pth'}"]
    kept = build_training_model(
        load_config(Config, "exp/DeepLab.yaml", [*overrides, "model.init_ood_head=false"])
    )
    assert torch.equal(kept.ood_head.weight, released["ood_head.weight"])
    copied = build_training_model(load_config(Config, "exp/DeepLab.yaml", overrides))
    assert torch.equal(copied.ood_head.weight, released["final.6.weight"])


def test_starting_weights_from_a_run_must_be_of_the_configured_model(tmp_path):
    """A run's checkpoint names its model: continuing training from it under another model.name is an
    error naming both; under the same name its model arguments come with it."""
    torch.manual_seed(0)
    trained = build_model("deeplab_wrn_light", num_classes=7)
    path = tmp_path / "last.pth"
    save_checkpoint(
        path,
        model=trained,
        epoch=0,
        stage=1,
        config={},
        model_name="deeplab_wrn_light",
        model_kwargs={"num_classes": 7},
        metrics={},
    )
    cfg = load_config(Config, "exp/DeepLab.yaml", [f"model.weight_path={path}", "model.init_ood_head=false"])
    with pytest.raises(WrongModelError, match="'deeplab_wrn_light' model .* model.name is 'deeplab_wrn38'"):
        build_training_model(cfg)
    cfg = load_config(
        Config, "exp/DeepLab.yaml", [f"model.weight_path={path}", "model.name=deeplab_wrn_light"]
    )
    model = build_training_model(cfg)
    assert model.final[6].out_channels == 7
    assert torch.equal(model.ood_head.weight, trained.final[6].weight)  # then init_ood_head copies it
