"""The demo's pictures: ROC/PR curves per set, the covariate false-positive bar chart, heat-map panels."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from demo.evaluation import ANOMALY_SET, COVARIATE_COLUMN, COVARIATE_SET, ROWS, SHIFT_SET, Evaluation, Row
from lib.atomic import atomic_open
from lib.labels import OOD_OUT, OOD_VOID
from lib.plots import curve_points, save_curves
from lib.viz import heatmap_overlay, save_png


def save_plots(evaluation: Evaluation, rows_out: Sequence[Mapping], folder: str | Path) -> list[Path]:
    """ROC/PR curves of every method on each set with anomalies, and the covariate FPR bar chart."""
    folder = Path(folder)
    paths = []
    for set_name in (ANOMALY_SET, SHIFT_SET):
        curves = {
            m: curve_points(sink.evaluation) for (m, s), sink in evaluation.ood.items() if s == set_name
        }
        paths.append(save_curves(folder / f"curves_{set_name}.png", curves, title=set_name))
    fig = Figure(figsize=(8.0, 4.2), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    methods = [r["method"] for r in rows_out]
    values = [100.0 * r[COVARIATE_SET][COVARIATE_COLUMN] for r in rows_out]
    bars = ax.bar(methods, values, color="tab:red")
    ax.bar_label(bars, fmt="%.1f", fontsize=8)
    ax.set(ylabel="false positives (% of pixels)", title=f"{COVARIATE_SET}: FPR at 95% TPR on {SHIFT_SET}")
    ax.set_xticks(range(len(methods)), methods, rotation=30, ha="right", fontsize=8)
    path = folder / f"fpr_{COVARIATE_SET}.png"
    with atomic_open(path, "wb") as handle:
        fig.savefig(handle, format="png")
    return [*paths, path]


def _caption(tile: np.ndarray, text: str) -> np.ndarray:
    strip = np.full((14, tile.shape[1], 3), 255, dtype=np.uint8)
    cv2.putText(strip, text, (2, 11), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([strip, tile])


def save_heatmaps(evaluation: Evaluation, folder: str | Path, rows: Sequence[Row] = ROWS) -> list[Path]:
    """One panel per stored image: image | anomaly mask | one overlay per row.

    Each row's colour scale spans the 1st..99.9th percentile of its pixels on ``toy_shift``, the
    same for every set.
    """
    scale = {}
    for row in rows:
        pooled = np.concatenate([s.ravel() for s in evaluation.pictures[SHIFT_SET].scores[row.method]])
        scale[row.method] = tuple(np.percentile(pooled, [1.0, 99.9])) if pooled.size else (0.0, 1.0)
    paths = []
    for set_name, pics in evaluation.pictures.items():
        for i, (rgb, ood) in enumerate(zip(pics.rgb, pics.ood, strict=True)):
            mask = np.zeros_like(rgb)
            mask[ood == OOD_OUT] = (255, 255, 255)
            mask[ood == OOD_VOID] = (96, 96, 96)
            tiles = [_caption(rgb, "image"), _caption(mask, "anomaly")]
            for row in rows:
                lo, hi = scale[row.method]
                overlay = heatmap_overlay(rgb, pics.scores[row.method][i], vmin=lo, vmax=hi)
                tiles.append(_caption(overlay, row.method))
            gap = np.full((tiles[0].shape[0], 4, 3), 255, dtype=np.uint8)
            panel = np.concatenate([t for tile in tiles for t in (tile, gap)][:-1], axis=1)
            paths.append(save_png(Path(folder) / set_name / f"{i:03d}.png", panel))
    return paths
