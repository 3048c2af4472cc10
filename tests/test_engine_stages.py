"""Stage specs, parameter selection by name patterns, BatchNorm modes and per-stage optimizers."""

import dataclasses

import pytest
import torch
import torch.nn as nn

from lib.config import Config, load_config
from lib.engine.optim import build_optimizer, parameter_groups
from lib.engine.stages import apply_stage, match_parameters, set_train_mode, stage_at, stages_from_config
from lib.errors import UnknownNameError
from lib.models import build_model


def _cfg(*overrides: str) -> Config:
    return load_config(Config, "exp/DeepLab.yaml", overrides)


def test_published_deeplab_stages():
    s1, s2 = stages_from_config(_cfg())
    assert (s1.index, s1.first_epoch, s1.last_epoch, s1.patterns, s1.lr) == (1, 0, 10, ("ood_head",), 1e-4)
    assert (s2.index, s2.first_epoch, s2.last_epoch, s2.lr) == (2, 10, 50, 1e-6)
    assert s2.patterns == ("aspp", "bot_fine", "bot_aspp", "ood_head")
    assert [stage_at([s1, s2], e).index for e in (0, 9, 10, 49)] == [1, 1, 2, 2]
    with pytest.raises(ValueError, match=r"epoch 50 is outside.*stage2: \[10, 50\)"):
        stage_at([s1, s2], 50)


def test_empty_stages_are_dropped():
    assert [s.index for s in stages_from_config(_cfg("train.warmup_epoch=0"))] == [2]
    assert [s.index for s in stages_from_config(_cfg("train.epochs=3", "train.warmup_epoch=5"))] == [1]


def test_stage_selects_exactly_the_matching_parameters():
    model = build_model("deeplab_wrn_light")
    s1, s2 = stages_from_config(_cfg())
    assert apply_stage(model, s1) == ["ood_head.weight"]
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["ood_head.weight"]
    names = apply_stage(model, s2)
    assert names == [n for n, p in model.named_parameters() if p.requires_grad]
    assert {n.split(".")[0] for n in names} == {"aspp", "bot_fine", "bot_aspp", "ood_head"}
    assert not any(p.requires_grad for n, p in model.named_parameters() if n.startswith(("mod", "final")))


def test_empty_pattern_matches_everything_and_no_match_is_an_error():
    model = build_model("deeplab_wrn_light")
    assert len(match_parameters(model, [""])) == len(list(model.parameters()))
    with pytest.raises(ValueError, match=r"\['class_embed2'\] match no parameter of DeepWV3Plus.*ood_head"):
        match_parameters(model, ["class_embed2"])
    with pytest.raises(ValueError, match="empty list"):
        match_parameters(model, [])


def test_optimizer_sees_only_the_stage_parameters():
    model = build_model("deeplab_wrn_light")
    s1, s2 = stages_from_config(_cfg())
    apply_stage(model, s1)
    opt = build_optimizer(model, s1)
    assert isinstance(opt, torch.optim.Adam)
    assert [g["param_names"] for g in opt.param_groups] == [["ood_head.weight"]]
    assert opt.param_groups[0]["params"][0] is model.ood_head.weight
    assert opt.param_groups[0]["lr"] == 1e-4
    trainable = apply_stage(model, s2)
    opt = build_optimizer(model, s2)
    assert sorted(n for g in opt.param_groups for n in g["param_names"]) == sorted(trainable)
    assert {g["lr"] for g in opt.param_groups} == {1e-6}


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
        self.head = nn.Sequential(nn.Conv2d(4, 2, 1), nn.GroupNorm(1, 2))


def test_groups_backbone_multiplier_and_no_decay_on_norms():
    model = _Tiny()
    cfg = _cfg("train.optimizer=adamw", "train.weight_decay=0.05", "train.backbone_lr_mult=0.1")
    cfg.model.trainable_params_name = [""]
    (stage, *_) = stages_from_config(cfg)
    apply_stage(model, stage)
    groups = {
        g["name"]: (tuple(g["param_names"]), g["lr"], g["weight_decay"])
        for g in parameter_groups(model, stage)
    }
    assert groups == {
        "backbone": (("backbone.0.weight", "backbone.0.bias"), pytest.approx(1e-5), 0.05),
        "backbone_no_decay": (("backbone.1.weight", "backbone.1.bias"), pytest.approx(1e-5), 0.0),
        "other": (("head.0.weight", "head.0.bias"), 1e-4, 0.05),
        "other_no_decay": (("head.1.weight", "head.1.bias"), 1e-4, 0.0),
    }
    assert isinstance(build_optimizer(model, stage), torch.optim.AdamW)


