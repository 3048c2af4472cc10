"""Checkpoint loading and saving with the three DeepLab layouts, built in tmp_path from the light model:
NVIDIA's closed-world format (``{"state_dict": {"module.…"}}`` without ``ood_head``), the released
MultiShiftSeg format (``module.``-prefixed plain dict with ``ood_head``) and this project's own."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
import torch

from lib.errors import UserError
from lib.models import build_model
from lib.models.checkpoints import (
    IncompatibleCheckpointError,
    MissingOODHeadError,
    WrongModelError,
    git_commit,
    load_model,
    load_weights,
    save_checkpoint,
)

MODEL = "deeplab_wrn_light"


def fresh_model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(MODEL).eval()


def assert_same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=0, atol=0, msg=k)


def test_nvidia_closed_world_checkpoint_initialises_ood_head_from_classifier(tmp_path, caplog):
    """As training's starting weights only (``fill_ood_head``); anywhere else it is refused."""
    source = fresh_model(1)
    weights = {f"module.{k}": v for k, v in source.state_dict().items() if not k.startswith("ood_head")}
    path = tmp_path / "DeepLabV3+_WideResNet38_baseline.pth"
    torch.save({"state_dict": weights, "epoch": 175, "mean_iu": 0.8}, path)
    model = fresh_model(2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(
        MissingOODHeadError, match=r"has no OOD head.*\n  missing keys \(1\): ood_head\.weight"
    ):
        load_weights(model, path)
    assert issubclass(MissingOODHeadError, UserError) and issubclass(
        MissingOODHeadError, IncompatibleCheckpointError
    )
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # nothing loaded
    with caplog.at_level(logging.INFO, logger="lib.models.deeplab"):
        extra = load_weights(model, path, fill_ood_head=True)
    assert extra == {"epoch": 175, "mean_iu": 0.8}
    torch.testing.assert_close(model.ood_head.weight, source.final[6].weight, rtol=0, atol=0)
    assert not torch.equal(model.ood_head.weight, source.ood_head.weight)
    assert any(
        "ood_head.weight" in r.getMessage() and "final.6.weight" in r.getMessage() for r in caplog.records
    )
    state = {k: v for k, v in model.state_dict().items() if k != "ood_head.weight"}
    for k, v in state.items():
        torch.testing.assert_close(v, source.state_dict()[k], rtol=0, atol=0, msg=k)


def test_released_multishiftseg_checkpoint_keeps_its_ood_head(tmp_path, caplog):
    source = fresh_model(1)
    path = tmp_path / "released.pth"
    torch.save({f"module.{k}": v for k, v in source.state_dict().items()}, path)
    model = fresh_model(2)
    with caplog.at_level(logging.INFO):
        assert load_weights(model, path) == {}
    assert_same_state(model, source)
    assert not any("ood_head" in r.getMessage() for r in caplog.records)


def test_own_checkpoint_round_trip_and_rebuild(tmp_path):
    model = fresh_model(1).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(2, 3, 32, 48)
    anomaly_score, logits = model(x)
    (anomaly_score.mean() + logits.mean()).backward()
    optimizer.step()
    model.eval()
    rng = torch.get_rng_state()
    path = tmp_path / "run" / "last.pth"
    config = {
        "train": {"lr": 1e-3, "warmup_epoch": 10},
        "model": {"name": MODEL},
        "loss": {"margins": [10, 5, 5]},
    }
    save_checkpoint(
        path,
        model=model,
        optimizer=optimizer,
        epoch=3,
        stage=2,
        config=config,
        model_name=MODEL,
        model_kwargs={"num_classes": 19},
        metrics={"AP": 0.5, "FPR95": 0.1},
        extra={"rng": rng},
    )
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pth"]
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert raw["git_commit"] == git_commit()
    assert raw["epoch"] == 3 and raw["stage"] == 2 and raw["config"] == config

    restored = fresh_model(2)
    extra = load_weights(restored, path)
    assert_same_state(restored, model)
    assert extra["epoch"] == 3 and extra["stage"] == 2 and extra["metrics"] == {"AP": 0.5, "FPR95": 0.1}
    assert extra["model_name"] == MODEL and extra["model_kwargs"] == {"num_classes": 19}
    torch.testing.assert_close(extra["extra"]["rng"], rng, rtol=0, atol=0)
    new_optimizer = torch.optim.Adam(restored.parameters(), lr=1e-3)
    new_optimizer.load_state_dict(extra["optimizer"])
    torch.testing.assert_close(
        new_optimizer.state_dict()["state"][0]["exp_avg"], optimizer.state_dict()["state"][0]["exp_avg"]
    )

    rebuilt = load_model(path).eval()
    assert_same_state(rebuilt, model)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), model(x))


def test_save_replaces_existing_file_atomically(tmp_path):
    model = fresh_model(1)
    path = tmp_path / "best_AP.pth"
    path.write_bytes(b"old")
    kwargs = dict(epoch=0, stage=1, config={}, model_name=MODEL, model_kwargs={}, metrics={})
    save_checkpoint(path, model=model, **kwargs)
    assert torch.load(path, weights_only=True)["epoch"] == 0
    assert [p.name for p in tmp_path.iterdir()] == ["best_AP.pth"]


