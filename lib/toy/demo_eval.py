"""The demo's test: every compared method on the three ToyShift sets, in one pass per model.

A *row* is a method = (model, anomaly score): the closed-world model under MSP, max-logit and
energy, and the fine-tuned models under their learned OOD-head energy. Each model sees each image
once through the one evaluation loop (:mod:`lib.engine.evaluator`, batches of full-resolution
images): every score of its rows goes to a :class:`~lib.engine.evaluator.MetricSink` (published
protocol) per (row, set), its argmax to a :class:`~lib.engine.evaluator.SemanticSink`, and the
first images to the heat-map panels. Each method's results are written with the one results writer
(:mod:`lib.results`); the demo table reads them back. Columns (fractions in ``[0, 1]``):

- ``toy_anomaly`` / ``toy_shift``: AUROC, AP, FPR95 (published rule), and mIoU on ``toy_shift``;
- ``toy_covariate``: ``FPR_at_shift_TPR95``, the fraction of its (all in-distribution) pixels scored
  at or above the highest threshold that still finds 95% of the ``toy_shift`` anomaly pixels (its
  AUROC/AP/FPR95 are not applicable: it has no anomaly pixel).

Pictures: ROC/PR curves per set with anomalies (:mod:`lib.plots`), a bar chart of the covariate
false-positive rates, and one heat-map panel per stored image (:mod:`lib.panels`): the image, its
anomaly outline, and per row the anomaly map on one colour scale shared by all rows, the binary map
at the 95%-TPR threshold and the prediction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from lib.data.benchmarks import build_benchmark
from lib.engine.evaluator import (
    Inference,
    MetricSink,
    ScoredImage,
    SemanticSink,
    benchmark_result,
    model_images,
    stream,
)
from lib.metrics import RECALL_LEVEL
from lib.panels import DPI, TEXT_PT, MethodMap, panel_figure, save_figure
from lib.plots import curve_points, save_curves
from lib.results import THRESHOLD_COLUMN, best_marks, bold, markdown_table, percent
from lib.scores import get_score
from lib.viz import denormalize

ANOMALY_SET, SHIFT_SET, COVARIATE_SET = "toy_anomaly", "toy_shift", "toy_covariate"
TEST_SETS = (ANOMALY_SET, SHIFT_SET, COVARIATE_SET)
OOD_COLUMNS = ("AUROC", "AP", "FPR95")
COVARIATE_COLUMN = "FPR_at_shift_TPR95"
PROTOCOL = "published"


@dataclass(frozen=True)
class Row:
    """One compared method: ``model`` (a key of the models mapping) scored by ``score`` (lib.scores)."""

    method: str
    model: str
    score: str


ROWS = (
    Row("closed_msp", "closed", "msp"),
    Row("closed_maxlogit", "closed", "maxlogit"),
    Row("closed_energy", "closed", "energy"),
    Row("oe_only", "oe_only", "learned"),
    Row("multishift", "multishift", "learned"),
)


@dataclass
class _Pictures:
    """What the heat maps need from the first images of a set: RGB, anomaly mask, and per row its
    score map and its model's prediction."""

    scores: dict[str, list[np.ndarray]]
    preds: dict[str, list[np.ndarray]]
    rgb: list[np.ndarray] = field(default_factory=list)
    ood: list[np.ndarray] = field(default_factory=list)


class _PictureSink:
    """Keeps the first ``count`` images of a set for the panels: the score maps of ``methods`` and,
    with ``with_image``, the de-normalised image and its anomaly mask."""

    def __init__(
        self,
        pictures: _Pictures,
        methods: Sequence[str],
        *,
        count: int,
        with_image: bool,
        mean: Sequence[float],
        std: Sequence[float],
    ) -> None:
        self.pictures, self.methods, self.count, self.with_image = pictures, list(methods), count, with_image
        self.mean, self.std = mean, std

    def add(self, item: ScoredImage) -> None:
        if item.index >= self.count:
            return
        for method in self.methods:
            self.pictures.scores[method].append(item.scores[method].numpy())
            self.pictures.preds[method].append(item.pred.to(torch.uint8).numpy())
        if self.with_image:
            self.pictures.rgb.append(denormalize(item.image, self.mean, self.std))
            self.pictures.ood.append(item.ood_label.numpy())

    def finish(self) -> None:
        return None


@dataclass
class Evaluation:
    """Metric sinks per ``(method, set)``, semantic sinks per ``(model, set)``, pictures per set."""

    ood: dict[tuple[str, str], MetricSink]
    semantic: dict[tuple[str, str], SemanticSink]
    pictures: dict[str, _Pictures]


