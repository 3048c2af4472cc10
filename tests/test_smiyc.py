"""Tests of lib.smiyc (official SMIYC protocol) and of the protocol selector in lib.metrics,
on hand-made frames whose values are worked out in the comments."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lib.errors import UserError
from lib.labels import OOD_IN, OOD_OUT, OOD_VOID
from lib.metrics import ood_metrics
from lib.protocols import OODEvaluation
from lib.smiyc import (
    SIOU_THRESHOLDS,
    UNIFORM_BINS,
    UNIFORM_METRIC,
    SMIYCAccumulator,
    SMIYCTrack,
    component_metrics,
    frame_bins,
    frame_components,
    pixel_curve,
    pixel_metrics,
    uniform_bin_index,
)
from tests.utils import smiyc_metrics

FIXTURES = Path(__file__).parent / "fixtures"

# One frame: anomalies 0.9, 0.7, 0.5; inliers 0.8, 0.5, 0.2, 0.1; one void pixel.
HAND_SCORES = np.array([[0.9, 0.8, 0.7, 0.6], [0.5, 0.5, 0.2, 0.1]], dtype=np.float32)
HAND_LABELS = np.array([[1, 0, 1, 255], [1, 0, 0, 0]], dtype=np.uint8)


def test_pixel_curve_hand_case():
    # Curve points (tp, fp) from high to low threshold: (1,0) (1,1) (2,1) (3,2) (3,3) (3,4).
    # AP = 1/3 * (1 + 2/3 + 3/5) = 34/45; trapezoid AUROC = 19/24 (= Mann-Whitney, tie 1/2);
    # TPR reaches 0.95 at 0.5 where 2 of 4 inliers are positive; best F1 = 6/8 at 0.5.
    bins = frame_bins(HAND_SCORES, HAND_LABELS)
    assert bins.thresholds.tolist() == pytest.approx([0.9, 0.8, 0.7, 0.5, 0.2, 0.1, 0.09])
    assert bins.tp_rel.tolist() == [1, 0, 1, 1, 0, 0, 0]
    assert bins.fp_rel.tolist() == [0, 1, 0, 1, 1, 1, 0]
    out = pixel_metrics([bins])
    assert out["AP"] == pytest.approx(34 / 45, abs=1e-15)
    assert out["AUROC"] == pytest.approx(19 / 24, abs=1e-15)
    assert out["FPR95"] == 0.5
    assert out["best_f1"] == 0.75
    # The threshold at which the collapsed curve reaches its best F1.
    assert out["best_f1_threshold"] == pytest.approx(0.5)
    # The pooled curve: origin (threshold max + 1), the points above with the first one doubled
    # (entry 0 is always kept), the end (3, 4) again (the last entry is always kept).
    curve = pixel_curve([bins])
    assert curve.tp.tolist() == [0, 1, 1, 1, 2, 3, 3, 3, 3]
    assert curve.fp.tolist() == [0, 0, 0, 1, 1, 2, 3, 4, 4]
    assert curve.thresholds.tolist() == pytest.approx([1.9, 0.9, 0.9, 0.8, 0.7, 0.5, 0.2, 0.1, 0.09])
    assert curve.precision.tolist() == pytest.approx([1, 1, 1, 1 / 2, 2 / 3, 3 / 5, 1 / 2, 3 / 7, 3 / 7])
    acc = SMIYCAccumulator()
    acc.update(HAND_SCORES, HAND_LABELS)
    assert acc.pixel_curve().fp.tolist() == curve.fp.tolist()


def _tied_frames(seed: int, n_frames: int = 4) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Small frames (< 384 pixels per class, so every score is a threshold) with ties inside a
    frame, distinct values across frames, and one 4x4 anomaly blob."""
    rng = np.random.default_rng(seed)
    scores, labels = [], []
    for f in range(n_frames):
        lab = rng.choice([OOD_IN, OOD_OUT, OOD_VOID], size=(9, 13), p=[0.75, 0.2, 0.05]).astype(np.uint8)
        lab[2:6, 3:7] = OOD_OUT
        s = np.round(10 * rng.normal(size=lab.shape) + 10 * (lab == OOD_OUT)) + 200 + f / 8
        scores.append(s)
        labels.append(lab)
    return scores, labels


