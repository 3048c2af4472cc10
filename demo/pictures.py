"""The demo's pictures: ROC/PR curves per set, the covariate false-positive bar chart, and one
heat-map panel per stored image (:mod:`lib.panels`): the image, its anomaly outline, and per row the
anomaly map on one colour scale shared by all rows, the binary map at the 95%-TPR threshold and the
prediction."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from demo.evaluation import ANOMALY_SET, COVARIATE_COLUMN, COVARIATE_SET, ROWS, SHIFT_SET, Evaluation, Row
from lib.metrics import RECALL_LEVEL
from lib.panels import DPI, TEXT_PT, MethodMap, panel_figure, save_figure
from lib.plots import curve_points, save_curves


def save_plots(
    evaluation: Evaluation, rows_out: Sequence[Mapping], folder: str | Path, rows: Sequence[Row] = ROWS
) -> list[Path]:
    """ROC/PR curves of every method (named with its score) on each set with anomalies, and the
    covariate FPR bar chart."""
    folder = Path(folder)
    score_of = {r.method: r.score for r in rows}
    paths = []
    for set_name in (ANOMALY_SET, SHIFT_SET):
        curves = {
            f"{m} ({score_of[m]})": curve_points(sink.evaluation)
            for (m, s), sink in evaluation.ood.items()
            if s == set_name
        }
        paths.append(save_curves(folder / f"curves_{set_name}.png", curves, title=set_name))
    fig = Figure(figsize=(7.2, 4.0), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    methods = [r["method"] for r in rows_out]
    values = [100.0 * r[COVARIATE_SET][COVARIATE_COLUMN] for r in rows_out]
    bars = ax.bar(methods, values, color="tab:red")
    ax.bar_label(bars, fmt="%.1f", fontsize=TEXT_PT)
    ax.set_ylabel("false positives (% of pixels)", fontsize=TEXT_PT)
    ax.set_title(f"{COVARIATE_SET}: FPR at 95% TPR on {SHIFT_SET}", fontsize=TEXT_PT + 1)
    ax.tick_params(labelsize=TEXT_PT)
    ax.tick_params(axis="x", rotation=30)
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right")
    return [*paths, save_figure(folder / f"fpr_{COVARIATE_SET}.png", fig)]


def heatmap_figures(evaluation: Evaluation, rows: Sequence[Row] = ROWS) -> dict[str, list[Figure]]:
    """``{set: [one heat-map panel per stored image]}`` with every row's map, binary map and
    prediction (:mod:`lib.panels`).

    A set with anomaly pixels is its own reference: each row's threshold finds 95% of its anomaly
    pixels and the colours are false-positive rates on its in-distribution pixels. ``toy_covariate``
    has no anomaly, so it is drawn against ``toy_shift``'s threshold and pixels, as its column of
    the table is.
    """
    out = {}
    for set_name, pics in evaluation.pictures.items():
        reference = set_name if evaluation.ood[(rows[0].method, set_name)].has_curve else SHIFT_SET
        note = f"score ≥ the row's threshold that finds {RECALL_LEVEL:.0%} of {reference}'s anomaly pixels"
        out[set_name] = []
        for i, (rgb, ood) in enumerate(zip(pics.rgb, pics.ood, strict=True)):
            maps = []
            for row in rows:
                source = evaluation.ood[(row.method, reference)].evaluation
                maps.append(
                    MethodMap(
                        f"{row.method} ({row.score})",
                        pics.scores[row.method][i],
                        pics.preds[row.method][i],
                        source.threshold_at_tpr(RECALL_LEVEL),
                        source.fpr_at_thresholds,
                    )
                )
            title = f"{set_name}, test image {i}"
            out[set_name].append(
                panel_figure(rgb, maps, title=title, ood_label=ood, threshold_note=note, reference=reference)
            )
    return out


def save_heatmaps(evaluation: Evaluation, folder: str | Path, rows: Sequence[Row] = ROWS) -> list[Path]:
    """The panels of :func:`heatmap_figures` as ``folder/<set>/<image>.png``."""
    return [
        save_figure(Path(folder) / set_name / f"{i:03d}.png", fig)
        for set_name, figures in heatmap_figures(evaluation, rows).items()
        for i, fig in enumerate(figures)
    ]