@torch.no_grad()
def evaluate_rows(
    models: Mapping[str, nn.Module],
    root: str | Path,
    *,
    rows: Sequence[Row] = ROWS,
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int = 8,
    num_pictures: int = 3,
    progress: bool = True,
) -> Evaluation:
    """Run every model of ``models`` over the three sets under ``root`` (normalised with the models'
    ``mean``/``std``) and fill the sinks."""
    missing = sorted({r.model for r in rows} - set(models))
    if missing:
        raise KeyError(f"rows need models {missing}; got {sorted(models)}")
    ood = {(r.method, s): MetricSink(r.method, PROTOCOL) for r in rows for s in TEST_SETS}
    semantic = {(name, s): SemanticSink() for name in models for s in TEST_SETS}
    pictures = {
        s: _Pictures(scores={r.method: [] for r in rows}, preds={r.method: [] for r in rows})
        for s in TEST_SETS
    }
    inference = Inference(device=torch.device("cpu"), batch_size=batch_size)
    for set_name in TEST_SETS:
        dataset = build_benchmark(set_name, root=root, mean=mean, std=std)
        for model_name, model in models.items():
            model_rows = [r for r in rows if r.model == model_name]
            scores = {r.method: get_score(r.score) for r in model_rows}
            sinks = [
                *(ood[(r.method, set_name)] for r in model_rows),
                semantic[(model_name, set_name)],
                _PictureSink(
                    pictures[set_name],
                    list(scores),
                    count=num_pictures,
                    with_image=model_name == rows[0].model,
                    mean=mean,
                    std=std,
                ),
            ]
            images = model_images(model, dataset, scores, inference, indices=range(len(dataset)))
            desc = f"evaluate {model_name} on {set_name}"
            stream(images, sinks, desc=desc, total=len(dataset), progress=progress)
    return Evaluation(ood=ood, semantic=semantic, pictures=pictures)


def method_results(evaluation: Evaluation, rows: Sequence[Row] = ROWS) -> dict[str, dict[str, dict]]:
    """``{method: {set: result}}`` (the entries of each method's ``results.json``); every set also
    reports its false-positive rate at the threshold that finds 95% of the ``toy_shift`` anomalies."""
    out = {}
    for row in rows:
        shift = evaluation.ood[(row.method, SHIFT_SET)].evaluation
        threshold = {"value": shift.threshold_at_tpr(RECALL_LEVEL), "from": SHIFT_SET, "tpr": RECALL_LEVEL}
        out[row.method] = {
            s: benchmark_result(
                evaluation.ood[(row.method, s)],
                evaluation.semantic[(row.model, s)],
                threshold=float(threshold["value"]),
            )
            | {"threshold": threshold}
            for s in TEST_SETS
        }
    return out


def result_rows(results: Mapping[str, Mapping[str, Mapping]], rows: Sequence[Row] = ROWS) -> list[dict]:
    """The demo's rows from each method's results: its metrics on each set, fractions in ``[0, 1]``."""
    out = []
    for row in rows:
        entries = results[row.method]
        out.append(
            {
                "method": row.method,
                ANOMALY_SET: {c: entries[ANOMALY_SET][c] for c in OOD_COLUMNS},
                SHIFT_SET: {c: entries[SHIFT_SET][c] for c in (*OOD_COLUMNS, "mIoU")},
                COVARIATE_SET: {COVARIATE_COLUMN: entries[COVARIATE_SET][THRESHOLD_COLUMN]},
            }
        )
    return out


def demo_table(rows: Sequence[Mapping]) -> str:
    """The results rows as a Markdown table in percent; the best value of each column in bold."""
    columns = [
        *((ANOMALY_SET, c) for c in OOD_COLUMNS),
        *((SHIFT_SET, c) for c in (*OOD_COLUMNS, "mIoU")),
        (COVARIATE_SET, COVARIATE_COLUMN),
    ]
    lower_is_better = {"FPR95", COVARIATE_COLUMN}
    header = ["method", *(f"{s.removeprefix('toy_')} {c}" for s, c in columns)]
    header[-1] = "covariate FPR@shift-TPR95"
    printed = {(s, c): [percent(r[s][c]) for r in rows] for s, c in columns}
    marks = {
        key: best_marks(cells, lower_is_better=key[1] in lower_is_better) for key, cells in printed.items()
    }
    cells = [
        [r["method"], *(bold(printed[k][i]) if marks[k][i] else printed[k][i] for k in columns)]
        for i, r in enumerate(rows)
    ]
    return markdown_table(header, cells)


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
    ax.tick_params(axis="x", rotation=15)
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


CLEARLY_LOWER_RATIO = 0.9
"""'Clearly lower' covariate false-positive rate: at most this fraction of the baseline's..."""
CLEARLY_LOWER_GAP = 0.05
"""... and at least this much lower in absolute terms (5 points), so two near-zero rates do not pass."""


def claim_checks(rows: Sequence[Mapping]) -> dict[str, bool]:
    """The paper's claim in miniature, checked on the results rows (what the slow test and CI assert):
    MultiShift has the best AP and the best FPR95 on ``toy_shift`` (ties allowed), a clearly lower
    ``toy_covariate`` false-positive rate than ``oe_only``, and a ``toy_shift`` mIoU not below the
    closed-world model's."""
    by_method = {r["method"]: r for r in rows}
    ms, oe, closed = by_method["multishift"], by_method["oe_only"], by_method["closed_energy"]
    ms_cov, oe_cov = ms[COVARIATE_SET][COVARIATE_COLUMN], oe[COVARIATE_SET][COVARIATE_COLUMN]
    return {
        "best_shift_AP": ms[SHIFT_SET]["AP"] >= max(r[SHIFT_SET]["AP"] for r in rows),
        "best_shift_FPR95": ms[SHIFT_SET]["FPR95"] <= min(r[SHIFT_SET]["FPR95"] for r in rows),
        "covariate_FPR_clearly_below_oe_only": ms_cov <= CLEARLY_LOWER_RATIO * oe_cov
        and ms_cov <= oe_cov - CLEARLY_LOWER_GAP,
        "shift_mIoU_not_below_closed_world": ms[SHIFT_SET]["mIoU"] >= closed[SHIFT_SET]["mIoU"],
    }
