"""``.safetensors`` checkpoints: ``lib.models.convert`` round-trips every layout the project reads
(NVIDIA's closed-world wrapper, the released DataParallel dicts, Mask2Anomaly's detectron2 wrapper,
this project's own checkpoints) and ``load_weights`` reads the result without unpickling anything."""

from __future__ import annotations

import json
import struct

import pytest
import torch

from lib.errors import UserError
from lib.models import build_model
from lib.models.checkpoints import (
    IncompatibleCheckpointError,
    MissingOODHeadError,
    load_model,
    load_weights,
    save_checkpoint,
)
from lib.models.convert import convert, get_args_parser, main
from tests.test_m2f_checkpoints import PRED, _published_extras, _trained_state

DEEPLAB = "deeplab_wrn_light"
M2F = "mask2anomaly_tiny"


def fresh(name: str, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(name).eval()


def assert_same_model(a: torch.nn.Module, b: torch.nn.Module, x: torch.Tensor) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for key in sa:
        assert sa[key].dtype == sb[key].dtype and torch.equal(sa[key], sb[key]), key
    with torch.no_grad():
        for ya, yb in zip(a(x), b(x)):
            assert torch.equal(ya, yb)


def header(path) -> dict:
    """The JSON header of a safetensors file (8-byte little-endian length, then JSON): no pickle."""
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + length])


def refuse_unpickling(monkeypatch) -> None:
    """From here on, any ``torch.load`` fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("torch.load called on a safetensors checkpoint")

    monkeypatch.setattr(torch, "load", refuse)


def nvidia_layout(path):
    state = fresh(DEEPLAB, 1).state_dict()
    weights = {f"module.{k}": v for k, v in state.items() if not k.startswith("ood_head")}
    torch.save({"state_dict": weights, "epoch": 175, "mean_iu": 0.8}, path)


def released_layout(path):
    torch.save({f"module.{k}": v for k, v in fresh(DEEPLAB, 1).state_dict().items()}, path)


@pytest.mark.parametrize("layout", [nvidia_layout, released_layout], ids=["nvidia", "released"])
def test_deeplab_layouts_round_trip(tmp_path, layout, one_thread, monkeypatch):
    source = tmp_path / "in.pth"
    layout(source)
    target, sidecar = convert(source, tmp_path / "out.safetensors", model_name=DEEPLAB)
    assert sidecar == tmp_path / "out.json"
    assert json.loads(sidecar.read_text()) == {"model_name": DEEPLAB, "model_kwargs": {}, "source": "in.pth"}
    original, converted = fresh(DEEPLAB, 2), fresh(DEEPLAB, 3)
    closed_world = layout is nvidia_layout
    load_weights(original, source, fill_ood_head=closed_world)
    tensors = header(target)
    assert not any(k.startswith("module.") for k in tensors)
    assert ("ood_head.weight" in tensors) == (not closed_world)  # the file is kept as it was
    refuse_unpickling(monkeypatch)
    if closed_world:  # still only starting weights: testing refuses it as it refuses the original
        with pytest.raises(MissingOODHeadError, match="ood_head.weight"):
            load_weights(fresh(DEEPLAB, 4), target)
    extra = load_weights(converted, target, fill_ood_head=closed_world)
    assert extra == {"model_name": DEEPLAB, "model_kwargs": {}, "source": "in.pth"}
    assert_same_model(original, converted, torch.randn(1, 3, 40, 56))


def test_mask2anomaly_detectron2_layout_round_trips(tmp_path, one_thread, monkeypatch):
    published = _published_extras(_trained_state())
    published[f"{PRED}static_query.weight"] = published.pop(f"{PRED}query_feat.weight")
    del published[f"{PRED}class_embed2.weight"], published[f"{PRED}class_embed2.bias"]
    source = tmp_path / "bt-f-xl.pth"
    torch.save({"model": published, "iteration": 7}, source)
    target, _ = convert(source, tmp_path / "bt-f-xl.safetensors", model_name=M2F)
    assert f"{PRED}static_query.weight" in header(target)
    original, converted = fresh(M2F, 2), fresh(M2F, 3)
    load_weights(original, source, fill_ood_head=True)
    refuse_unpickling(monkeypatch)
    load_weights(converted, target, fill_ood_head=True)
    assert_same_model(original, converted, torch.randn(1, 3, 64, 96))


def test_own_checkpoint_converts_without_a_model_name_and_rebuilds(tmp_path, one_thread):
    model = fresh(DEEPLAB, 1)
    path = tmp_path / "best_AP.pth"
    save_checkpoint(
        path,
        model=model,
        optimizer=torch.optim.Adam(model.parameters()),
        epoch=3,
        stage=2,
        config={"model": {"name": DEEPLAB}},
        model_name=DEEPLAB,
        model_kwargs={"num_classes": 19},
        metrics={"AP": 0.5},
    )
    target, sidecar = main(get_args_parser().parse_args([str(path), str(tmp_path / "release.safetensors")]))
    assert json.loads(sidecar.read_text())["model_kwargs"] == {"num_classes": 19}
    rebuilt = load_model(target).eval()
    assert_same_model(model, rebuilt, torch.randn(1, 3, 32, 48))


def test_cli_takes_the_model_from_an_experiment_yaml(tmp_path, one_thread):
    source = tmp_path / "DeepLab_best.pth"
    released_layout(source)
    target, sidecar = main(
        get_args_parser().parse_args(
            [str(source), str(tmp_path / "x.safetensors"), "--cfg", "exp/toy_pretrain.yaml"]
        )
    )
    assert json.loads(sidecar.read_text())["model_name"] == DEEPLAB
    assert target.is_file()


def test_bad_requests_are_user_errors_and_write_nothing(tmp_path, one_thread):
    source = tmp_path / "in.pth"
    released_layout(source)
    with pytest.raises(UserError, match="does not say which model"):
        convert(source, tmp_path / "a.safetensors")
    with pytest.raises(UserError, match=r"must end in \.safetensors"):
        convert(source, tmp_path / "a.pth", model_name=DEEPLAB)
    with pytest.raises(UserError, match="unknown model 'deeplab_wrn_lite'"):
        convert(source, tmp_path / "a.safetensors", model_name="deeplab_wrn_lite")
    with pytest.raises(IncompatibleCheckpointError):
        convert(source, tmp_path / "a.safetensors", model_name=M2F)
    with pytest.raises(UserError, match="--model_kwargs needs --model"):
        main(
            get_args_parser().parse_args(
                [str(source), str(tmp_path / "a.safetensors"), "--model_kwargs", "{}"]
            )
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.pth"]


def test_broken_safetensors_and_sidecar_get_clear_errors(tmp_path, one_thread):
    source = tmp_path / "in.pth"
    released_layout(source)
    target, sidecar = convert(source, tmp_path / "out.safetensors", model_name=DEEPLAB)
    sidecar.write_text("{not json")
    with pytest.raises(ValueError, match=r"out\.json: not valid JSON"):
        load_weights(fresh(DEEPLAB, 1), target)
    sidecar.unlink()
    assert load_weights(fresh(DEEPLAB, 1), target) == {}
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x00" * 16)
    with pytest.raises(ValueError, match="cannot read .*broken.safetensors as safetensors"):
        load_weights(fresh(DEEPLAB, 1), broken)
