"""Mask2Former scores (mask confidence, RbA) on tiny hand-made outputs, and parity with the model's
own per-class scores and mask-based anomaly (``semantic_and_anomaly``)."""

import math

import pytest
import torch
import torch.nn.functional as F

from lib.models.mask2former.model import MASK_STRIDE, semantic_and_anomaly
from lib.scores_m2f import QUERY_CHUNK, mask_class_scores, mask_confidence, rba


def _tiny_outputs() -> tuple[torch.Tensor, torch.Tensor]:
    """2 queries, 2 known classes + no-object, a 1x2 image.

    Query 0: uniform class softmax (1/3 each); query 1: softmax (1/2, 1/4, 1/4). Pixel 0: both
    masks at sigmoid 1/2; pixel 1: query 0 on (sigmoid 1), query 1 off (sigmoid 0).
    """
    pred_logits = torch.tensor([[[0.0, 0.0, 0.0], [math.log(2.0), 0.0, 0.0]]])
    pred_masks = torch.tensor([[[[0.0, 100.0]], [[0.0, -100.0]]]])
    return pred_logits, pred_masks


def test_mask_class_scores_by_hand():
    s = mask_class_scores(*_tiny_outputs())
    # pixel 0: c0 = 1/3*1/2 + 1/2*1/2 = 5/12, c1 = 1/3*1/2 + 1/4*1/2 = 7/24; pixel 1: 1/3 each.
    expected = torch.tensor([[[[5 / 12, 1 / 3]], [[7 / 24, 1 / 3]]]])
    assert s.shape == (1, 2, 1, 2) and s.dtype == torch.float32
    torch.testing.assert_close(s, expected, rtol=0, atol=1e-6)


def test_mask_confidence_and_rba_by_hand():
    logits, masks = _tiny_outputs()
    torch.testing.assert_close(
        mask_confidence(logits, masks), torch.tensor([[[7 / 12, 2 / 3]]]), rtol=0, atol=1e-6
    )
    expected_rba = torch.tensor([[[-(math.tanh(5 / 12) + math.tanh(7 / 24)), -2 * math.tanh(1 / 3)]]])
    torch.testing.assert_close(rba(logits, masks), expected_rba, rtol=0, atol=1e-6)


def test_rba_orders_unclaimed_pixels_as_anomalous():
    # One confident query: where its mask is off no class claims the pixel, so RbA is 0 there.
    logits = torch.tensor([[[10.0, -10.0, -10.0]]])
    masks = torch.tensor([[[[8.0, -8.0]]]])
    score = rba(logits, masks)[0, 0]
    assert score[1] > score[0]
    assert -1.0 < float(score[0]) < -0.7 and abs(float(score[1])) < 1e-3


def test_many_queries_chunked_equals_dense_einsum():
    torch.manual_seed(1)
    q = 2 * QUERY_CHUNK + 3
    logits, masks = torch.randn(2, q, 6), torch.randn(2, q, 5, 7)
    dense = torch.einsum("bqk,bqhw->bkhw", logits.softmax(-1)[..., :-1], masks.sigmoid())
    torch.testing.assert_close(mask_class_scores(logits, masks), dense, rtol=1e-5, atol=1e-5)
    assert mask_confidence(logits, masks).shape == (2, 5, 7)
    assert rba(logits, masks).shape == (2, 5, 7)


def test_parity_with_model_semantic_and_anomaly():
    """The model's logits are the per-class mask scores; its anomaly is the confidence of the OOD head."""
    torch.manual_seed(2)
    b, q, k, h, w = 2, 7, 4, 3, 5
    masks = torch.randn(b, q, h, w)
    outputs = {
        "pred_logits": torch.randn(b, q, k + 1),
        "pred_logits_ood": torch.randn(b, q, k + 1),
        "pred_masks": masks,
        "pred_masks_ood": masks,
    }
    size = (h * MASK_STRIDE - 2, w * MASK_STRIDE - 1)
    anomaly, logits = semantic_and_anomaly(outputs, size)
    full = F.interpolate(masks, scale_factor=MASK_STRIDE, mode="bilinear", align_corners=False)
    full = full[:, :, : size[0], : size[1]]
    torch.testing.assert_close(mask_class_scores(outputs["pred_logits"], full), logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        mask_confidence(outputs["pred_logits_ood"], full), anomaly, rtol=1e-5, atol=1e-5
    )


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match=r"pred_logits \[B,Q,K\+1\] and pred_masks \[B,Q,H,W\]"):
        mask_confidence(torch.zeros(2, 3), torch.zeros(1, 2, 3, 3))
    with pytest.raises(ValueError, match="disagree on batch size or number of queries"):
        rba(torch.zeros(1, 4, 3), torch.zeros(1, 5, 2, 2))
    with pytest.raises(ValueError, match="no-object"):
        rba(torch.zeros(1, 4, 1), torch.zeros(1, 4, 2, 2))
