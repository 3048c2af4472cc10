"""Relative contrastive loss: every term computed by hand on tiny batches (B originals, then B twins)."""

from __future__ import annotations

import math

import pytest
import torch

from lib.labels import ANOMALY, IGNORE
from lib.losses import (
    RelContrastiveLoss,
    in_distribution_cross_entropy,
    relative_contrastive_terms,
    selected_cross_entropy,
)

A, I = ANOMALY, IGNORE
C = 3


def target_logits(targets: list[int], target_logit: list[float]) -> torch.Tensor:
    """[1, C, 1, W] logits: ``target_logit[j]`` for pixel j's class (class 0 for non-class pixels), else 0."""
    logits = torch.zeros(1, C, 1, len(targets))
    for j, (t, v) in enumerate(zip(targets, target_logit)):
        logits[0, t if t < C else 0, 0, j] = v
    return logits


def relu_(x: float) -> float:
    return max(x, 0.0)


def ce(v: float) -> float:
    """CE of a pixel whose target logit is v and whose other C-1 logits are 0."""
    return math.log(math.exp(v) + C - 1) - v


def test_cross_entropy_normalisations_by_hand():
    orig = torch.tensor([[[0, 1, A, I]]])
    gen = torch.tensor([[[2, 0, 1, A]]])
    logits_orig = torch.zeros(1, C, 1, 4)
    logits_gen = target_logits([2, 0, 1, A], [0.0, 1.0, 2.0, 0.0])
    targets_gen = torch.where(gen < C, gen, I)
    targets_orig = torch.where(orig < C, orig, I)

    assert in_distribution_cross_entropy(logits_orig, targets_orig).item() == pytest.approx(
        2 * math.log(3) / 4
    )
    assert in_distribution_cross_entropy(logits_gen, targets_gen).item() == pytest.approx(
        (ce(0) + ce(1) + ce(2)) / 4
    )
    # int(0.8 * 3) = 2 lowest-loss known pixels: those with target logits 1 and 2.
    selected = selected_cross_entropy(logits_gen, targets_gen, selection_ratio=0.8)
    assert selected.item() == pytest.approx((ce(1) + ce(2)) / 2)

    loss = RelContrastiveLoss(ce_weights=(50.0, 10.0), selection_ratio=0.8)
    terms = loss.terms(torch.cat([logits_orig, logits_gen]), torch.zeros(2, 1, 4), torch.cat([orig, gen]))
    assert terms["ce_orig"].item() == pytest.approx(2 * math.log(3) / 4)
    assert terms["ce_gen"].item() == pytest.approx((ce(1) + ce(2)) / 2)
    no_selection = RelContrastiveLoss(selection_ratio=1.0).terms(
        torch.cat([logits_orig, logits_gen]), torch.zeros(2, 1, 4), torch.cat([orig, gen])
    )
    assert no_selection["ce_gen"].item() == pytest.approx((ce(0) + ce(1) + ce(2)) / 4)


def test_selected_pixels_alone_get_gradient():
    logits = target_logits([2, 0, 1], [0.0, 1.0, 2.0]).requires_grad_()
    selected_cross_entropy(logits, torch.tensor([[[2, 0, 1]]]), selection_ratio=0.8).backward()
    per_pixel = logits.grad.abs().sum(dim=(0, 1, 2))
    assert per_pixel[0] == 0 and per_pixel[1] > 0 and per_pixel[2] > 0
    assert selected_cross_entropy(logits, torch.tensor([[[0, I, I]]]), selection_ratio=0.8) is None


def test_rcl_terms_by_hand_when_all_hinges_are_active():
    # originals: known at 0,1; anomaly at 2.  twins: known at 0,2; anomaly at 1.  n = 2 everywhere, so the
    # sampled sets are whole and, with every hinge active, each mean is pairing-independent.
    targets = torch.tensor([[[0, 1, A]], [[2, A, 1]]])
    score = torch.tensor([[[1.0, 2.0, 3.0]], [[4.0, 0.5, 6.0]]])
    m = (10.0, 5.0, 1.0)
    terms = relative_contrastive_terms(score, targets, m, torch.Generator().manual_seed(0))
    s_in, s_aug, s_out = [1.0, 2.0], [4.0, 6.0], [3.0, 0.5]
    assert terms["rcl_in"].item() == pytest.approx(sum(s_in) / 2 + m[0] - sum(s_out) / 2)
    assert terms["rcl_aug"].item() == pytest.approx(sum(s_aug) / 2 + m[1] - sum(s_out) / 2)
    # known in both halves only at pixel 0: relu(4 - 1 - 1) = 2.
    assert terms["rcl_pair"].item() == pytest.approx(2.0)


