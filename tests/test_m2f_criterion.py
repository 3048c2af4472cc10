"""Hungarian matcher, point sampling and the Mask2Former set criterion with RCL (tiny model)."""

from __future__ import annotations

import pytest
import torch

from lib.labels import ANOMALY, IGNORE, NUM_CLASSES
from lib.models import build_model
from lib.models.mask2former import criterion as criterion_module
from lib.models.mask2former.criterion import SetCriterion, dice_loss, semantic_targets, sigmoid_bce_loss
from lib.models.mask2former.matcher import HungarianMatcher, dice_cost, hungarian_assign, sigmoid_bce_cost
from lib.models.mask2former.point_sampling import low_loss_point_coords, uncertain_point_coords


def test_hungarian_assign_hand_made_costs():
    rows, cols = hungarian_assign(torch.tensor([[4.0, 1.0, 3.0], [2.0, 0.0, 5.0], [3.0, 2.0, 2.0]]))
    assert rows.tolist() == [0, 1, 2] and cols.tolist() == [1, 0, 2]  # 1 + 2 + 2 beats the greedy 0 + ...
    rows, cols = hungarian_assign(torch.tensor([[5.0, 9.0], [1.0, 2.0], [0.5, 8.0]]))  # 3 queries, 2 targets
    assert rows.tolist() == [1, 2] and cols.tolist() == [1, 0]
    with pytest.raises(ValueError, match="NaN or inf"):
        hungarian_assign(torch.tensor([[float("nan"), 1.0]]))


def test_pairwise_costs_equal_per_pair_losses():
    logits, targets = torch.randn(4, 50), (torch.rand(3, 50) > 0.5).float()
    bce, dice = sigmoid_bce_cost(logits, targets), dice_cost(logits, targets)
    for q in range(4):
        for t in range(3):
            torch.testing.assert_close(
                bce[q, t], sigmoid_bce_loss(logits[q : q + 1], targets[t : t + 1], 1.0)
            )
            torch.testing.assert_close(dice[q, t], dice_loss(logits[q : q + 1], targets[t : t + 1], 1.0))


def test_matcher_recovers_a_permutation():
    masks = torch.zeros(4, 16, 16)
    masks[0, :8], masks[1, 8:, :8], masks[2, 8:, 8:], masks[3, :4, :4] = 1, 1, 1, 1
    pred_masks = (masks * 20 - 10)[None]  # query q predicts mask q
    pred_logits = torch.full((1, 4, NUM_CLASSES + 1), -5.0)
    labels = torch.tensor([3, 7, 11, 2])
    pred_logits[0, torch.arange(4), labels] = 5.0
    perm = torch.tensor([2, 0, 3, 1])
    target = {"labels": labels[perm], "masks": masks[perm]}
    rows, cols = HungarianMatcher(num_points=256)(pred_logits, pred_masks, [target])[0]
    assert rows.tolist() == [0, 1, 2, 3]
    assert perm[cols].tolist() == [0, 1, 2, 3]


def test_semantic_targets_skip_ignore_and_anomaly_and_pad_as_background():
    label = torch.full((1, 4, 6), IGNORE)
    label[0, :2, :3], label[0, 2:, :3], label[0, :, 5] = 5, 0, ANOMALY
    (target,) = semantic_targets(label, (8, 8))
    assert target["labels"].tolist() == [0, 5]
    assert target["masks"].shape == (2, 8, 8) and target["masks"].dtype == torch.float32
    assert target["masks"][1, :2, :3].eq(1).all() and target["masks"].sum() == 12  # padding and 254 are 0


def test_point_selection_prefers_uncertain_and_low_loss_points():
    g = torch.Generator().manual_seed(0)
    x = torch.linspace(-1, 1, 64).expand(64, 64)
    coords = uncertain_point_coords(
        (x * 10)[None], num_points=400, oversample_ratio=3, importance_sample_ratio=0.75, generator=g
    )
    near_boundary = ((coords[0, :, 0] - 0.5).abs() < 0.2).float().mean()
    assert coords.shape == (1, 400, 2) and near_boundary > 0.75  # uniform would give 0.4
    target = (x < 0).float()[None]  # the right half disagrees with a confident "everywhere" mask
    coords = low_loss_point_coords(torch.full((1, 64, 64), 10.0), target, num_points=400, generator=g)
    left = (coords[0, :, 0] < 0.5).float().mean()
    assert coords.shape == (1, 400, 2) and 0.6 < left < 0.7  # all ~0.625N low-loss candidates + 5% uniform


