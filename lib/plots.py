"""ROC and precision-recall curves of a benchmark as PNG, from an accumulator's public curve.

Every accumulator answers ``curve()`` (:class:`lib.metrics.Curve`): exact for the ``published`` and
``exact`` protocols (the area under the unthinned ROC staircase is the exact AUROC, the step sum
under the PR points the exact AP), the official binned curve for ``smiyc`` (its trapezoid AUROC and
step-rule AP), so the legend repeats the table's numbers. :func:`curve_points` thins a curve for
drawing to the last point in each cell of a ``grid x grid`` raster, which moves no point by more
than one cell. :func:`save_curves` draws one or several labelled curves with matplotlib's Agg
canvas (no pyplot, no global backend change), ROC left and PR right, with the 95% TPR line and
the PR base rate labelled.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Protocol

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from lib.metrics import RECALL_LEVEL, Curve
from lib.panels import DPI, TEXT_PT, save_figure

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


def curves_figure(curves: Mapping[str, Curve], *, title: str) -> Figure:
    """``{label: points}`` as ROC (left) and PR (right) curves; labels name the run and score.

    The ROC panel marks the 95% TPR line where FPR95 is read and the diagonal of a random score; the
    PR panel marks the base rate (the share of anomaly pixels, the precision of a random score):
    one grey line when every curve has the same, else one per curve in its colour.
    """
    if not curves:
        raise ValueError(f"no curves to draw for {title!r}")
    rates = {c.positive_rate for c in curves.values()}
    n = len(curves)
    entries = max(n + 2, 2 * n if len(rates) > 1 else n + 1)  # the taller of the two legends below
    fig = Figure(figsize=(11.0, 4.6 + 0.24 * entries), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    roc, pr = fig.subplots(1, 2)
    for label, c in curves.items():
        roc.plot(c.fpr, c.tpr, lw=1.5, label=f"{label} (AUROC {100 * c.auroc:.2f})")
        (line,) = pr.plot(
            c.recall, c.precision, lw=1.5, drawstyle="steps-pre", label=f"{label} (AP {100 * c.ap:.2f})"
        )
        if len(rates) > 1:
            pr.axhline(
                c.positive_rate,
                color=line.get_color(),
                lw=1.0,
                ls=":",
                label=f"{label}: base rate {_pct(c.positive_rate)}",
            )
    if len(rates) == 1:
        (rate,) = rates
        pr.axhline(
            rate, color="grey", lw=1.0, ls=":", label=f"base rate {_pct(rate)} (anomaly share = random score)"
        )
    roc.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--", label="random score")
    roc.axhline(
        RECALL_LEVEL, color="black", lw=0.8, ls=":", label=f"{RECALL_LEVEL:.0%} TPR (FPR95 is read here)"
    )
    roc.set_xlabel("false positive rate", fontsize=TEXT_PT + 1)
    roc.set_ylabel("true positive rate", fontsize=TEXT_PT + 1)
    roc.set_title(f"{title}: ROC", fontsize=TEXT_PT + 2)
    pr.set_xlabel("recall", fontsize=TEXT_PT + 1)
    pr.set_ylabel("precision", fontsize=TEXT_PT + 1)
    pr.set_title(f"{title}: precision-recall", fontsize=TEXT_PT + 2)
    for ax in (roc, pr):
        ax.set_xlim(0.0, 1.0)
        ax.set_ylim(0.0, 1.01)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=TEXT_PT)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), fontsize=TEXT_PT)  # below: no curve hidden
    return fig


def _pct(fraction: float) -> str:
    return f"{100.0 * fraction:.3g}%"


def save_curves(path: str | Path, curves: Mapping[str, Curve], *, title: str) -> Path:
    """Draw :func:`curves_figure` into the PNG ``path``."""
    return save_figure(path, curves_figure(curves, title=title))


def grouped_bars(
    values: Mapping[str, Mapping[str, Mapping[str, float]]],
    *,
    groups: Sequence[str],
    ylabel: Mapping[str, str],
) -> Figure:
    """One panel per metric of ``values`` (``{metric: {series: {group: value}}}``), stacked: bars of
    every series side by side within each group, each bar labelled with its value; a missing value
    leaves a gap. One legend names the series."""
    if not values or not groups:
        raise ValueError("no values to draw")
    series = list(dict.fromkeys(s for per_metric in values.values() for s in per_metric))
    fig = Figure(
        figsize=(max(7.0, 1.4 + 0.5 * len(groups) * (len(series) + 1)), 3.6 * len(values) + 1.0),
        dpi=DPI,
        layout="constrained",
    )
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(values), 1, squeeze=False)[:, 0]
    width = 0.8 / len(series)
    x = np.arange(len(groups))
    for ax, (metric, per_series) in zip(axes, values.items()):
        for k, name in enumerate(series):
            points = per_series.get(name, {})
            at = [i for i, g in enumerate(groups) if g in points]
            bars = ax.bar(
                x[at] + (k - (len(series) - 1) / 2) * width,
                [points[groups[i]] for i in at],
                width,
                label=name,
                color=f"C{k}",
            )
            ax.bar_label(bars, fmt="%.1f", fontsize=TEXT_PT)
        ax.set_xticks(x, groups)
        ax.set_ylabel(ylabel.get(metric, metric), fontsize=TEXT_PT)
        ax.set_title(metric, fontsize=TEXT_PT + 2)
        ax.tick_params(labelsize=TEXT_PT)
        ax.margins(y=0.15)
        ax.grid(axis="y", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(len(series), 3), fontsize=TEXT_PT)
    return fig