def test_rcl_sampling_follows_published_order():
    # |in| = 3, |aug| = 4, |out| = 2 -> n = 2; shuffles drawn in the order in, aug, out.
    targets = torch.tensor([[[0, 1, A, 0, I]], [[0, A, 1, 1, 0]]])
    score = torch.tensor([[[0.1, 0.7, 9.0, -0.4, 0.0]], [[0.3, 11.5, 2.0, -1.0, 0.6]]])
    m = (10.0, 5.0, 0.5)
    s_in, s_aug, s_out = [0.1, 0.7, -0.4], [0.3, 2.0, -1.0, 0.6], [9.0, 11.5]
    g = torch.Generator().manual_seed(3)
    p_in, p_aug, p_out = (torch.randperm(len(s), generator=g)[:2].tolist() for s in (s_in, s_aug, s_out))
    rcl_in = sum(relu_(s_in[i] + m[0] - s_out[o]) for i, o in zip(p_in, p_out)) / 2
    rcl_aug = sum(relu_(s_aug[a] + m[1] - s_out[o]) for a, o in zip(p_aug, p_out)) / 2
    # known in both an original and its twin: pixels 0 and 3.
    rcl_pair = (relu_(0.3 - 0.1 - m[2]) + relu_(-1.0 + 0.4 - m[2])) / 2

    terms = relative_contrastive_terms(score, targets, m, torch.Generator().manual_seed(3))
    assert terms["rcl_in"].item() == pytest.approx(rcl_in)
    assert terms["rcl_aug"].item() == pytest.approx(rcl_aug)
    assert terms["rcl_pair"].item() == pytest.approx(rcl_pair)
    again = relative_contrastive_terms(score, targets, m, torch.Generator().manual_seed(3))
    assert all(torch.equal(terms[k], again[k]) for k in terms)


def test_originals_only_give_rcl_in_alone_with_the_generator_order():
    # outlier-exposure baseline (no twins): |in| = 3, |out| = 2 -> n = 2; shuffles drawn in, then out.
    targets = torch.tensor([[[0, 1, A]], [[2, A, I]]])
    score = torch.tensor([[[0.1, 0.7, 9.0]], [[-0.4, 11.5, 0.0]]])
    m = (10.0, 5.0, 0.5)
    s_in, s_out = [0.1, 0.7, -0.4], [9.0, 11.5]
    g = torch.Generator().manual_seed(4)
    p_in, p_out = (torch.randperm(len(s), generator=g)[:2].tolist() for s in (s_in, s_out))
    rcl_in = sum(relu_(s_in[i] + m[0] - s_out[o]) for i, o in zip(p_in, p_out)) / 2
    terms = relative_contrastive_terms(score, targets, m, torch.Generator().manual_seed(4), twins=False)
    assert set(terms) == {"rcl_in"}
    assert terms["rcl_in"].item() == pytest.approx(rcl_in)
    single = relative_contrastive_terms(
        torch.tensor([[[1.0, 4.0, 0.0]]]), torch.tensor([[[0, A, I]]]), (5.0, 0.0, 0.0), twins=False
    )
    assert single["rcl_in"].item() == pytest.approx(max(0.0, 1.0 + 5.0 - 4.0))
    assert relative_contrastive_terms(score, torch.zeros_like(targets), m, twins=False) == {}


def test_negative_third_margin_gives_the_paper_sign():
    targets = torch.tensor([[[0]], [[0]]])
    score = torch.tensor([[[1.0]], [[2.5]]])
    assert relative_contrastive_terms(score, targets, (1.0, 1.0, 1.0))["rcl_pair"].item() == pytest.approx(
        0.5
    )
    assert relative_contrastive_terms(score, targets, (1.0, 1.0, -1.0))["rcl_pair"].item() == pytest.approx(
        2.5
    )


def test_batch_without_anomalies_drops_the_anomaly_terms():
    targets = torch.tensor([[[0, 1], [I, 2]], [[0, 2], [1, I]]])
    score = torch.tensor([[[1.0, 0.0], [0.0, 0.0]], [[3.0, 0.5], [0.0, 0.0]]], requires_grad=True)
    logits = torch.zeros(2, C, 2, 2, requires_grad=True)
    terms = RelContrastiveLoss(margins=(10.0, 5.0, 1.0)).terms(logits, score, targets)
    assert set(terms) == {"ce_orig", "ce_gen", "rcl_pair", "loss"}
    # known in both halves at (0,0) and (0,1): (relu(3 - 1 - 1) + relu(0.5 - 0 - 1)) / 2
    assert terms["rcl_pair"].item() == pytest.approx(0.5)
    terms["loss"].backward()
    assert torch.isfinite(score.grad).all() and torch.isfinite(logits.grad).all()
    assert score.grad[1, 0, 0] > 0 and score.grad[1, 0, 1] == 0


def test_empty_groups_leave_no_nan():
    # twins have no known pixel: no Omega_aug, no pairs, nothing to select.
    targets = torch.tensor([[[0, A]], [[A, I]]])
    terms = RelContrastiveLoss().terms(torch.zeros(2, C, 1, 2), torch.zeros(2, 1, 2), targets)
    assert set(terms) == {"ce_orig", "loss"}
    assert terms["loss"].item() == pytest.approx(50.0 * math.log(3) / 2)
    assert relative_contrastive_terms(torch.zeros(2, 1, 2), targets, (1.0, 1.0, 1.0)) == {}


