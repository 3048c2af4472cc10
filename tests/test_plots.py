"""ROC/PR curves from the accumulators' public ``curve()`` (areas equal the exact metrics and
scikit-learn, ties included), their thinning, and the PNGs drawn from them."""

from dataclasses import replace

import numpy as np
import pytest
from matplotlib.text import Text
from PIL import Image
from sklearn.metrics import average_precision_score, roc_auc_score

from lib.labels import OOD_IN, OOD_OUT, OOD_VOID
from lib.metrics import Curve, OODMetricAccumulator, exact_curve
from lib.plots import curve_points, curves_figure, save_curves, thin
from lib.protocols import OODEvaluation


def _two_images(seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Scores rounded to 0.1 (many ties across classes), anomalies higher on average, some void."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(2):
        labels = rng.choice([OOD_IN, OOD_OUT, OOD_VOID], size=(40, 50), p=[0.8, 0.15, 0.05]).astype(np.uint8)
        scores = np.round(rng.normal(labels == OOD_OUT, 1.0), 1).astype(np.float32)
        images.append((scores, labels))
    return images


def test_curve_areas_equal_exact_metrics_and_sklearn():
    acc = OODMetricAccumulator()
    images = _two_images()
    for s, lab in images:
        acc.update(s, lab)
    points = curve_points(acc)
    metrics = acc.compute()
    s = np.concatenate([s[lab != OOD_VOID] for s, lab in images])
    y = np.concatenate([lab[lab != OOD_VOID] for _, lab in images]) == OOD_OUT
    assert points.auroc == pytest.approx(metrics["AUROC"], abs=1e-12)
    assert points.ap == pytest.approx(metrics["AP"], abs=1e-12)
    assert points.auroc == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert points.ap == pytest.approx(average_precision_score(y, s), abs=1e-12)
    assert points.positive_rate == pytest.approx(y.mean())
    assert (points.fpr[0], points.tpr[0], points.fpr[-1], points.tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert np.all(np.diff(points.fpr) >= 0) and np.all(np.diff(points.tpr) >= 0)
    assert np.all(np.diff(points.recall) > 0) and points.recall[-1] == 1.0
    assert np.all((points.precision > 0) & (points.precision <= 1))


def test_hand_made_curve_with_a_tie():
    # anomalies 3, 2, 1; inliers 2, 0: the tie at 2 is one diagonal step.
    points = thin(exact_curve(np.array([1.0, 2.0, 3.0]), np.array([0.0, 2.0])), grid=1000)
    np.testing.assert_allclose(points.tpr, [0, 1 / 3, 2 / 3, 1, 1])
    np.testing.assert_allclose(points.fpr, [0, 0, 0.5, 0.5, 1])
    np.testing.assert_allclose(points.recall, [1 / 3, 2 / 3, 1])
    np.testing.assert_allclose(points.precision, [1, 2 / 3, 3 / 4])
    assert points.auroc == pytest.approx(4.5 / 6)  # Mann-Whitney: 4 wins and one tie in 6 pairs
    assert points.ap == pytest.approx((1 + 2 / 3 + 3 / 4) / 3)


def test_thinning_bounds_the_points():
    rng = np.random.default_rng(1)
    pos, neg = np.sort(rng.normal(1, 1, 20_000)), np.sort(rng.normal(0, 1, 200_000))
    fine, coarse = thin(exact_curve(pos, neg)), thin(exact_curve(pos, neg), grid=20)
    assert fine.auroc == coarse.auroc and fine.ap == coarse.ap
    assert coarse.fpr.size <= 2 * 20 + 2 and fine.fpr.size <= 2 * 1000 + 2
    assert (coarse.fpr[-1], coarse.tpr[-1]) == (1.0, 1.0)
    # Thinned points lie on the fine curve.
    assert np.all(np.abs(np.interp(coarse.fpr, fine.fpr, fine.tpr) - coarse.tpr) < 0.05)


def test_evaluation_sources_and_errors():
    ev = OODEvaluation("exact")
    for s, lab in _two_images(2):
        ev.update(s, lab)
    assert curve_points(ev).auroc == pytest.approx(ev.compute()["AUROC"], abs=1e-12)
    with pytest.raises(ValueError, match="no anomaly pixel"):
        curve_points(OODEvaluation("smiyc"))
    with pytest.raises(ValueError, match=r"no anomaly pixel \(label 1\) among 3 scored pixels"):
        exact_curve(np.array([]), np.array([1.0, 2.0, 3.0]))


def test_smiyc_curve_repeats_the_protocol_numbers():
    """Under smiyc the pooled binned curve is drawn; its areas are the table's AUROC and AP."""
    ev = OODEvaluation("smiyc", track="ObstacleTrack")  # small size filters: random blobs survive
    for s, lab in _two_images(4):
        ev.update(s, lab)
    result, points = ev.compute(), curve_points(ev, grid=10_000)
    assert points.auroc == pytest.approx(result["AUROC"], abs=1e-12)
    assert points.ap == pytest.approx(result["AP"], abs=1e-12)
    assert (points.fpr[0], points.tpr[0], points.fpr[-1], points.tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert np.all(np.diff(points.recall) >= 0) and np.all(np.diff(points.fpr) >= 0)
    # On many distinct scores the binned curve is close to the exact one, not equal to it.
    exact = OODEvaluation("exact")
    for s, lab in _two_images(4):
        exact.update(s, lab)
    assert points.auroc == pytest.approx(exact.compute()["AUROC"], abs=0.01)


def test_pngs_are_written(tmp_path):
    acc = OODMetricAccumulator()
    for s, lab in _two_images(3):
        acc.update(s, lab)
    points = curve_points(acc)
    other = Curve(
        fpr=np.array([0.0, 1.0]), tpr=np.array([0.0, 1.0]), recall=np.array([1.0]),
        precision=np.array([0.2]), auroc=0.5, ap=0.2, positive_rate=0.2,
    )  # fmt: skip
    path = save_curves(
        tmp_path / "sub" / "both.png", {"learned": points, "random": other}, title="RoadAnomaly"
    )
    for p in (path,):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(p) as im:
            assert im.size == (1100, round(100 * (4.6 + 0.24 * 4)))  # legends of 2 curves + 2 lines below
            rgb = np.asarray(im.convert("RGB"))
        assert rgb.std() > 10  # something was drawn
    with pytest.raises(ValueError, match="no curves to draw for 'x'"):
        save_curves(tmp_path / "x.png", {}, title="x")


def test_legends_name_the_runs_and_label_the_tpr_line_and_base_rate():
    acc = OODMetricAccumulator()
    for s, lab in _two_images(3):
        acc.update(s, lab)
    points = curve_points(acc)
    fig = curves_figure({"run_a: learned": points, "run_b: msp": points}, title="RoadAnomaly")
    roc, pr = fig.axes
    roc_labels = [t.get_text() for t in roc.get_legend().get_texts()]
    pr_labels = [t.get_text() for t in pr.get_legend().get_texts()]
    assert roc_labels[:2] == [
        f"run_a: learned (AUROC {100 * points.auroc:.2f})",
        f"run_b: msp (AUROC {100 * points.auroc:.2f})",
    ]
    assert "95% TPR (FPR95 is read here)" in roc_labels
    assert pr_labels[:2] == [
        f"run_a: learned (AP {100 * points.ap:.2f})",
        f"run_b: msp (AP {100 * points.ap:.2f})",
    ]
    (base,) = [label for label in pr_labels if "base rate" in label]  # one shared base rate
    assert base.startswith(f"base rate {100 * points.positive_rate:.3g}%")
    tpr_line = next(line for line in roc.get_lines() if line.get_label().startswith("95% TPR"))
    assert set(tpr_line.get_ydata()) == {0.95}
    other = replace(points, positive_rate=0.5)
    fig = curves_figure({"a": points, "b": other}, title="x")
    pr_labels = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    assert [label for label in pr_labels if "base rate" in label] == [
        f"a: base rate {100 * points.positive_rate:.3g}%",
        "b: base rate 50%",
    ]
    for t in fig.findobj(Text):
        if t.get_text():
            assert t.get_fontsize() * fig.dpi / 72 >= 12