@pytest.mark.parametrize("seed", [0, 1, 3])
def test_pixel_curve_is_exact_when_every_score_is_a_threshold(seed):
    scores, labels = _tied_frames(seed)
    bins = [frame_bins(s, lab) for s, lab in zip(scores, labels)]
    # np.quantile's interpolation can land one ulp off an order statistic (then that score is
    # merged into the next bin, as in the official code); these seeds are free of that.
    for b, s, lab in zip(bins, scores, labels):
        assert np.isin(s[lab != OOD_VOID], b.thresholds).all()
    out = pixel_metrics(bins)
    exact = ood_metrics(np.stack(scores), np.stack(labels), fpr_rule="first_tpr_geq")
    for key in ("AP", "AUROC", "FPR95"):
        assert abs(out[key] - exact[key]) <= 1e-12, key


def test_frames_without_anomalies_count_their_false_positives():
    scores, labels = _tied_frames(7, n_frames=3)
    labels[1][labels[1] == OOD_OUT] = OOD_IN
    acc = SMIYCAccumulator("ObstacleTrack")
    for s, lab in zip(scores, labels):
        acc.update(s, lab)
    acc.update(np.zeros((2, 2)), np.full((2, 2), OOD_VOID, dtype=np.uint8))
    assert acc.n_skipped == 1 and len(acc.component_frames()) == 3
    exact = ood_metrics(np.stack(scores), np.stack(labels), fpr_rule="first_tpr_geq")
    assert abs(acc.compute()["FPR95"] - exact["FPR95"]) <= 1e-12


def test_tpr95_reached_only_by_flagging_everything():
    # 9 of 10 anomalies at 0.9, the tenth below every inlier: TPR 0.9 until the lowest
    # threshold, where all inliers are positive too.
    scores = np.array([[0.9] * 9 + [0.0, 0.5, 0.6]])
    labels = np.array([[OOD_OUT] * 10 + [OOD_IN, OOD_IN]], dtype=np.uint8)
    assert pixel_metrics([frame_bins(scores, labels)])["FPR95"] == 1.0


def test_no_anomaly_in_the_whole_track_raises():
    with pytest.raises(ValueError, match="no anomaly pixel"):
        pixel_metrics([frame_bins(np.array([[0.1, 0.2]]), np.array([[0, 0]], dtype=np.uint8))])


def _blob_frame() -> tuple[np.ndarray, np.ndarray]:
    """Ground truth and predicted blobs (score 1) on a 40x60 frame; values in the test below."""
    labels = np.full((40, 60), OOD_IN, dtype=np.uint8)
    scores = np.zeros((40, 60))
    labels[0:2] = OOD_VOID
    labels[5:15, 5:15] = OOD_OUT  # A: 100 px
    scores[5:15, 10:20] = 1  # P1: 100 px, 50 on A
    labels[5:15, 30:40] = OOD_OUT  # B: 100 px
    scores[5:15, 25:40] = 1  # P2: 150 px, covers B
    labels[25:35, 5:15] = OOD_OUT  # C: 100 px
    labels[25:35, 17:27] = OOD_OUT  # D: 100 px, 2 columns from C
    scores[25:35, 5:27] = 1  # P3: 220 px over C, D and the 20 px gap
    labels[20:23, 45:48] = OOD_OUT  # E: 9 px < 10 -> void
    scores[18:24, 44:54] = 1  # P4: 60 px, 51 of them outside E
    scores[30:35, 50:55] = 1  # 25 px < 50 -> dropped
    scores[0:2, 50:60] = 1  # on void -> removed
    return scores, labels


# sIoU: A 50/(100+50), B 100/(100+50), C and D 100/(100+20) (the other component is not
# counted in the union); PPV: P1 1/2, P2 2/3, P3 200/220, P4 0.
BLOB_SIOU = [1 / 3, 2 / 3, 5 / 6, 5 / 6]
BLOB_PPV = [1 / 2, 2 / 3, 10 / 11, 0.0]
# F1 per tau: 0.25-0.30: tp 4, fp 1 -> 8/9; 0.35-0.50: tp 3, fn 1, fp 1 -> 3/4;
# 0.55-0.65: tp 3, fn 1, fp 2 -> 2/3; 0.70-0.75: tp 2, fn 2, fp 3 -> 4/9. Mean 23/33.
BLOB_F1 = [8 / 9] * 2 + [3 / 4] * 4 + [2 / 3] * 3 + [4 / 9] * 2


def test_component_scores_on_blobs():
    scores, labels = _blob_frame()
    comp = frame_components(scores, labels, 0.5, SMIYCTrack(min_pred_size=50, min_gt_size=10))
    assert sorted(comp.siou.tolist()) == pytest.approx(BLOB_SIOU, abs=1e-15)
    assert sorted(comp.ppv.tolist()) == pytest.approx(sorted(BLOB_PPV), abs=1e-15)
    out = component_metrics([comp])
    assert out["sIoU"] == pytest.approx(np.mean(BLOB_SIOU), abs=1e-15)
    assert out["PPV"] == pytest.approx(np.mean(BLOB_PPV), abs=1e-15)
    assert len(SIOU_THRESHOLDS) == len(BLOB_F1) == 11
    assert out["F1_mean"] == pytest.approx(23 / 33, abs=1e-15)


