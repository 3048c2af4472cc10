"""Tests of lib.metrics.

``tests/fixtures/ood_metrics.npz`` holds the cases of the reference set made with the published
``eval_ood_measure`` (MultiShiftSeg commit 2f74045, numpy 2.4.6, scikit-learn 1.9.1): for each
case ``<case>_scores`` (float32), ``<case>_labels`` (uint8 0/1/255) and ``<case>_expected``
(AUROC, AP, FPR95 at full float64 precision; absent where the original returned ``None``), and
the first-TPR>=0.95 FPR the reference notes give for ``main`` and ``fpr95_plateau``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.distributed as dist
from sklearn.metrics import average_precision_score, roc_auc_score

from lib.labels import IGNORE, OOD_IN, OOD_OUT, OOD_VOID
from lib.metrics import (
    ConfusionMatrix,
    OODMetricAccumulator,
    fpr_at_threshold,
    ood_metrics,
    threshold_at_tpr,
)
from tests.utils import load_fixture

REF = load_fixture("ood_metrics")
NAMES = [str(n) for n in REF["metric_names"]]
SCORED_CASES = [str(c) for c in REF["cases"] if f"{c}_expected" in REF]


@pytest.mark.parametrize("case", SCORED_CASES)
def test_parity_with_published_eval(case):
    got = ood_metrics(REF[f"{case}_scores"], REF[f"{case}_labels"])
    for name, want in zip(NAMES, REF[f"{case}_expected"]):
        assert abs(got[name] - want) <= 1e-10, (case, name, got[name], want)


@pytest.mark.parametrize("case", ["main", "fpr95_plateau"])
def test_first_tpr_geq_rule(case):
    got = ood_metrics(REF[f"{case}_scores"], REF[f"{case}_labels"], fpr_rule="first_tpr_geq")
    assert abs(got["FPR95"] - float(REF[f"{case}_fpr_first_tpr_geq"])) <= 1e-12


def test_no_anomaly_case_raises():
    with pytest.raises(ValueError, match="no anomaly pixel"):
        ood_metrics(REF["no_anomaly_scores"], REF["no_anomaly_labels"])


def test_parity_with_torch_and_int64_labels():
    s, lab = REF["main_scores"], REF["main_labels"]
    want = ood_metrics(s, lab)
    assert ood_metrics(torch.from_numpy(s), torch.from_numpy(lab.astype(np.int64))) == want


def test_hand_computed_small_case():
    # pairs won by anomalies: 4 beats both inliers, 2 beats only 1 -> AUROC 3/4;
    # AP = 1/2 * 1 + 1/2 * 2/3; recall 1 is closest to 0.95 -> FP = #{inliers >= 2} = 1 of 2.
    got = ood_metrics(np.array([4.0, 3.0, 2.0, 1.0]), np.array([1, 0, 1, 0]))
    assert got["AUROC"] == pytest.approx(0.75, abs=1e-15)
    assert got["AP"] == pytest.approx(5 / 6, abs=1e-15)
    assert got["FPR95"] == 0.5


def test_all_tied_scores():
    got = ood_metrics(np.full(3, 0.5, dtype=np.float32), np.array([1, 0, 0], dtype=np.uint8))
    assert got == {"AUROC": 0.5, "AP": pytest.approx(1 / 3, abs=1e-15), "FPR95": 1.0}


def test_published_rule_can_pick_recall_below_095():
    # 10 anomalies: recall 0.9 and 1.0 are equally far from 0.95 in exact arithmetic, but in
    # float64 0.9 is nearer, so the published rule takes recall 0.9 at its lowest threshold
    # (just above -5): inliers > -5 are 3 of 5. The first-TPR>=0.95 rule counts -5 too.
    pos = [10, 9, 8, 7, 6, 5, 4, 3, 2, -5]
    neg = [1.5, 0, -1, -5, -6]
    scores = np.array(pos + neg, dtype=np.float32)
    labels = np.array([OOD_OUT] * 10 + [OOD_IN] * 5)
    assert ood_metrics(scores, labels)["FPR95"] == 3 / 5
    assert ood_metrics(scores, labels, fpr_rule="first_tpr_geq")["FPR95"] == 4 / 5


def _published_fpr95(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """Hendrycks' fpr_and_fdr_at_recall as the published evaluation uses it (independent check)."""
    order = np.argsort(y_score, kind="mergesort")[::-1]
    y_score, y_true = y_score[order], y_true[order]
    idx = np.r_[np.where(np.diff(y_score))[0], y_true.size - 1]
    tps = np.cumsum(y_true, dtype=np.float64)[idx]
    fps = 1 + idx - tps
    recall = tps / tps[-1]
    last = tps.searchsorted(tps[-1])
    recall, fps = np.r_[recall[last::-1], 1], np.r_[fps[last::-1], 0]
    return fps[np.argmin(np.abs(recall - 0.95))] / np.sum(1 - y_true)


