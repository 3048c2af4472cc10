"""Parity of the Mask2Anomaly model with the published MultiShiftSeg Mask2Former.

Reference data: the published code (gaozhitong/MultiShiftSeg with detectron2, pure-PyTorch
deformable attention, CPU, 2 threads) run with the deterministic weights of
``tests/m2f_reference.py`` on a normalised 3x128x256 noise image and on a 3x100x150 image that
exercises padding to 128x160. The fixtures hold the key/shape/kind layout of its state dict with
checksums, its outputs, and strided subsets of its intermediates (backbone maps every 8th channel,
mask features and first-layer masks every 4th). ``pred_masks_ood`` equals ``pred_masks`` there
and is stored once.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lib.labels import NUM_CLASSES
from lib.models import build_model
from lib.models.checkpoints import load_weights
from lib.models.mask2former.backbone import FrozenBatchNorm2d
from lib.models.mask2former.model import UNUSED_CHECKPOINT_KEYS
from tests.m2f_reference import _shape, fill, layout, reference_state_dict
from tests.utils import load_fixture

# Nine decoder layers of random weights amplify float32 reduction order: with two threads on some CPUs
# (measured on an AMD EPYC) pred_logits move by 2e-3 while one thread stays within 1e-4 everywhere.
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    net = build_model("mask2anomaly_r50").eval()
    # the published layout with DataParallel's prefix and numpy values, through the generic loader
    load_weights(net, {f"module.{k}": v.numpy() for k, v in reference_state_dict().items()})
    return net


def _run(net, image: np.ndarray) -> tuple[dict, dict, tuple[torch.Tensor, torch.Tensor]]:
    """Forward one image; return backbone features, predictor outputs and the eval outputs."""
    captured: dict[str, object] = {}
    hooks = [
        net.backbone.register_forward_hook(lambda m, i, o: captured.update(backbone=o)),
        net.sem_seg_head.pixel_decoder.register_forward_hook(lambda m, i, o: captured.update(pixel=o)),
        net.sem_seg_head.predictor.register_forward_hook(lambda m, i, o: captured.update(pred=o)),
    ]
    with torch.no_grad():
        result = net(torch.from_numpy(image)[None])
    for h in hooks:
        h.remove()
    return captured, captured["pred"], result


def _kind(net: torch.nn.Module, key: str) -> str:
    module_name, _, name = key.rpartition(".")
    module = net.get_submodule(module_name)
    if isinstance(module, FrozenBatchNorm2d):
        return {"weight": "norm_weight", "bias": "norm_bias"}.get(name, f"bn_{name}")
    if isinstance(module, (torch.nn.GroupNorm, torch.nn.LayerNorm)):
        return f"norm_{name}"
    if isinstance(module, torch.nn.Embedding) or key.endswith("level_embed"):
        return "embedding"
    return "bias" if name.endswith("bias") else "conv_or_linear_weight"


def test_state_dict_layout_matches_published(model):
    lay = layout()
    keys = lay["key"].tolist()
    kept = [i for i, k in enumerate(keys) if not UNUSED_CHECKPOINT_KEYS.match(k)]
    assert len(keys) - len(kept) == 9 * 2 + 1 + 53  # fusion_layer convs, empty_weight, BN counters
    sd = model.state_dict()
    assert list(sd) == [keys[i] for i in kept]
    buffers = {name for name, _ in model.named_buffers()}
    for i in kept:
        key = keys[i]
        assert tuple(sd[key].shape) == _shape(lay["shape"][i]), key
        assert str(sd[key].dtype) == f"torch.{lay['dtype'][i]}", key
        assert _kind(model, key) == lay["kind"][i], key
        assert ("buffer" if key in buffers else "param") == lay["storage"][i], key


def test_fill_recipe_reproduces_published_checksums():
    lay = layout()
    keys = lay["key"].tolist()
    for key in (
        "backbone.stem.conv1.weight",
        "backbone.res4.5.conv2.norm.running_var",
        "sem_seg_head.pixel_decoder.transformer.level_embed",
        "sem_seg_head.predictor.query_embed.weight",
        "sem_seg_head.predictor.class_embed2.bias",
    ):
        i = keys.index(key)
        t = fill(key, lay["kind"][i], _shape(lay["shape"][i])).double()
        np.testing.assert_allclose(
            [t.sum().item(), t.abs().sum().item(), t.flatten()[0].item()],
            [lay["sum"][i], lay["abs_sum"][i], lay["first_value"][i]],
            rtol=1e-7,
            atol=1e-9,
            err_msg=key,
        )


def test_outputs_and_intermediates_match_published(model):
    ref = load_fixture("m2f_main")
    sem_ref = np.concatenate(
        [load_fixture("m2f_main_sem_seg_a")["sem_seg"], load_fixture("m2f_main_sem_seg_b")["sem_seg"]]
    )
    inter = load_fixture("m2f_intermediates")
    captured, pred, (anomaly, logits) = _run(model, ref["model_input"])

    for i in (2, 3, 4, 5):
        np.testing.assert_allclose(captured["backbone"][f"res{i}"][:, ::8], inter[f"res{i}"], atol=1e-4)
    mask_features, multi_scale = captured["pixel"]
    np.testing.assert_allclose(mask_features[:, ::4], inter["mask_features"], atol=1e-4)
    for i in range(3):
        np.testing.assert_allclose(multi_scale[i], inter[f"multi_scale_{i}"], atol=1e-4)

    aux = pred["aux_outputs"]
    assert len(aux) == 8
    np.testing.assert_allclose(aux[0]["pred_masks"][:, ::4], inter["layer0_pred_masks"], atol=1e-3)
    for i, a in enumerate(aux):
        np.testing.assert_allclose(a["pred_logits"], ref["layer_pred_logits"][i], atol=1e-4)
        np.testing.assert_allclose(a["pred_logits_ood"], ref["layer_pred_logits_ood"][i], atol=1e-4)
    np.testing.assert_allclose(pred["pred_logits"], ref["pred_logits"], atol=1e-4)
    np.testing.assert_allclose(pred["pred_logits_ood"], ref["pred_logits_ood"], atol=1e-4)
    np.testing.assert_allclose(pred["pred_masks"], ref["pred_masks"], atol=1e-3)
    assert pred["pred_masks_ood"] is pred["pred_masks"]

    assert logits.shape == (1, NUM_CLASSES, 128, 256) and anomaly.shape == (1, 128, 256)
    np.testing.assert_allclose(logits[0], sem_ref, atol=1e-3)
    np.testing.assert_allclose(anomaly, ref["anomaly_score"], atol=1e-3)


def test_padded_input_matches_published(model):
    ref = load_fixture("m2f_pad")
    _, pred, (anomaly, logits) = _run(model, ref["model_input"])
    assert pred["pred_masks"].shape == (1, 100, 32, 40)
    np.testing.assert_allclose(pred["pred_logits"], ref["pred_logits"], atol=1e-4)
    np.testing.assert_allclose(pred["pred_logits_ood"], ref["pred_logits_ood"], atol=1e-4)
    np.testing.assert_allclose(pred["pred_masks"], ref["pred_masks"], atol=1e-3)
    assert logits.shape == (1, NUM_CLASSES, 100, 150) and anomaly.shape == (1, 100, 150)
    np.testing.assert_allclose(logits[0], ref["sem_seg"], atol=1e-3)
    np.testing.assert_allclose(anomaly, ref["anomaly_score"], atol=1e-3)


def test_bad_input_shape_is_a_clear_error(model):
    with pytest.raises(ValueError, match=r"expected images \[B, 3, H, W\], got \(3, 32, 32\)"):
        model(torch.zeros(3, 32, 32))
