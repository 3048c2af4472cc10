"""run_training (what train_*.py call): which objects it builds from the config and hands to ``fit``.

``fit`` is replaced by a recorder, so these tests check the wiring only (the trainer has its own tests).
"""

import argparse

import pytest
import torch

import train_deeplab
import train_m2f
from lib.config import Config, load_config
from lib.data.cityscapes import CityscapesSeg
from lib.data.coco_ood.mask_bank import write_mask_bank
from lib.data.multishift import MultiShiftPairs
from lib.data.pasting import PasteOutliers
from lib.engine import training
from lib.engine.baseline_steps import OutlierExposureStep
from lib.engine.distributed import DistInfo
from lib.engine.m2f_step import Mask2FormerSetStep
from lib.engine.steps import ClosedWorldCEStep, PairedRCLStep, build_recipe
from lib.errors import UserError
from lib.models import build_model
from tests.data_fixtures import write_cityscapes, write_coco, write_multishift

CPU = DistInfo(0, 1, torch.device("cpu"))


@pytest.fixture
def root(tmp_path):
    stems = write_cityscapes(tmp_path, per_city=1, size=(16, 24))
    write_multishift(tmp_path, stems, variants=1, size=(16, 24))
    return tmp_path


def root_stems(root):
    return sorted((root / "cityscapes" / "leftImg8bit" / "train").rglob("*.png"))


@pytest.fixture
def recorded(monkeypatch):
    calls = []

    def fake_fit(cfg, **kwargs):
        calls.append(kwargs)
        return {"epoch": -1}

    monkeypatch.setattr(training, "fit", fake_fit)
    return calls


def _cfg(root, *overrides):
    return load_config(
        Config,
        "exp/DeepLab.yaml",
        [
            "model.name=deeplab_wrn_light",
            f"data.root={root}",
            f"output_root={root / 'out'}",
            "data.ood_prob=0",
            "data.val_ds=",
            *overrides,
        ],
    )


def test_new_run_loads_the_starting_weights_and_builds_the_step(root, recorded):
    torch.manual_seed(1)
    start = build_model("deeplab_wrn_light").state_dict()
    torch.save(start, root / "start.pth")
    assert training.run_training(_cfg(root, f"model.weight_path={root / 'start.pth'}"), info=CPU) == {
        "epoch": -1
    }
    (kwargs,) = recorded
    state = kwargs["model"].state_dict()
    assert all(torch.equal(state[k], start[k]) for k in start if k != "ood_head.weight")
    assert torch.equal(state["ood_head.weight"], start["final.6.weight"])  # the OOD head starts as a copy
    assert isinstance(kwargs["step"], PairedRCLStep) and isinstance(kwargs["train_set"], MultiShiftPairs)
    assert kwargs["val_set"] is None and kwargs["info"] is CPU
    assert (kwargs["resume"], kwargs["progress"]) == (False, True)


def test_resume_builds_a_bare_model_and_skips_the_starting_weights(root, recorded):
    cfg = _cfg(root, f"model.weight_path={root / 'missing.pth'}")
    training.run_training(cfg, info=CPU, resume=True, progress=False)
    (kwargs,) = recorded
    assert (kwargs["resume"], kwargs["progress"]) == (True, False)
    with pytest.raises(FileNotFoundError):
        training.run_training(cfg, info=CPU)


@pytest.mark.parametrize(
    ("loss", "step_type", "set_type"),
    [
        ("rcl", PairedRCLStep, MultiShiftPairs),
        ("ce", ClosedWorldCEStep, CityscapesSeg),
        ("oe", OutlierExposureStep, CityscapesSeg),
        ("m2f_set", Mask2FormerSetStep, CityscapesSeg),
    ],
)
def test_loss_name_picks_the_step_and_its_training_set(root, recorded, loss, step_type, set_type):
    cfg = _cfg(root, f"loss.name={loss}", "loss.num_points=16")
    training.run_training(cfg, info=CPU, resume=True)
    (kwargs,) = recorded
    assert isinstance(kwargs["step"], step_type) and type(kwargs["train_set"]) is set_type
    # every Cityscapes image, or only those with a generated twin (all but the last)
    assert len(kwargs["train_set"]) == len(root_stems(root)) - (set_type is MultiShiftPairs)
    item = kwargs["train_set"][0]
    assert ("aug_image" in item) == (set_type is MultiShiftPairs)


def test_unpaired_recipes_paste_outliers_with_ood_prob(root):
    write_coco(root)
    write_mask_bank(root / "coco", min_size=1)
    for loss in ("ce", "oe"):
        _, train_set = build_recipe(_cfg(root, f"loss.name={loss}", "data.ood_prob=0.5"))
        paste = train_set.transform.steps[-1][0]
        assert isinstance(paste, PasteOutliers) and paste.prob == 0.5


def test_use_generated_false_points_paired_recipes_to_the_unpaired_ones(root):
    with pytest.raises(UserError, match="loss.name=rcl trains on pairs.*loss.name=oe"):
        build_recipe(_cfg(root, "data.use_generated=false"))
    _, train_set = build_recipe(_cfg(root, "data.use_generated=false", "loss.name=oe"))
    assert isinstance(train_set, CityscapesSeg)


def test_unknown_step_fails_before_anything_is_built(tmp_path, recorded):
    with pytest.raises(KeyError, match="unknown loss.name 'rlc'"):
        training.run_training(_cfg(tmp_path / "no_data", "loss.name=rlc"), info=CPU)
    assert not recorded


@pytest.mark.parametrize("script", [train_deeplab, train_m2f])
def test_scripts_share_the_training_arguments(script):
    args = script.get_args_parser().parse_intermixed_args(
        ["--cfg", "exp/M2F.yaml", "--resume", "train.epochs=3", "--device", "cpu", "--no_progress"]
    )
    assert isinstance(args, argparse.Namespace)
    assert (args.resume, args.device, args.no_progress, args.overrides) == (
        True,
        "cpu",
        True,
        ["train.epochs=3"],
    )
