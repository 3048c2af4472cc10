"""DeepWV3Plus against the published MultiShiftSeg DeepLab model, plus the light variant's contract.

Reference data: the published model (gaozhitong/MultiShiftSeg, ``lib/network/deepv3/deepv3.py``,
commit 2f74045), every state-dict tensor filled with a per-key deterministic recipe (rebuilt below),
run in eval mode on a 1x3x96x160 standard-normal input. Fixtures copied from that reference:

- ``deeplab_wrn38_weights.npz``: the 269 state-dict keys in order, dtypes, shapes, kinds and the
  per-tensor fill checksums (numel, float64 sum and abs-sum, first element);
- ``deeplab_wrn38_io.npz``: the input, ``anomaly_score`` [1,96,160] and ``logit`` [1,19,96,160];
- ``deeplab_wrn38_intermediates.npz``: to stay under 2 MB, a deterministic subset of each
  intermediate — the first channels (m2: 16 of 128, mod7: 64 of 4096, feature: 16 of 256) in full,
  and the float64 mean of every channel of the whole tensor.
"""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest
import torch

from lib.labels import NUM_CLASSES
from lib.models import build_model
from lib.models.deeplab import DeepWV3Plus, energy_score, upsample
from tests.utils import load_fixture

ATOL = 1e-4


def fill_tensor(key: str, shape: tuple[int, ...], kind: str) -> torch.Tensor:
    """The reference's deterministic weight recipe: one crc32-seeded generator per key."""
    g = torch.Generator().manual_seed(zlib.crc32(key.encode("utf-8")))
    if kind == "conv_or_linear_weight":
        return torch.randn(shape, generator=g) * math.sqrt(1.0 / math.prod(shape[1:]))
    if kind == "bn_weight":
        return 1 + 0.1 * torch.randn(shape, generator=g)
    if kind in ("bn_bias", "bn_running_mean"):
        return 0.1 * torch.randn(shape, generator=g)
    if kind == "bn_running_var":
        return 1 + 0.5 * torch.rand(shape, generator=g)
    if kind == "bn_num_batches_tracked":
        return torch.zeros(shape, dtype=torch.int64)
    raise ValueError(f"unknown kind {kind!r} for {key}")


def parse_shape(field: str) -> tuple[int, ...]:
    return tuple(int(s) for s in field.split(",")) if field else ()


@pytest.fixture(scope="module")
def reference_weights() -> dict[str, np.ndarray]:
    return load_fixture("deeplab_wrn38_weights")


@pytest.fixture(scope="module")
def reference_state_dict(reference_weights) -> dict[str, torch.Tensor]:
    w = reference_weights
    return {
        str(k): fill_tensor(str(k), parse_shape(str(s)), str(kind))
        for k, s, kind in zip(w["keys"], w["shapes"], w["kinds"])
    }


@pytest.fixture(scope="module")
def reference_run(reference_state_dict):
    """Build on the meta device (no init cost), load the reference weights strictly, run the input."""
    with torch.device("meta"):
        model = build_model("deeplab_wrn38")
    model.load_state_dict(reference_state_dict, strict=True, assign=True)
    model.eval()
    captured: dict[str, torch.Tensor] = {}
    hooks = [
        module.register_forward_hook(lambda _m, _i, out, name=name: captured.__setitem__(name, out))
        for name, module in (("m2", model.mod2), ("mod7", model.mod7), ("feature", model.final[5]))
    ]
    io = load_fixture("deeplab_wrn38_io")
    with torch.inference_mode():
        anomaly_score, logits = model(torch.from_numpy(io["input"]))
    for h in hooks:
        h.remove()
    return model, anomaly_score, logits, captured, io


def test_state_dict_layout_matches_published(reference_weights):
    with torch.device("meta"):
        model = build_model("deeplab_wrn38")
    sd = model.state_dict()
    w = reference_weights
    assert list(sd) == [str(k) for k in w["keys"]]
    for key, dtype, shape in zip(w["keys"], w["dtypes"], w["shapes"]):
        assert tuple(sd[str(key)].shape) == parse_shape(str(shape)), key
        assert str(sd[str(key)].dtype) == f"torch.{dtype}", key
    assert sum(p.numel() for p in model.parameters()) == 137_108_800