def _toy_batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    images = torch.randn(4, 3, 64, 64, generator=g)
    labels = torch.zeros(4, 64, 64, dtype=torch.int64)
    labels[:, 32:] = 1
    labels[:, :, 40:] = 8
    labels[:, 10:20, 10:20] = ANOMALY
    labels[:, :2] = IGNORE
    images[:, :, 10:20, 10:20] += 2.0
    return images, labels


def test_criterion_terms_finite_weighted_and_decreasing():
    torch.manual_seed(0)
    model = build_model("mask2anomaly_tiny").train()
    criterion = SetCriterion(matcher=HungarianMatcher(num_points=256), num_points=256, deep_supervision=True)
    images, labels = _toy_batch()
    generated = torch.tensor([False, False, True, True])
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=2e-3)
    losses = []
    for _ in range(4):
        terms = criterion.terms(
            model(images), labels, generated=generated, generator=torch.Generator().manual_seed(0)
        )
        optimizer.zero_grad()
        terms["loss"].backward()
        optimizer.step()
        losses.append(terms["loss"].item())
    expected = {"loss_ce", "loss_mask", "loss_dice", "rcl_in", "rcl_aug", "rcl_pair", "loss"}
    expected |= {f"{t}_{i}" for t in ("loss_ce", "loss_mask", "loss_dice") for i in range(2)}
    assert set(terms) == expected
    assert all(torch.isfinite(v) for v in terms.values())
    total = sum(criterion.weight_of(k) * v for k, v in terms.items() if k != "loss")
    torch.testing.assert_close(terms["loss"], total)
    assert criterion.weight_of("loss_dice_1") == 10.0 and criterion.weight_of("rcl_pair") == 1.0
    assert all(b < a for a, b in zip(losses, losses[1:])) and losses[-1] < 0.9 * losses[0], losses


def test_criterion_rejects_mismatched_labels():
    model = build_model("mask2anomaly_tiny").train()
    outputs = model(torch.randn(2, 3, 32, 32))
    with pytest.raises(ValueError, match=r"labels must be \[B, H, W\] with B=2, got \[3, 32, 32\]"):
        SetCriterion(matcher=HungarianMatcher())(outputs, torch.zeros(3, 32, 32, dtype=torch.int64))


def test_criterion_honours_the_low_loss_keep_ratio(monkeypatch):
    torch.manual_seed(0)
    model = build_model("mask2anomaly_tiny").train()
    images, labels = _toy_batch()
    with torch.no_grad():
        outputs = model(images)
    seen = []

    def spy(logits, targets, **kwargs):
        seen.append((logits.shape[0], kwargs["keep_ratio"]))
        return low_loss_point_coords(logits, targets, **kwargs)

    monkeypatch.setattr(criterion_module, "low_loss_point_coords", spy)

    def terms(keep_ratio):
        criterion = SetCriterion(
            matcher=HungarianMatcher(num_points=256),
            num_points=256,
            low_loss_keep_ratio=keep_ratio,
            ood_margins=None,
        )
        generated = torch.tensor([False, False, True, True])
        return criterion.terms(
            outputs, labels, generated=generated, generator=torch.Generator().manual_seed(0)
        )

    keep_all, keep_half = terms(1.0), terms(0.5)
    assert [ratio for _, ratio in seen] == [1.0, 0.5] and seen[0][0] > 0  # generated images' masks only
    assert keep_all["loss_ce"] == keep_half["loss_ce"]  # same matching; only the mask points differ
    assert keep_all["loss_mask"] != keep_half["loss_mask"]
    with pytest.raises(ValueError, match=r"low_loss_keep_ratio must be in \(0, 1\], got 0.0"):
        SetCriterion(matcher=HungarianMatcher(), low_loss_keep_ratio=0.0)
