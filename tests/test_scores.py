"""Score functions on tiny logits with values worked out by hand."""

import math

import pytest
import torch

from lib.scores import SCORES, get_score
from lib.scores_m2f import mask_class_scores
from lib.scores_m2f import mask_confidence as m2f_mask_confidence
from lib.scores_m2f import rba as m2f_rba

# Two pixels of a 3-class map: a confident one and a uniform one.
LOGITS = torch.tensor([[math.log(8.0), 0.0, 0.0], [1.0, 1.0, 1.0]]).T.reshape(1, 3, 1, 2)
ANOMALY = torch.tensor([[[0.25, -3.0]]])


def test_names():
    assert SCORES.names() == ["energy", "entropy", "learned", "mask_confidence", "maxlogit", "msp", "rba"]


def test_learned_passes_the_model_score_through_as_float32():
    out = get_score("learned")(LOGITS, ANOMALY.half())
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ANOMALY)


def test_msp():
    # softmax of (log 8, 0, 0) = (0.8, 0.1, 0.1); uniform = 1/3 each.
    out = get_score("msp")(LOGITS, ANOMALY)
    torch.testing.assert_close(out, torch.tensor([[[0.2, 2.0 / 3.0]]]))


def test_maxlogit():
    out = get_score("maxlogit")(LOGITS, ANOMALY)
    torch.testing.assert_close(out, torch.tensor([[[-math.log(8.0), -1.0]]]))


def test_entropy():
    h_confident = -(0.8 * math.log(0.8) + 2 * 0.1 * math.log(0.1))
    out = get_score("entropy")(LOGITS, ANOMALY)
    torch.testing.assert_close(out, torch.tensor([[[h_confident, math.log(3.0)]]]))


def test_energy():
    # logsumexp(log 8, 0, 0) = log 10; logsumexp(1, 1, 1) = 1 + log 3.
    out = get_score("energy")(LOGITS, ANOMALY)
    torch.testing.assert_close(out, torch.tensor([[[-math.log(10.0), -(1.0 + math.log(3.0))]]]))


@pytest.mark.parametrize("name", ["msp", "maxlogit", "entropy", "energy"])
def test_uniform_pixel_is_more_anomalous_than_confident_one(name):
    out = get_score(name)(LOGITS.bfloat16(), ANOMALY)
    assert out.dtype == torch.float32 and out.shape == (1, 1, 2)
    assert out[0, 0, 1] > out[0, 0, 0]


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(KeyError, match="'mps'.*Did you mean 'msp'.*energy, entropy, learned"):
        get_score("mps")


def test_bad_shape_is_an_error():
    with pytest.raises(ValueError, match=r"\[B,C,H,W\]"):
        get_score("msp")(LOGITS[0], ANOMALY)


# Mask2Former "logits" = per-class mask scores s_c in [0, Q]: one pixel claimed twice by class 0
# (s = 1.5, 0.25, 0), one claimed by nobody (s = 0, 0, 0).
CLASS_SCORES = torch.tensor([[1.5, 0.25, 0.0], [0.0, 0.0, 0.0]]).T.reshape(1, 3, 1, 2)


def test_mask_confidence_by_hand():
    out = get_score("mask_confidence")(CLASS_SCORES.half(), ANOMALY)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, torch.tensor([[[1.0 - 1.5, 1.0]]]))


def test_rba_by_hand():
    out = get_score("rba")(CLASS_SCORES, ANOMALY)
    torch.testing.assert_close(out, torch.tensor([[[-(math.tanh(1.5) + math.tanh(0.25)), 0.0]]]))


def test_mask_scores_equal_lib_scores_m2f_on_query_outputs():
    """Registry entries on the model's class scores == the query-level functions of lib.scores_m2f."""
    torch.manual_seed(0)
    pred_logits, pred_masks = torch.randn(2, 5, 4), torch.randn(2, 5, 3, 6)
    s = mask_class_scores(pred_logits, pred_masks)
    torch.testing.assert_close(
        get_score("mask_confidence")(s, ANOMALY), m2f_mask_confidence(pred_logits, pred_masks)
    )
    torch.testing.assert_close(get_score("rba")(s, ANOMALY), m2f_rba(pred_logits, pred_masks))


@pytest.mark.parametrize("name", ["mask_confidence", "rba"])
def test_mask_scores_need_class_score_maps(name):
    with pytest.raises(ValueError, match=r"\[B,C,H,W\]"):
        get_score(name)(CLASS_SCORES[0], ANOMALY)