def test_save_rejects_values_weights_only_cannot_load(tmp_path):
    with pytest.raises(TypeError, match=r"checkpoint\['config'\]\['data'\]\['root'\] is a PosixPath"):
        save_checkpoint(
            tmp_path / "x.pth",
            model=fresh_model(1),
            epoch=0,
            stage=1,
            config={"data": {"root": Path("datasets")}},
            model_name=MODEL,
            model_kwargs={},
            metrics={},
        )
    assert list(tmp_path.iterdir()) == []


def test_mismatch_error_lists_missing_unexpected_and_shapes():
    model = fresh_model(1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = dict(fresh_model(2).state_dict())
    del state["aspp.img_conv.0.weight"]
    state["final.6.weight"] = torch.zeros(5, 48, 1, 1)
    state["ood_head.weight"] = torch.zeros(5, 48, 1, 1)
    for i in range(12):
        state[f"extra_head.{i}.weight"] = torch.zeros(1)
    with pytest.raises(IncompatibleCheckpointError) as info:
        load_weights(model, state)
    message = str(info.value)
    assert "missing keys (1): aspp.img_conv.0.weight" in message
    assert "unexpected keys (12): extra_head.0.weight" in message
    assert "... and 2 more" in message
    assert "shape mismatches (2): final.6.weight checkpoint [5, 48, 1, 1] vs model [19, 48, 1, 1]" in message
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0, msg=k)


def test_numpy_values_and_missing_num_batches_tracked_are_accepted():
    source = fresh_model(1)
    state = {k: v.numpy() for k, v in source.state_dict().items() if not k.endswith("num_batches_tracked")}
    model = fresh_model(2)
    load_weights(model, {"model": state, "__author__": "converted"})
    assert_same_state(model, source)


def test_pickle_and_unsafe_files_get_clear_errors(tmp_path):
    with pytest.raises(ValueError, match=re.escape("is a pickle (detectron2 format)")):
        load_weights(fresh_model(1), tmp_path / "model_final.pkl")
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_weights(fresh_model(1), tmp_path / "absent.pth")
    unsafe = tmp_path / "unsafe.pth"
    torch.save({"state_dict": {}, "config": logging.getLogger("x")}, unsafe)
    with pytest.raises(ValueError, match=r"weights_only=True"):
        load_weights(fresh_model(1), unsafe)
    with pytest.raises(ValueError, match="'mod1.conv1.weight' is a str"):
        load_weights(fresh_model(1), {"mod1.conv1.weight": "not a tensor"})


def _seven_class_checkpoint(path):
    torch.manual_seed(3)
    model = build_model(MODEL, num_classes=7).eval()
    save_checkpoint(
        path,
        model=model,
        epoch=0,
        stage=1,
        config={},
        model_name=MODEL,
        model_kwargs={"num_classes": 7},
        metrics={},
    )
    return model


def test_load_model_rebuilds_the_model_a_checkpoint_was_trained_as(tmp_path):
    trained = _seven_class_checkpoint(tmp_path / "last.pth")
    for rebuilt in (load_model(tmp_path / "last.pth"), load_model(tmp_path / "last.pth", name=MODEL)):
        assert rebuilt.final[6].out_channels == 7  # from the checkpoint's model_kwargs, not the config's
        assert_same_state(rebuilt, trained)
    with pytest.raises(
        WrongModelError, match="holds a 'deeplab_wrn_light' model .* model.name is 'deeplab_wrn38'"
    ):
        load_model(tmp_path / "last.pth", name="deeplab_wrn38")
    with pytest.raises(
        WrongModelError, match="score.model is 'mask2anomaly_tiny'; set score.model=deeplab_wrn_light"
    ):
        load_model(tmp_path / "last.pth", name="mask2anomaly_tiny", name_key="score.model")


def test_load_model_builds_external_weights_from_the_config(tmp_path):
    model = fresh_model(4)
    path = tmp_path / "plain.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, path)
    assert_same_state(load_model(path, name=MODEL, kwargs={"num_classes": 19}), model)
    with pytest.raises(ValueError, match="no model_name/model_kwargs .*name its model \\(model.name\\)"):
        load_model(path)
    closed = tmp_path / "closed.pth"
    torch.save({k: v for k, v in model.state_dict().items() if k != "ood_head.weight"}, closed)
    with pytest.raises(MissingOODHeadError):
        load_model(closed, name=MODEL)
    filled = load_model(closed, name=MODEL, fill_ood_head=True)
    assert torch.equal(filled.state_dict()["ood_head.weight"], model.state_dict()["final.6.weight"])


def test_generation_score_filter_rebuilds_its_model_from_the_checkpoint(tmp_path):
    from generation.filters import build_score_model

    trained = _seven_class_checkpoint(tmp_path / "last.pth")
    assert_same_state(build_score_model(MODEL, {}, str(tmp_path / "last.pth"), "cpu"), trained)
    with pytest.raises(WrongModelError, match="score.model is 'mask2anomaly_r50'"):
        build_score_model("mask2anomaly_r50", {}, str(tmp_path / "last.pth"), "cpu")


def test_git_commit_is_a_hash_or_none():
    commit = git_commit()
    assert commit is None or re.fullmatch(r"[0-9a-f]{40}", commit)
