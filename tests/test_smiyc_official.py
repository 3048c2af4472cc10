"""Parity of lib.smiyc with the official SegmentMeIfYouCan toolkit on a 4-frame fixture.

``fixtures/smiyc_official.npz`` holds the frames (scores stored as ``k`` of ``k/1024``, exact) and
the official collapsed ``PixBinaryClass`` curve; ``fixtures/smiyc_official.json`` every official
number read here, from ``road-anomaly-benchmark`` at the commit named in it. The fixture's best-F1
threshold (0.5) is not any frame's maximum, 243 pixels score exactly 0.5, and a ``>=`` component
pass would change the results, so each official rule is exercised.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lib.smiyc import (
    SIOU_THRESHOLDS,
    SMIYCAccumulator,
    component_counts,
    frame_bins,
    pixel_curve,
    pixel_metrics,
)

FIXTURES = Path(__file__).parent / "fixtures"
TOL = 1e-12


@pytest.fixture(scope="module")
def official() -> dict:
    return json.loads((FIXTURES / "smiyc_official.json").read_text())


@pytest.fixture(scope="module", params=[np.float32, np.float16])
def frames(request) -> dict[str, np.ndarray]:
    """The fixture with float32 scores, or float16 ones as the toolkit reads them from submission
    files (the official code gives the same results for both)."""
    with np.load(FIXTURES / "smiyc_official.npz") as data:
        out = dict(data)
    out["scores"] = (out.pop("scores_x1024").astype(np.float32) / 1024).astype(request.param)
    return out


def test_pixel_metrics_and_curve(frames, official):
    assert official["source"]["commit"].startswith("1c7804e")  # "metrics: fix best-f1 threshold selection"
    expected = official["PixBinaryClass"]
    bins = [frame_bins(s, lab) for s, lab in zip(frames["scores"], frames["labels"])]
    out = pixel_metrics(bins)
    for ours, theirs in [
        ("AP", "area_PRC"),
        ("FPR95", "tpr95_fpr"),
        ("AUROC", "area_ROC"),
        ("best_f1", "best_f1"),
        ("best_f1_threshold", "best_f1_threshold"),
    ]:
        assert abs(out[ours] - expected[theirs]) <= TOL, ours
    assert out["best_f1_threshold"] == 0.5
    curve = pixel_curve(bins)
    assert (curve.n_pos, curve.n_neg) == (expected["num_positive_pixels"], expected["num_negative_pixels"])
    for name, ours in [
        ("thresholds", curve.thresholds),
        ("tpr", curve.tpr),
        ("fpr", curve.fpr),
        ("precision", curve.precision),
    ]:
        theirs = frames[f"curve_{name}"]
        assert ours.shape == theirs.shape, name
        assert np.max(np.abs(ours - theirs)) <= TOL, name


@pytest.mark.parametrize("track", ["AnomalyTrack", "ObstacleTrack"])
def test_component_metrics(frames, official, track):
    expected = official[f"SegEval-{track}"]
    acc = SMIYCAccumulator(track)
    for s, lab in zip(frames["scores"], frames["labels"]):
        acc.update(s, lab)
    out = acc.compute()
    for ours, theirs in [("sIoU", "sIoU_gt"), ("PPV", "prec_pred"), ("F1_mean", "f1_mean")]:
        assert abs(out[ours] - expected[theirs]) <= TOL, ours
    comps = acc.component_frames()
    assert sum(c.siou.size for c in comps) == expected["num_gt_components"]
    assert sum(c.ppv.size for c in comps) == expected["num_pred_components"]
    for ours, theirs in zip(comps, expected["per_frame"]):
        assert np.sort(ours.siou) == pytest.approx(sorted(theirs["sIoU_gt"]), abs=TOL)
        assert np.sort(ours.ppv) == pytest.approx(sorted(theirs["prec_pred"]), abs=TOL)
    counts = component_counts(comps)
    per_threshold = expected["per_threshold"]
    assert [p["sIoU_threshold"] for p in per_threshold] == pytest.approx(SIOU_THRESHOLDS.tolist(), abs=TOL)
    for key in ("tp", "fn", "fp"):
        assert counts[key].tolist() == [p[key] for p in per_threshold], key
    f1 = 2 * counts["tp"] / (2 * counts["tp"] + counts["fn"] + counts["fp"])
    assert np.max(np.abs(f1 - [p["f1"] for p in per_threshold])) <= TOL
