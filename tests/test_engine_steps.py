"""Train-step registry and the DeepLab paired RCL step."""

import subprocess
import sys

import pytest
import torch

from lib.config import Config, load_config
from lib.engine.stages import stages_from_config
from lib.engine.steps import ClosedWorldCEStep, PairedRCLStep, build_train_step
from lib.labels import ANOMALY, IGNORE
from lib.losses import RelContrastiveLoss
from lib.models import build_model


def _batch(b=2, h=16, w=24):
    g = torch.Generator().manual_seed(3)
    label = torch.randint(0, 19, (b, h, w), generator=g)
    aug_label = label.clone()
    label[:, :3] = IGNORE
    label[0, 4:8, 4:8] = ANOMALY
    aug_label[:, 8:12, 10:16] = ANOMALY
    return {
        "image": torch.randn(b, 3, h, w, generator=g),
        "aug_image": torch.randn(b, 3, h, w, generator=g),
        "label": label,
        "aug_label": aug_label,
    }


def test_rcl_step_is_the_loss_of_one_forward_on_originals_then_twins():
    cfg = load_config(Config, "exp/DeepLab.yaml")
    step = build_train_step(cfg)
    assert isinstance(step, PairedRCLStep) and step.find_unused_parameters is False
    model = build_model("deeplab_wrn_light").eval()
    batch = _batch()
    torch.manual_seed(5)
    terms = step(model, batch, stage=stages_from_config(cfg)[0])
    assert set(terms) == {"ce_orig", "ce_gen", "rcl_in", "rcl_aug", "rcl_pair", "loss"}
    anomaly, logits = model(torch.cat([batch["image"], batch["aug_image"]]))
    targets = torch.cat([batch["label"], batch["aug_label"]])
    torch.manual_seed(5)
    expected = RelContrastiveLoss(
        margins=(10.0, 5.0, 5.0), ce_weights=(50.0, 10.0), selection_ratio=0.8
    ).terms(logits, anomaly, targets)
    for name, value in expected.items():
        torch.testing.assert_close(terms[name], value, rtol=0, atol=0)
    terms["loss"].backward()
    assert model.ood_head.weight.grad is not None


def test_unknown_loss_name_lists_the_steps():
    cfg = load_config(Config, "exp/DeepLab.yaml", ["loss.name=rlc"])
    with pytest.raises(KeyError, match="'rlc'. Did you mean 'rcl'.*Known training recipes: .*rcl"):
        build_train_step(cfg)


def test_closed_world_ce_step_ignores_unknown_pixels():
    step = build_train_step(load_config(Config, "exp/DeepLab.yaml", ["loss.name=ce"]))
    assert isinstance(step, ClosedWorldCEStep)
    model = build_model("deeplab_wrn_light").eval()
    batch = _batch()
    terms = step(model, {"image": batch["image"], "label": batch["label"]}, stage=None)
    _, logits = model(batch["image"])
    target = batch["label"].clone()
    target[target == ANOMALY] = IGNORE
    expected = torch.nn.functional.cross_entropy(logits, target, ignore_index=IGNORE)
    torch.testing.assert_close(terms["loss"], expected)
    assert terms["ce"] is terms["loss"]


def test_every_step_module_registers_without_side_effect_imports():
    code = (
        "import sys\n"
        "from lib.config import Config, load_config\n"
        "from lib.engine.steps import RECIPE_MODULES, RECIPES, build_train_step\n"
        "assert not any(m in sys.modules for m in RECIPE_MODULES), 'imported eagerly'\n"
        "step = build_train_step(load_config(Config, 'exp/M2F.yaml', ['loss.num_points=16']))\n"
        "print(type(step).__name__, ' '.join(RECIPES.names()))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["Mask2AnomalyRCLStep", "ce", "m2f_rcl", "m2f_set", "oe", "rcl"]