@pytest.mark.parametrize("seed", range(6))
def test_random_ties_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(50, 3000))
    labels = rng.choice([OOD_IN, OOD_OUT, OOD_VOID], size=n, p=[0.8, 0.15, 0.05]).astype(np.uint8)
    scores = np.round(rng.normal(size=n) + labels.clip(max=1), int(rng.integers(0, 3))).astype(np.float32)
    keep = labels != OOD_VOID
    y, s = (labels[keep] == OOD_OUT).astype(np.int32), scores[keep]
    got = ood_metrics(scores, labels)
    assert abs(got["AUROC"] - roc_auc_score(y, s)) <= 1e-12
    assert abs(got["AP"] - average_precision_score(y, s)) <= 1e-12
    assert got["FPR95"] == _published_fpr95(y, s)


@pytest.mark.parametrize("seed", range(4))
def test_accumulator_equals_one_shot_on_random_splits(seed):
    rng = np.random.default_rng(100 + seed)
    scores = np.round(rng.normal(size=(7, 31, 17)), 1).astype(np.float32)
    labels = rng.choice([OOD_IN, OOD_OUT, OOD_VOID], size=scores.shape, p=[0.7, 0.2, 0.1]).astype(np.uint8)
    want = {rule: ood_metrics(scores, labels, fpr_rule=rule) for rule in ("published", "first_tpr_geq")}
    flat_s, flat_l = scores.reshape(-1), labels.reshape(-1)
    cuts = np.sort(rng.choice(np.arange(1, flat_s.size), size=int(rng.integers(1, 12)), replace=False))
    acc, other = OODMetricAccumulator(), OODMetricAccumulator()
    for i, (s, lab) in enumerate(zip(np.split(flat_s, cuts), np.split(flat_l, cuts))):
        (acc if i % 2 else other).update(torch.from_numpy(s) if i % 3 else s, lab)
    acc.merge(other)
    assert acc.n_pos + acc.n_neg == np.count_nonzero(labels != OOD_VOID)
    for rule, w in want.items():
        assert acc.compute(fpr_rule=rule) == w
    acc.update(scores, labels)  # updating after compute keeps working
    assert acc.n_pos == 2 * np.count_nonzero(labels == OOD_OUT)
    acc.reset()
    with pytest.raises(ValueError, match="no anomaly pixel"):
        acc.compute()


def test_accumulator_keeps_only_scored_pixels_compactly():
    scores = np.arange(12, dtype=np.float16).reshape(3, 4)
    labels = np.array([[0, 1, 255, 255]] * 3, dtype=np.uint8)
    acc = OODMetricAccumulator()
    acc.update(scores, labels)
    pos, neg = acc._sorted_scores()
    assert pos.dtype == np.float16 and pos.tolist() == [1, 5, 9]
    assert neg.tolist() == [0, 4, 8]


def test_bfloat16_tensor_scores():
    s = torch.tensor([0.5, 0.25, 1.0, 0.0], dtype=torch.bfloat16)
    got = ood_metrics(s, torch.tensor([1, 0, 1, 0]))
    assert got == {"AUROC": 1.0, "AP": 1.0, "FPR95": 0.0}


def test_threshold_and_fpr_helpers():
    pos = np.array([4.0, 3.0, 2.0, 1.0])
    assert threshold_at_tpr(pos, np.ones(4, dtype=np.uint8), tpr=0.75) == 2.0
    assert threshold_at_tpr(pos, np.ones(4, dtype=np.uint8)) == 1.0
    clean = np.array([0.5, 1.0, 1.5, 3.0, 9.0])
    clean_labels = np.array([OOD_IN] * 4 + [OOD_VOID], dtype=np.uint8)
    assert fpr_at_threshold(clean, clean_labels, 1.0) == 0.75
    assert fpr_at_threshold(clean, clean_labels, 3.5) == 0.0
    with pytest.raises(ValueError, match="no anomaly pixel"):
        threshold_at_tpr(clean, clean_labels)
    with pytest.raises(ValueError, match="tpr must lie"):
        threshold_at_tpr(pos, np.ones(4, dtype=np.uint8), tpr=0.0)


