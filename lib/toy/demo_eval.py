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
false-positive rates, and heat-map panels (image, anomaly mask, then one overlay per row on a
colour scale fixed per row, so maps of different sets compare).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn as nn
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from lib.atomic import atomic_open
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
from lib.labels import OOD_OUT, OOD_VOID
from lib.metrics import RECALL_LEVEL
from lib.plots import curve_points, save_curves
from lib.results import THRESHOLD_COLUMN, markdown_table, percent
from lib.scores import get_score
from lib.viz import denormalize, heatmap_overlay, save_png

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
    """What the heat maps need from the first images of a set: RGB, anomaly mask, score per row."""

    rgb: list[np.ndarray] = field(default_factory=list)
    ood: list[np.ndarray] = field(default_factory=list)
    scores: dict[str, list[np.ndarray]] = field(default_factory=dict)


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
    pictures = {s: _Pictures(scores={r.method: [] for r in rows}) for s in TEST_SETS}
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
    best = {}
    for s, c in columns:
        values = [r[s][c] for r in rows]
        best[(s, c)] = min(values) if c in lower_is_better else max(values)
    header = ["method", *(f"{s.removeprefix('toy_')} {c}" for s, c in columns)]
    header[-1] = "covariate FPR@shift-TPR95"
    cells = [
        [
            r["method"],
            *(f"**{percent(r[s][c])}**" if r[s][c] == best[(s, c)] else percent(r[s][c]) for s, c in columns),
        ]
        for r in rows
    ]
    return markdown_table(header, cells)


def save_plots(evaluation: Evaluation, rows_out: Sequence[Mapping], folder: str | Path) -> list[Path]:
    """ROC/PR curves of every method on each set with anomalies, and the covariate FPR bar chart."""
    folder = Path(folder)
    paths = []
    for set_name in (ANOMALY_SET, SHIFT_SET):
        curves = {
            m: curve_points(sink.evaluation) for (m, s), sink in evaluation.ood.items() if s == set_name
        }
        paths.append(save_curves(folder / f"curves_{set_name}.png", curves, title=set_name))
    fig = Figure(figsize=(6.4, 3.6), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    methods = [r["method"] for r in rows_out]
    values = [100.0 * r[COVARIATE_SET][COVARIATE_COLUMN] for r in rows_out]
    bars = ax.bar(methods, values, color="tab:red")
    ax.bar_label(bars, fmt="%.1f", fontsize=8)
    ax.set(ylabel="false positives (% of pixels)", title=f"{COVARIATE_SET}: FPR at 95% TPR on {SHIFT_SET}")
    ax.tick_params(axis="x", labelsize=8, rotation=15)
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