def test_unknown_optimizer():
    model = _Tiny()
    (stage, *_) = stages_from_config(_cfg("train.optimizer=lamb", "model.trainable_params_name=[head]"))
    apply_stage(model, stage)
    with pytest.raises(
        UnknownNameError, match=r"train.optimizer 'lamb'\. Known optimizers: adam, adamw, sgd"
    ):
        build_optimizer(model, stage)
    stage = dataclasses.replace(stage, optimizer="adamm")
    with pytest.raises(UnknownNameError, match="Did you mean 'adam'"):
        build_optimizer(model, stage)


def test_bn_modes():
    model = _Tiny()
    (stage, *_) = stages_from_config(_cfg("model.trainable_params_name=[head]"))
    apply_stage(model, stage)
    model.eval()
    set_train_mode(model, bn_train_mode=True)
    assert model.backbone[1].training and model.head.training
    set_train_mode(model, bn_train_mode=False)
    assert not model.backbone[1].training
    assert model.training and model.backbone[0].training and model.head[1].training


def test_gradient_clipping_per_stage():
    assert [s.grad_clip for s in stages_from_config(_cfg("train.grad_clip=0.5"))] == [0.5, 0.5]
    clips = stages_from_config(_cfg("train.grad_clip=0.5", "train.grad_clip_update=0.01"))
    assert [s.grad_clip for s in clips] == [0.5, 0.01]
    m2f = stages_from_config(load_config(Config, "exp/M2F.yaml"))
    assert [(s.optimizer, s.grad_clip) for s in m2f] == [("adam", 0.0), ("adamw", 0.01)]
    with pytest.raises(ValueError, match=r"train.grad_clip_update must be >= 0 .* got -1.0"):
        stages_from_config(_cfg("train.grad_clip_update=-1"))


class _Recorder:
    def __init__(self) -> None:
        self.tags: dict[str, float] = {}

    def add_scalars(self, values, step, *, prefix):
        self.tags.update({f"{prefix}/{k}": v for k, v in values.items()})


class _TinyStep:
    find_unused_parameters = False

    def __call__(self, model, batch, *, stage):
        loss = model.head(model.backbone(batch["image"])).square().mean()
        return {"loss": loss}


def test_the_step_log_and_tensorboard_name_the_lr_of_every_group(caplog):
    """A Mask2Former-like stage (backbone at lr * 0.1): the log and ``train/lr/<group>`` show each group's
    rate, not only the first group's (the backbone's)."""
    from lib.engine.logging_utils import LOGGER_NAME
    from lib.engine.trainer import group_lrs, train_one_epoch

    model = _Tiny()
    cfg = _cfg("train.optimizer=adamw", "train.backbone_lr_mult=0.1", 'model.trainable_params_name=[""]')
    (stage, *_) = stages_from_config(cfg)
    apply_stage(model, stage)
    optimizer = build_optimizer(model, stage)
    writer = _Recorder()
    loader = [{"image": torch.randn(2, 3, 4, 4)} for _ in range(2)]
    with caplog.at_level("INFO", logger=LOGGER_NAME):
        train_one_epoch(
            model,
            _TinyStep(),
            loader,
            optimizer,
            stage=stage,
            epoch=0,
            device=torch.device("cpu"),
            log_interval=1,
            writer=writer,
            progress=False,
        )
    lrs = {"backbone": 1e-5, "backbone_no_decay": 1e-5, "other": 1e-4, "other_no_decay": 1e-4}
    assert group_lrs(optimizer) == pytest.approx(lrs)
    assert {k: v for k, v in writer.tags.items() if k.startswith("train/lr")} == pytest.approx(
        {f"train/lr/{k}": v for k, v in lrs.items()}
    )
    assert (
        "lr backbone 1e-05, backbone_no_decay 1e-05, other 0.0001, other_no_decay 0.0001 loss" in caplog.text
    )
