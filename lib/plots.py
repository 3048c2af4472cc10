"""ROC and precision-recall curves of a benchmark as PNG, from the exact metric accumulator.

:func:`curve_points` reads the accumulator's sorted anomaly and inlier scores (the arrays it
already keeps; nothing is copied per pixel) and takes every count at the distinct anomaly
scores with ``searchsorted``, as :mod:`lib.metrics` does, so the area under the unthinned ROC
staircase is the exact AUROC and the step sum under the PR points is the exact AP. For drawing,
points are thinned to the last point in each cell of a ``grid x grid`` raster, which moves no
point by more than one cell. Under the ``smiyc`` protocol the curve is the official binned one
(:meth:`lib.smiyc.SMIYCAccumulator.pixel_curve`), with that protocol's trapezoid AUROC and
step-rule AP, so the legend repeats the table's numbers. :func:`save_curves` draws one or
several labelled curves with matplotlib's Agg canvas (no pyplot, no global backend change), ROC
left and PR right.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from lib.atomic import atomic_open
from lib.labels import OOD_IN, OOD_OUT
from lib.metrics import RECALL_LEVEL, OODEvaluation, OODMetricAccumulator
from lib.smiyc import PixelCurve, SMIYCAccumulator

DEFAULT_GRID = 1000


@dataclass(frozen=True)
class CurvePoints:
    """Thinned curves: ROC ``fpr``/``tpr`` from (0, 0) to (1, 1), PR ``recall``/``precision`` by
    increasing recall; ``auroc``/``ap`` exact (before thinning); ``positive_rate`` = share of anomaly
    pixels (the PR curve of a random score)."""

    fpr: np.ndarray
    tpr: np.ndarray
    recall: np.ndarray
    precision: np.ndarray
    auroc: float
    ap: float
    positive_rate: float


def _thin(x: np.ndarray, y: np.ndarray, grid: int) -> np.ndarray:
    """Indices of the first point and of the last point of each run of equal ``(x, y)`` raster
    cells, without repeats of the same point."""
    cell = np.floor(x * grid).astype(np.int64) * (grid + 1) + np.floor(y * grid).astype(np.int64)
    last = np.append(np.flatnonzero(cell[1:] != cell[:-1]), cell.size - 1)
    keep = np.unique(np.append(0, last))
    xs, ys = x[keep], y[keep]
    return keep[np.append(True, (xs[1:] != xs[:-1]) | (ys[1:] != ys[:-1]))]


def curve_points_from_sorted(pos: np.ndarray, neg: np.ndarray, *, grid: int = DEFAULT_GRID) -> CurvePoints:
    """Curves from ascending anomaly scores ``pos`` and ascending inlier scores ``neg`` (1-D)."""
    if pos.size == 0 or neg.size == 0:
        raise ValueError(
            f"curves need anomaly (label {OOD_OUT}) and in-distribution (label {OOD_IN}) pixels; "
            f"got {pos.size} and {neg.size}"
        )
    if grid < 1:
        raise ValueError(f"grid must be positive, got {grid}")
    desc = pos[::-1]
    last = np.append(np.flatnonzero(desc[1:] != desc[:-1]), desc.size - 1)
    values = desc[last]
    n_pos, n_neg = pos.size, neg.size
    tp = last.astype(np.int64) + 1
    fp_ge = n_neg - np.searchsorted(neg, values, side="left").astype(np.int64)
    fp_gt = n_neg - np.searchsorted(neg, values, side="right").astype(np.int64)
    # Exact ROC staircase: at each distinct anomaly score, first the inliers strictly above it
    # (TPR unchanged), then the tied pixels of both classes together (a diagonal step).
    tp_prev = np.concatenate([[0], tp[:-1]])
    roc_fp = np.concatenate([[0], np.stack([fp_gt, fp_ge], 1).ravel(), [n_neg]]) / n_neg
    roc_tp = np.concatenate([[0], np.stack([tp_prev, tp], 1).ravel(), [n_pos]]) / n_pos
    auroc = float(np.sum(np.diff(roc_fp) * (roc_tp[1:] + roc_tp[:-1]) / 2.0))
    recall = tp / n_pos
    precision = tp / (tp + fp_ge)
    ap = float(np.sum(np.diff(recall, prepend=0.0) * precision))
    keep_roc = _thin(roc_fp, roc_tp, grid)
    keep_pr = _thin(recall, precision, grid)
    return CurvePoints(
        fpr=roc_fp[keep_roc],
        tpr=roc_tp[keep_roc],
        recall=recall[keep_pr],
        precision=precision[keep_pr],
        auroc=auroc,
        ap=ap,
        positive_rate=n_pos / (n_pos + n_neg),
    )


def curve_points_from_pixel_curve(curve: PixelCurve, *, grid: int = DEFAULT_GRID) -> CurvePoints:
    """Curves of the SMIYC protocol's pooled binned curve; AUROC by the trapezoid rule and AP by
    the step rule over the bins, as :func:`lib.smiyc.pixel_metrics` reports them."""
    if grid < 1:
        raise ValueError(f"grid must be positive, got {grid}")
    tpr, fpr, precision = curve.tpr, curve.fpr, curve.precision
    keep_roc = _thin(fpr, tpr, grid)
    keep_pr = _thin(tpr, precision, grid)
    return CurvePoints(
        fpr=fpr[keep_roc],
        tpr=tpr[keep_roc],
        recall=tpr[keep_pr],
        precision=precision[keep_pr],
        auroc=float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0)),
        ap=float(np.sum(np.diff(tpr) * precision[1:])),
        positive_rate=curve.n_pos / (curve.n_pos + curve.n_neg),
    )


def curve_points(
    source: OODMetricAccumulator | SMIYCAccumulator | OODEvaluation, *, grid: int = DEFAULT_GRID
) -> CurvePoints:
    """Curves of everything an accumulator or an :class:`~lib.metrics.OODEvaluation` has seen:
    exact for ``published``/``exact``, the official binned curve for ``smiyc``.

    Call after ``reduce_from_all_processes`` under DDP.
    """
    if isinstance(source, OODEvaluation):
        source = source._pooled
    if isinstance(source, SMIYCAccumulator):
        return curve_points_from_pixel_curve(source.pixel_curve(), grid=grid)
    pos, neg = source._sorted_scores()
    return curve_points_from_sorted(pos, neg, grid=grid)


def save_curves(path: str | Path, curves: Mapping[str, CurvePoints], *, title: str) -> Path:
    """Draw ``{label: points}`` as ROC (left) and PR (right) curves into the PNG ``path``."""
    if not curves:
        raise ValueError(f"no curves to draw for {title!r}")
    fig = Figure(figsize=(10.0, 4.6), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    roc, pr = fig.subplots(1, 2)
    for label, c in curves.items():
        roc.plot(c.fpr, c.tpr, lw=1.5, label=f"{label} (AUROC {100 * c.auroc:.2f})")
        (line,) = pr.plot(
            c.recall, c.precision, lw=1.5, drawstyle="steps-pre", label=f"{label} (AP {100 * c.ap:.2f})"
        )
        pr.axhline(c.positive_rate, color=line.get_color(), lw=0.8, ls=":")
    roc.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    roc.axhline(RECALL_LEVEL, color="grey", lw=0.8, ls=":")
    roc.set(xlabel="false positive rate", ylabel="true positive rate", title=f"{title}: ROC")
    pr.set(xlabel="recall", ylabel="precision", title=f"{title}: precision-recall")
    for ax in (roc, pr):
        ax.set_xlim(0.0, 1.0)
        ax.set_ylim(0.0, 1.01)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right" if ax is roc else "upper right", fontsize=8)
    with atomic_open(path, "wb") as handle:
        fig.savefig(handle, format="png")
    return Path(path)


def save_benchmark_curves(
    run_dir: str | Path, curves: Mapping[str, CurvePoints], *, label: str
) -> list[Path]:
    """One ``curves_<benchmark>.png`` per benchmark of ``{benchmark: points}`` in ``run_dir``."""
    return [
        save_curves(Path(run_dir) / f"curves_{name}.png", {label: points}, title=name)
        for name, points in curves.items()
    ]
