"""Heat-map panels: one figure per image that a reader understands without the code.

A panel is a grid. The first row shows the image, the ground truth (anomaly outline, void shaded)
where the benchmark has labels, and the legend of classes and outlines. Then one row per method:

- the anomaly map with a colour bar whose scale is stated and shared by every method of the figure;
- the binary map ``score >= threshold``, at the threshold that finds 95% of the anomaly pixels of
  the benchmark (a given threshold, or none, for unlabelled images);
- the method's prediction in the Cityscapes colours.

The colour scale. Raw scores of different score functions (MSP, max-logit, energies) have unrelated
units, so a labelled benchmark colours each pixel by the *false-positive rate at its score*: the
share of that benchmark's in-distribution pixels scoring at least as high (log scale from 100% to
:data:`FPR_FLOOR`). A colour then means the same for every method, and the 95%-TPR threshold is a
mark on the colour bar at that method's FPR95. Without labels (``lib.predict``) the raw scores are
shown between the 1st and 99th percentile of all maps of the figure.

Figures use matplotlib's Agg canvas (no pyplot); every text is at least :data:`MIN_TEXT_PX` high.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FixedLocator, FuncFormatter

from lib.atomic import atomic_open
from lib.labels import CLASS_NAMES, NUM_CLASSES, OOD_OUT, OOD_VOID, PALETTE, colorize

FPR_FLOOR = 1e-3
"""The brightest colour of the FPR scale: pixels scoring above all but 0.1% of the inliers."""
DPI = 100
TEXT_PT = 10.0
"""Smallest font size used (points); at :data:`DPI` it is ``10 * 100 / 72`` = 13.9 px."""
MIN_TEXT_PX = 12.0
CMAP = "inferno"
OUTLINE = "cyan"
TILE_INCHES = 4.2
"""Width of one image tile."""


@dataclass(frozen=True)
class MethodMap:
    """One method's maps of the image: ``score`` ``[H, W]`` (higher = more anomalous), ``pred``
    trainIds ``[H, W]`` (``None``: not shown), the binary-map ``threshold`` (``None``: no binary
    map) and ``fpr`` (score values -> false-positive rate on the labelled reference benchmark;
    ``None``: raw scale)."""

    method: str
    score: np.ndarray
    pred: np.ndarray | None = None
    threshold: float | None = None
    fpr: Callable[[np.ndarray], np.ndarray] | None = None


def _percent(fraction: float) -> str:
    return f"{100.0 * fraction:.3g}%"


def _colour_scale(maps: Sequence[MethodMap]) -> tuple[list[np.ndarray], Normalize, bool]:
    """``(values to colour per method, the shared norm, whether it is the FPR scale)``."""
    kinds = {m.fpr is not None for m in maps}
    if len(kinds) != 1:
        raise ValueError("either every method of a panel has an FPR scale or none has")
    if kinds == {True}:
        values = [np.clip(np.asarray(m.fpr(m.score), dtype=np.float64), FPR_FLOOR, 1.0) for m in maps]
        return values, LogNorm(vmin=FPR_FLOOR, vmax=1.0), True
    values = [np.asarray(m.score, dtype=np.float64) for m in maps]
    lo, hi = np.percentile(np.concatenate([v.ravel() for v in values]), [1.0, 99.0])
    return values, Normalize(vmin=float(lo), vmax=float(hi) if hi > lo else float(lo) + 1.0), False


def _outline(ax, ood_label: np.ndarray | None) -> None:
    if ood_label is not None and np.any(ood_label == OOD_OUT):
        ax.contour((ood_label == OOD_OUT).astype(np.float32), levels=[0.5], colors=OUTLINE, linewidths=1.2)


def _blank(ax, text: str) -> None:
    """An empty tile that says why it is empty (wrapped to the tile, left out of the layout)."""
    lines = [textwrap.fill(line, 44) for line in text.splitlines()]
    note = ax.text(
        0.5, 0.5, "\n".join(lines), ha="center", va="center", fontsize=TEXT_PT, transform=ax.transAxes
    )
    note.set_in_layout(False)
    ax.set_axis_off()


def _ground_truth(ax, image: np.ndarray, ood_label: np.ndarray | None) -> None:
    if ood_label is None:
        _blank(ax, "no ground truth:\nunlabelled image")
        return
    shown = image.astype(np.float32) * 0.6
    shown[ood_label == OOD_VOID] = (128.0, 128.0, 128.0)
    ax.imshow(shown.round().astype(np.uint8))
    _outline(ax, ood_label)
    n_out = int(np.count_nonzero(ood_label == OOD_OUT))
    ax.set_title(f"ground truth: {n_out} anomaly pixels", fontsize=TEXT_PT + 1)


def _legend(ax, maps: Sequence[MethodMap], ood_label: np.ndarray | None) -> None:
    present = sorted(
        {int(c) for m in maps if m.pred is not None for c in np.unique(m.pred) if c < NUM_CLASSES}
    )
    handles = [Patch(facecolor=PALETTE[c] / 255.0, edgecolor="black", label=CLASS_NAMES[c]) for c in present]
    if ood_label is not None:
        handles.append(Line2D([], [], color=OUTLINE, lw=2, label="anomaly (ground truth)"))
        handles.append(Patch(facecolor="#808080", label="void (not scored)"))
    ax.set_axis_off()
    if handles:
        ax.legend(
            handles=handles,
            loc="center",
            ncol=2,
            fontsize=TEXT_PT,
            title="classes",
            title_fontsize=TEXT_PT + 1,
        )


def panel_figure(
    image: np.ndarray,
    maps: Sequence[MethodMap],
    *,
    title: str,
    ood_label: np.ndarray | None = None,
    threshold_note: str,
    reference: str = "",
) -> Figure:
    """The panel of one ``[H, W, 3]`` uint8 image (module doc).

    ``ood_label``: 0/1/255 anomaly labels or ``None``; ``threshold_note`` says where the thresholds
    come from (e.g. "95% TPR on RoadAnomaly") or why there are none; ``reference``: the labelled
    benchmark of the FPR scale (named on the colour bar).
    """
    if not maps:
        raise ValueError(f"no anomaly map to draw for {title!r}")
    height, width = image.shape[:2]
    for m in maps:
        if m.score.shape != (height, width):
            raise ValueError(f"{m.method}: score {m.score.shape} does not match the image {image.shape}")
    values, norm, fpr_scale = _colour_scale(maps)
    row_inches = TILE_INCHES * height / width + 0.55
    fig = Figure(
        figsize=(3 * TILE_INCHES + 1.4, row_inches * (1 + len(maps)) + 0.9), dpi=DPI, layout="constrained"
    )
    FigureCanvasAgg(fig)
    axes = fig.subplots(1 + len(maps), 3, squeeze=False)
    axes[0, 0].imshow(image)
    axes[0, 0].set_title("image", fontsize=TEXT_PT + 1)
    _ground_truth(axes[0, 1], image, ood_label)
    _legend(axes[0, 2], maps, ood_label)
    shown = None
    for row, (m, v) in enumerate(zip(maps, values), start=1):
        ax_map, ax_bin, ax_pred = axes[row]
        shown = ax_map.imshow(v, cmap=CMAP + "_r" if fpr_scale else CMAP, norm=norm)
        shown.set_gid(f"anomaly:{m.method}")
        _outline(ax_map, ood_label)
        ax_map.set_title(_tile_title(m.method, "anomaly map"), fontsize=TEXT_PT + 1)
        if m.threshold is None:
            _blank(ax_bin, f"no binary map:\n{threshold_note}")
        else:
            flagged = m.score >= m.threshold
            ax_bin.imshow(flagged, cmap="gray", vmin=0, vmax=1).set_gid(f"binary:{m.method}")
            _outline(ax_bin, ood_label)
            rate = f" (FPR {_percent(float(m.fpr(np.asarray(m.threshold))))})" if fpr_scale else ""
            ax_bin.set_title(
                f"score ≥ {m.threshold:.4g}{rate}: {_percent(flagged.mean())} flagged", fontsize=TEXT_PT + 1
            )
        if m.pred is None:
            _blank(ax_pred, "no prediction")
        else:
            ax_pred.imshow(colorize(m.pred), interpolation="nearest")
            ax_pred.set_title(_tile_title(m.method, "prediction"), fontsize=TEXT_PT + 1)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    bar = fig.colorbar(shown, ax=list(axes[1:, 0]), location="left", shrink=0.9)
    bar.ax.tick_params(labelsize=TEXT_PT)
    shared = ", the same scale for every method" if len(maps) > 1 else ""
    if fpr_scale:
        ticks = [t for t in (1.0, 0.3, 0.1, 0.03, 0.01, 0.003, 0.001) if t >= FPR_FLOOR]
        bar.ax.yaxis.set_major_locator(FixedLocator(ticks))
        bar.ax.yaxis.set_major_formatter(FuncFormatter(lambda t, _: _percent(t)))
        bar.ax.yaxis.set_minor_locator(FixedLocator([]))
        bar.ax.invert_yaxis()
        bar.set_label(f"FPR on {reference} at the pixel's score (log)", fontsize=TEXT_PT)
        scale = (
            f"Colour: the share of {reference}'s in-distribution pixels scoring at least as high as the "
            f"pixel (its false-positive rate as a threshold){shared}; bright = more anomalous."
        )
    else:
        bar.set_label("raw anomaly score (higher = more anomalous)", fontsize=TEXT_PT)
        scale = (
            f"Colour: raw anomaly score from {norm.vmin:.4g} to {norm.vmax:.4g} (1st..99th percentile of "
            f"the maps of this figure){shared}."
        )
    fig.suptitle(title, fontsize=TEXT_PT + 3)
    fig.supxlabel(f"{scale}\nBinary maps: {threshold_note}.", fontsize=TEXT_PT, wrap=True)
    return fig


TITLE_CHARS = 40
"""Longest one-line tile title; a longer one puts the method on its own line (no overlap)."""


def _tile_title(method: str, what: str) -> str:
    one_line = f"{method}: {what}"
    return one_line if len(one_line) <= TITLE_CHARS else f"{method}\n{what}"


def figure_rgb(fig: Figure) -> np.ndarray:
    """The rendered figure as ``[H, W, 3]`` uint8 RGB (e.g. for TensorBoard)."""
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def save_figure(path: str | Path, fig: Figure) -> Path:
    """Write ``fig`` as PNG atomically, creating the folder."""
    with atomic_open(path, "wb") as handle:
        fig.savefig(handle, format="png")
    return Path(path)