def test_weight_recipe_matches_reference_checksums(reference_weights, reference_state_dict):
    w = reference_weights
    for i, key in enumerate(w["keys"]):
        t = reference_state_dict[str(key)]
        assert t.numel() == w["numel"][i], key
        assert t.double().sum().item() == pytest.approx(w["sum"][i], rel=1e-9, abs=1e-9), key
        assert t.double().abs().sum().item() == pytest.approx(w["abs_sum"][i], rel=1e-9), key
        assert t.reshape(-1)[0].item() == w["first"][i], key


def test_outputs_match_published_model(reference_run):
    _, anomaly_score, logits, _, io = reference_run
    assert anomaly_score.shape == (1, 96, 160) and anomaly_score.dtype == torch.float32
    assert logits.shape == (1, NUM_CLASSES, 96, 160) and logits.dtype == torch.float32
    np.testing.assert_allclose(anomaly_score.numpy(), io["anomaly_score"], rtol=0, atol=ATOL)
    np.testing.assert_allclose(logits.numpy(), io["logit"], rtol=0, atol=ATOL)


@pytest.mark.parametrize("name", ["m2", "mod7", "feature"])
def test_intermediates_match_published_model(reference_run, name):
    ref = load_fixture("deeplab_wrn38_intermediates")
    out = reference_run[3][name]
    n = ref[f"{name}_slice"].shape[1]
    np.testing.assert_allclose(out[:, :n].numpy(), ref[f"{name}_slice"], rtol=0, atol=ATOL)
    means = out.double().mean(dim=(0, 2, 3)).numpy()
    np.testing.assert_allclose(means, ref[f"{name}_channel_mean"], rtol=0, atol=ATOL)


def test_anomaly_score_is_energy_at_half_resolution_then_upsampled(reference_run):
    model, anomaly_score, logits, captured, _ = reference_run
    feature = captured["feature"]
    with torch.inference_mode():
        ood_logits = model.ood_head(feature)
        expected = upsample((-torch.logsumexp(ood_logits, dim=1)).unsqueeze(1), (96, 160)).squeeze(1)
        torch.testing.assert_close(energy_score(ood_logits), -torch.logsumexp(ood_logits, dim=1))
        torch.testing.assert_close(anomaly_score, expected)
        torch.testing.assert_close(logits, upsample(model.final[6](feature), (96, 160)))


def test_uncertainty_head_init_copies_classifier():
    model = build_model("deeplab_wrn_light").eval()
    assert not torch.equal(model.ood_head.weight, model.final[6].weight)
    model.uncertainty_head_init()
    torch.testing.assert_close(model.ood_head.weight, model.final[6].weight, rtol=0, atol=0)
    x = torch.randn(1, 3, 32, 48)
    with torch.no_grad():
        anomaly_score, logits = model(x)
        feature = model.penultimate_feature(x)
        expected = upsample(energy_score(model.final[6](feature)).unsqueeze(1), (32, 48)).squeeze(1)
    torch.testing.assert_close(anomaly_score, expected)
    assert model.ood_head.weight.data_ptr() != model.final[6].weight.data_ptr()


def test_light_variant_contract_and_size():
    model = build_model("deeplab_wrn_light", num_classes=5)
    assert isinstance(model, DeepWV3Plus)
    assert 1_000_000 <= sum(p.numel() for p in model.parameters()) <= 3_000_000
    x = torch.randn(2, 3, 37, 70)
    anomaly_score, logits = model.train()(x)
    assert anomaly_score.shape == (2, 37, 70) and logits.shape == (2, 5, 37, 70)
    (anomaly_score.mean() + logits.mean()).backward()
    assert model.ood_head.weight.grad is not None and model.mod1.conv1.weight.grad is not None
    with torch.no_grad():
        assert model.eval().penultimate_feature(x).shape[-2:] == (19, 35)


def test_building_does_not_patch_torch_nn():
    dropout = torch.nn.Dropout
    build_model("deeplab_wrn_light")
    assert torch.nn.Dropout is dropout