def test_component_pass_is_strict_and_eight_connected():
    scores, labels = _blob_frame()
    none = frame_components(scores, labels, 1.0, SMIYCTrack(min_pred_size=1, min_gt_size=1))
    assert none.ppv.size == 0 and none.siou.tolist() == [0.0] * 5
    assert np.isnan(component_metrics([none])["PPV"])
    diag = np.zeros((10, 10), dtype=np.uint8)
    diag[0:4, 0:4] = OOD_OUT
    diag[4:8, 4:8] = OOD_OUT  # touches the first square at one corner only
    comp = frame_components(
        (diag == OOD_OUT) * np.tri(10, 10, -1).T, diag, 0.5, SMIYCTrack(min_pred_size=1, min_gt_size=1)
    )
    assert comp.siou.size == 1  # one component under 8-connectivity


def test_track_size_filters():
    scores, labels = _blob_frame()
    # AnomalyTrack drops every predicted blob (< 500 px); E (9 px) is void either way.
    comp = frame_components(scores, labels, 0.5, SMIYCTrack(min_pred_size=500, min_gt_size=100))
    assert comp.ppv.size == 0 and comp.siou.tolist() == [0.0] * 4


def test_smiyc_metrics_end_to_end_on_blobs():
    # Binary scores: the best F1 is reached at threshold 1 (pixels >= 1 on the pixel curve), and
    # the component pass predicts score > 1, i.e. nothing: every sIoU is 0 and PPV is undefined,
    # as the official code reports for a binary map.
    scores, labels = _blob_frame()
    out = smiyc_metrics([scores], [torch.from_numpy(labels)], track="ObstacleTrack")
    assert set(out) == {"AP", "FPR95", "AUROC", "best_f1", "best_f1_threshold", "sIoU", "PPV", "F1_mean"}
    assert out["best_f1_threshold"] == 1.0
    assert (out["sIoU"], out["F1_mean"]) == (0.0, 0.0) and np.isnan(out["PPV"])
    roi = labels != OOD_VOID
    tp = np.count_nonzero((scores == 1) & (labels == OOD_OUT))
    fp = np.count_nonzero((scores == 1) & (labels == OOD_IN))
    assert out["best_f1"] == pytest.approx(2 * tp / (tp + fp + np.count_nonzero(labels[roi] == OOD_OUT)))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: smiyc_metrics([np.zeros((2, 2))], [], "AnomalyTrack"), "1 score frames but 0 label"),
        (lambda: SMIYCAccumulator("RoadAnomaly"), "unknown SMIYC track 'RoadAnomaly'"),
        (lambda: SMIYCAccumulator().update(np.zeros((1, 2, 2)), np.zeros((1, 2, 2), np.uint8)), r"\[H, W\]"),
        (lambda: SMIYCAccumulator().update(np.zeros((2, 2)), np.full((2, 2), 3)), r"values \[3\]"),
    ],
)
def test_smiyc_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_protocol_selector():
    scores, labels = _tied_frames(11)
    labels[2][labels[2] == OOD_OUT] = OOD_IN  # an image without anomalies
    results = {}
    for protocol in ("published", "exact", "smiyc"):
        ev = OODEvaluation(protocol, per_image=True, track="ObstacleTrack")
        for s, lab in zip(scores, labels):
            ev.update(s, lab)
        results[protocol] = ev.compute()
        assert results[protocol]["protocol"] == protocol
        assert results[protocol]["per_image"]["n_images"] == 3
        assert results[protocol]["per_image"]["n_skipped"] == 1
    stacked_s, stacked_l = np.stack(scores), np.stack(labels)
    assert results["published"]["FPR95"] == ood_metrics(stacked_s, stacked_l)["FPR95"]
    assert results["exact"]["FPR95"] == ood_metrics(stacked_s, stacked_l, fpr_rule="first_tpr_geq")["FPR95"]
    assert results["smiyc"]["track"] == "ObstacleTrack" and "F1_mean" in results["smiyc"]
    per_image = [ood_metrics(s, lab)["AUROC"] for s, lab in zip(scores, labels) if np.any(lab == OOD_OUT)]
    assert results["published"]["per_image"]["AUROC"] == pytest.approx(np.mean(per_image), abs=1e-15)
    with pytest.raises(UserError, match="unknown eval.protocol 'fishy'"):
        OODEvaluation("fishy")