@pytest.mark.parametrize(
    ("scores", "labels", "message"),
    [
        (np.zeros(3), np.array([0, 0, 255]), "no anomaly pixel"),
        (np.zeros(3), np.array([1, 255, 1]), "no in-distribution pixel"),
        (np.array([0.1, np.nan, 0.3]), np.array([0, 1, 0]), "NaN or inf"),
        (np.array([0.1, np.inf, 0.3]), np.array([0, 1, 0]), "NaN or inf"),
        (np.zeros((2, 3)), np.zeros((3, 2), dtype=np.uint8), r"shape \(2, 3\) does not match"),
        (np.zeros(4), np.array([0, 1, 2, 254]), r"values \[2, 254\]"),
        (np.zeros(2), np.array([0.0, 1.0]), "labels must be integers"),
        (np.array(["a", "b"]), np.array([0, 1]), "scores must be real numbers"),
    ],
)
def test_degenerate_input_raises(scores, labels, message):
    with pytest.raises(ValueError, match=message):
        ood_metrics(scores, labels)


def test_nan_in_void_pixels_is_ignored_and_bad_rule_rejected():
    scores = np.array([0.9, 0.1, np.nan])
    labels = np.array([OOD_OUT, OOD_IN, OOD_VOID])
    assert ood_metrics(scores, labels)["AUROC"] == 1.0
    with pytest.raises(ValueError, match="unknown fpr_rule 'closest'"):
        ood_metrics(scores, labels, fpr_rule="closest")


def test_confusion_matrix_hand_case():
    cm = ConfusionMatrix(num_classes=3)
    cm.update(torch.tensor([0, 1, 0, 1]), torch.tensor([0, 1, 1, IGNORE]))
    out = cm.compute()
    assert cm.mat.tolist() == [[1, 0, 0], [1, 1, 0], [0, 0, 0]]
    assert out["IoU"][:2] == [0.5, 0.5] and np.isnan(out["IoU"][2])
    assert out["mIoU"] == 0.5
    assert out["pixel_accuracy"] == pytest.approx(2 / 3, abs=1e-15)
    assert out["mAcc"] == 0.75


def test_confusion_matrix_streaming_matches_dense():
    rng = np.random.default_rng(3)
    target = rng.integers(0, 19, size=(4, 40, 50))
    target[rng.random(target.shape) < 0.1] = IGNORE
    pred = rng.integers(0, 19, size=target.shape)
    cm = ConfusionMatrix()
    for p, t in zip(pred, target):
        cm.update(p, torch.from_numpy(t).to(torch.uint8))
    keep = target != IGNORE
    dense = np.zeros((19, 19), dtype=np.int64)
    np.add.at(dense, (target[keep], pred[keep]), 1)
    assert (cm.mat.numpy() == dense).all()
    cm.reset()
    assert cm.mat.sum() == 0


@pytest.mark.parametrize(
    ("pred", "target", "message"),
    [
        (torch.tensor([0, 19]), torch.tensor([0, 1]), r"pred holds values \[19\]"),
        (torch.tensor([0, 1]), torch.tensor([0, 254]), r"target holds values \[254\]; expected 0..18 or 255"),
        (torch.tensor([0, 1]), torch.tensor([0]), "does not match target shape"),
        (torch.tensor([0.0, 1.0]), torch.tensor([0, 1]), "pred must hold integer"),
    ],
)
def test_confusion_matrix_errors(pred, target, message):
    with pytest.raises(ValueError, match=message):
        ConfusionMatrix().update(pred, target)


def test_distributed_reduce_single_process(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        s, lab = REF["main_scores"], REF["main_labels"]
        acc = OODMetricAccumulator()
        for i in range(s.shape[0]):
            acc.update(s[i], lab[i])
        acc.reduce_from_all_processes()
        assert acc.compute() == ood_metrics(s, lab)
        cm = ConfusionMatrix(num_classes=2)
        cm.update(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0]))
        cm.reduce_from_all_processes()
        assert cm.mat.tolist() == [[1, 1], [0, 1]]
    finally:
        dist.destroy_process_group()
