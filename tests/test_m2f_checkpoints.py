"""Loading Mask2Anomaly / MultiShiftSeg checkpoint formats through ``load_weights`` and the model's
``adapt_state_dict`` hook (tiny model; the full published layout is loaded in test_m2f_parity)."""

from __future__ import annotations

import logging

import pytest
import torch

from lib.models import build_model
from lib.models.checkpoints import IncompatibleCheckpointError, MissingOODHeadError, load_weights

PRED = "sem_seg_head.predictor."


def _trained_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    net = build_model("mask2anomaly_tiny")
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return {k: v.clone() for k, v in net.state_dict().items()}


def _published_extras(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Add the entries published checkpoints carry but the forward never reads."""
    extras = {"criterion.empty_weight": torch.ones(5)}
    for i in range(3):
        extras[f"{PRED}transformer_cross_attention_layers.{i}.fusion_layer.weight"] = torch.randn(
            10, 20, 1, 1
        )
        extras[f"{PRED}transformer_cross_attention_layers.{i}.fusion_layer.bias"] = torch.randn(10)
    for key in state:
        if key.startswith("backbone.") and key.endswith(".norm.running_mean"):
            extras[key.replace("running_mean", "num_batches_tracked")] = torch.tensor(0)
    return {**state, **extras}


def _assert_state_equal(net: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    loaded = net.state_dict()
    assert set(loaded) == set(state)
    for key, value in state.items():
        assert torch.equal(loaded[key], value), key


def test_detectron2_wrapper_with_numpy_values_and_without_ood_head(caplog):
    state = _trained_state()
    published = _published_extras(state)
    published[f"{PRED}static_query.weight"] = published.pop(f"{PRED}query_feat.weight")
    del published[f"{PRED}class_embed2.weight"], published[f"{PRED}class_embed2.bias"]
    net = build_model("mask2anomaly_tiny")
    checkpoint = {"model": {k: v.numpy() for k, v in published.items()}, "iteration": 7}
    with pytest.raises(
        MissingOODHeadError,
        match=r"missing keys \(2\): sem_seg_head\.predictor\.class_embed2\.weight, .*bias",
    ):
        load_weights(net, checkpoint)  # for testing: refused
    with caplog.at_level(logging.INFO, logger="lib.models.mask2former.model"):
        load_weights(net, checkpoint, fill_ood_head=True)  # as training's starting weights
    assert "class_embed2 initialised from class_embed" in caplog.text
    expected = dict(state)
    expected[f"{PRED}class_embed2.weight"] = state[f"{PRED}class_embed.weight"]
    expected[f"{PRED}class_embed2.bias"] = state[f"{PRED}class_embed.bias"]
    _assert_state_equal(net, expected)
    assert net.state_dict()[f"{PRED}class_embed2.weight"].data_ptr() != (
        net.state_dict()[f"{PRED}class_embed.weight"].data_ptr()
    )


def test_multishiftseg_dataparallel_file_round_trips_outputs(tmp_path):
    state = _trained_state()
    path = tmp_path / "best_AUPRC.pth"
    torch.save({f"module.{k}": v for k, v in _published_extras(state).items()}, path)
    net = build_model("mask2anomaly_tiny").eval()
    load_weights(net, path)
    _assert_state_equal(net, state)
    ref = build_model("mask2anomaly_tiny").eval()
    ref.load_state_dict(state)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        for a, b in zip(net(x), ref(x)):
            assert torch.equal(a, b)


@pytest.mark.parametrize(
    "key",
    [
        f"{PRED}fusion_layer.weight",  # not under a cross-attention layer
        "sem_seg_head.pixel_decoder.adapter_1.norm.num_batches_tracked",  # GroupNorm, not the backbone
        "criterion.empty_weight_extra",
    ],
)
def test_only_documented_unused_entries_are_dropped(key):
    state = _published_extras(_trained_state())
    state[key] = torch.zeros(1)
    with pytest.raises(
        IncompatibleCheckpointError, match=rf"unexpected keys \(1\): {key.replace('.', '[.]')}"
    ):
        load_weights(build_model("mask2anomaly_tiny"), state)


def test_half_an_ood_head_is_not_filled_in():
    state = _trained_state()
    del state[f"{PRED}class_embed2.bias"]
    for fill in (False, True):
        with pytest.raises(IncompatibleCheckpointError, match=r"missing keys \(1\): .*class_embed2\.bias"):
            load_weights(build_model("mask2anomaly_tiny"), state, fill_ood_head=fill)