def test_uniform_bins_follow_numpy_histogram():
    """Float32 / float64 scores: the bin of each value is np.histogram's (the toolkit's call),
    checked on every edge, one step below every edge, and random values."""
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        edges = np.linspace(-0.01, 1.01, UNIFORM_BINS + 1, dtype=dtype)
        values = np.concatenate(
            [edges, np.nextafter(edges, dtype(-2)), rng.uniform(-0.05, 1.05, 20000).astype(dtype)]
        )
        index, ours = uniform_bin_index(values)
        assert np.array_equal(ours, edges)
        counts, theirs = np.histogram(values, bins=UNIFORM_BINS, range=(-0.01, 1.01))
        assert np.array_equal(theirs, edges)
        assert np.array_equal(np.bincount(index[index >= 0], minlength=UNIFORM_BINS), counts)
        assert np.count_nonzero(index < 0) == values.size - counts.sum()


def test_uniform_bins_of_float16_follow_numpy_1_23():
    """Float16 scores (as read from submission files): the bin of every float16 value in range is
    the one numpy 1.23.3 (the toolkit's pinned version) gives, stored as
    ``np.histogram(np.array([v], np.float16), bins=4096, range=[-0.01, 1.01])`` per value."""
    with np.load(FIXTURES / "numpy123_float16_uniform_bins.npz") as data:
        values, expected = data["values"], data["index"]
    assert values.dtype == np.float16 and values.size == 23851
    index, edges = uniform_bin_index(values)
    assert edges.dtype == np.float16
    assert np.array_equal(index, expected)
    outside = np.array([-0.0103, 1.011, 2.0, -1.0], np.float16)
    assert uniform_bin_index(outside)[0].tolist() == [-1] * 4


def test_uniform_metric_is_exact_when_each_score_has_its_own_bin():
    # Scores at bin centres, a few distinct values per frame, so every bin holds one value and the
    # curve has a point at each score: the metrics are the exact ones. Two anomalies score 1.5,
    # outside the bins: never positive, so the curve ends at the added all-positive point.
    rng = np.random.default_rng(4)
    width = 1.02 / UNIFORM_BINS
    scores, labels = [], []
    for _ in range(3):
        lab = rng.choice([OOD_IN, OOD_OUT, OOD_VOID], size=(12, 16), p=[0.7, 0.25, 0.05]).astype(np.uint8)
        bins = rng.integers(0, 60, lab.shape) * 64 + 32 * (lab == OOD_OUT) + 7
        scores.append(-0.01 + (bins + 0.5) * width)
        labels.append(lab)
    labels[0][0, :2], scores[0][0, :2] = OOD_OUT, 1.5
    out = pixel_metrics([frame_bins(s, lab, UNIFORM_METRIC) for s, lab in zip(scores, labels)])
    stacked = np.stack(scores)
    exact = ood_metrics(np.where(stacked > 1.01, -1.0, stacked), np.stack(labels), fpr_rule="first_tpr_geq")
    for key in ("AP", "AUROC", "FPR95"):
        assert abs(out[key] - exact[key]) <= 1e-12, key


def test_accumulator_with_the_uniform_pixel_metric():
    scores, labels = _tied_frames(5)
    unit = [(s - 180) / 60 for s in scores]  # into [0, 1]
    uniform = smiyc_metrics(unit, labels, "ObstacleTrack", pixel_metric=UNIFORM_METRIC)
    percentile = smiyc_metrics(unit, labels, "ObstacleTrack")
    expected = pixel_metrics([frame_bins(s, lab, UNIFORM_METRIC) for s, lab in zip(unit, labels)])
    assert {k: uniform[k] for k in expected} == expected
    # The components use PixBinaryClass's threshold, as the toolkit reads it from that curve.
    assert uniform["component_threshold"] == percentile["best_f1_threshold"]
    assert {k: uniform[k] for k in ("sIoU", "PPV", "F1_mean")} == {
        k: percentile[k] for k in ("sIoU", "PPV", "F1_mean")
    }
    with pytest.raises(ValueError, match="unknown SMIYC pixel metric 'uniThr'"):
        SMIYCAccumulator(pixel_metric="uniThr")
    mixed = [frame_bins(unit[0], labels[0], UNIFORM_METRIC), frame_bins(unit[1], labels[1])]
    with pytest.raises(ValueError, match="different SMIYC pixel metrics"):
        pixel_metrics(mixed)
    dtypes = [
        frame_bins(unit[0], labels[0], UNIFORM_METRIC),
        frame_bins(unit[1].astype(np.float16), labels[1], UNIFORM_METRIC),
    ]
    with pytest.raises(ValueError, match="different bin edges"):
        pixel_metrics(dtypes)