def test_total_is_weighted_sum_and_targets_are_untouched():
    targets = torch.tensor([[[0, 1, A, 0]], [[2, A, 1, 1]]])
    before = targets.clone()
    logits = torch.randn(2, C, 1, 4, requires_grad=True)
    score = torch.randn(2, 1, 4, requires_grad=True)
    loss = RelContrastiveLoss(margins=(1.0, 0.5, 0.2), ce_weights=(2.0, 3.0), selection_ratio=0.7)
    terms = loss.terms(logits, score, targets, torch.Generator().manual_seed(0))
    expected = 2.0 * terms["ce_orig"] + 3.0 * terms["ce_gen"] + terms["rcl_in"] + terms["rcl_aug"]
    torch.testing.assert_close(terms["loss"], expected + terms["rcl_pair"])
    total = loss(logits, score, targets, torch.Generator().manual_seed(0))
    torch.testing.assert_close(total, terms["loss"])
    total.backward()
    assert logits.grad.abs().sum() > 0 and score.grad.abs().sum() > 0
    assert torch.equal(targets, before)


def test_bad_inputs_get_clear_errors():
    loss = RelContrastiveLoss()
    with pytest.raises(ValueError, match=r"values \[100\]"):
        loss(torch.zeros(2, C, 1, 2), torch.zeros(2, 1, 2), torch.tensor([[[0, 100]], [[0, 1]]]))
    with pytest.raises(ValueError, match=r"values \[3\]"):
        loss(torch.zeros(2, C, 1, 2), torch.zeros(2, 1, 2), torch.tensor([[[0, 3]], [[0, 1]]]))
    with pytest.raises(ValueError, match="B originals then B generated twins"):
        loss(torch.zeros(3, C, 1, 2), torch.zeros(3, 1, 2), torch.zeros(3, 1, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match="int64"):
        loss(torch.zeros(2, C, 1, 2), torch.zeros(2, 1, 2), torch.zeros(2, 1, 2, dtype=torch.uint8))
    with pytest.raises(ValueError, match="selection_ratio"):
        RelContrastiveLoss(selection_ratio=0.0)


def published_style_loss(logits, score, targets, margins, ce_weights, ratio):
    """The published computation, written independently with whole-batch masks and the global RNG."""
    half = logits.shape[0] // 2
    known = targets < C
    anomaly = targets == A
    class_targets = torch.where(known, targets, I)
    nll = torch.nn.functional.nll_loss(
        torch.log_softmax(logits, dim=1), class_targets, ignore_index=I, reduction="none"
    )
    ce_orig = nll[:half].mean()
    flat = nll[half:].flatten()
    ranked = flat.detach().clone()
    ranked[class_targets[half:].flatten() == I] = float("inf")
    keep = int(ratio * known[half:].sum())
    ce_aug = flat[torch.topk(ranked, keep, largest=False)[1]].mean()
    in_orig, in_aug = known.clone(), known.clone()
    in_orig[half:] = False
    in_aug[:half] = False
    n = min(int(anomaly.sum()), int(in_orig.sum()), int(in_aug.sum()))
    o, a, u = score[in_orig], score[in_aug], score[anomaly]
    o, a, u = (
        o[torch.randperm(o.shape[0])[:n]],
        a[torch.randperm(a.shape[0])[:n]],
        u[torch.randperm(u.shape[0])[:n]],
    )
    rcl = torch.relu(o + margins[0] - u).mean() + torch.relu(a + margins[1] - u).mean()
    same = in_orig[:half] & in_aug[half:]
    rcl = rcl + torch.relu(score[half:] - score[:half] - margins[2])[same].mean()
    return ce_weights[0] * ce_orig + ce_weights[1] * ce_aug + rcl


def test_matches_published_computation_on_a_random_batch():
    g = torch.Generator().manual_seed(7)
    targets = torch.randint(0, C, (4, 8, 12), generator=g)
    targets[torch.rand(4, 8, 12, generator=g) < 0.1] = I
    targets[0, 2:4, 3:6] = A
    targets[3, 5:8, 0:4] = A
    logits = torch.randn(4, C, 8, 12, generator=g)
    score = 3 * torch.randn(4, 8, 12, generator=g)
    margins, ce_weights = (10.0, 5.0, 5.0), (50.0, 10.0)
    torch.manual_seed(11)
    expected = published_style_loss(logits, score, targets, margins, ce_weights, 0.8)
    torch.manual_seed(11)
    loss = RelContrastiveLoss(margins=margins, ce_weights=ce_weights, selection_ratio=0.8)
    torch.testing.assert_close(loss(logits, score, targets), expected)
