"""ROC and precision-recall curves of a benchmark as PNG, from an accumulator's public curve.

Every accumulator answers ``curve()`` (:class:`lib.metrics.Curve`): exact for the ``published`` and
``exact`` protocols (the area under the unthinned ROC staircase is the exact AUROC, the step sum
under the PR points the exact AP), the official binned curve for ``smiyc`` (its trapezoid AUROC and
step-rule AP), so the legend repeats the table's numbers. :func:`curve_points` thins a curve for
drawing to the last point in each cell of a ``grid x grid`` raster, which moves no point by more
than one cell. :func:`save_curves` draws one or several labelled curves with matplotlib's Agg
canvas (no pyplot, no global backend change), ROC left and PR right.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Protocol

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from lib.atomic import atomic_open
from lib.metrics import RECALL_LEVEL, Curve

DEFAULT_GRID = 1000


class HasCurve(Protocol):
    """Anything with a public ROC/PR curve: the accumulators, :class:`~lib.protocols.OODEvaluation`."""

    def curve(self) -> Curve: ...


def _thin(x: np.ndarray, y: np.ndarray, grid: int) -> np.ndarray:
    """Indices of the first point and of the last point of each run of equal ``(x, y)`` raster
    cells, without repeats of the same point."""
    cell = np.floor(x * grid).astype(np.int64) * (grid + 1) + np.floor(y * grid).astype(np.int64)
    last = np.append(np.flatnonzero(cell[1:] != cell[:-1]), cell.size - 1)
    keep = np.unique(np.append(0, last))
    xs, ys = x[keep], y[keep]
    return keep[np.append(True, (xs[1:] != xs[:-1]) | (ys[1:] != ys[:-1]))]


def thin(curve: Curve, *, grid: int = DEFAULT_GRID) -> Curve:
    """``curve`` with its points thinned to a ``grid x grid`` raster; the areas stay the exact ones."""
    if grid < 1:
        raise ValueError(f"grid must be positive, got {grid}")
    keep_roc = _thin(curve.fpr, curve.tpr, grid)
    keep_pr = _thin(curve.recall, curve.precision, grid)
    return replace(
        curve,
        fpr=curve.fpr[keep_roc],
        tpr=curve.tpr[keep_roc],
        recall=curve.recall[keep_pr],
        precision=curve.precision[keep_pr],
    )


def curve_points(source: HasCurve, *, grid: int = DEFAULT_GRID) -> Curve:
    """The thinned curve of everything ``source`` has seen (after ``reduce_from_all_processes``
    under DDP)."""
    return thin(source.curve(), grid=grid)


def save_curves(path: str | Path, curves: Mapping[str, Curve], *, title: str) -> Path:
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
