"""The demo's test: every compared method on the three ToyShift sets, in one pass per model.

A *row* is a method = (model, anomaly score): the closed-world light DeepLab under MSP, max-logit
and energy, the closed-world tiny Mask2Anomaly under its mask-confidence and RbA scores
(:mod:`lib.scores_m2f`), and the fine-tuned models under their learned OOD-head score. Each model
sees each image once through the one evaluation loop (:mod:`lib.engine.evaluator`, batches of full-resolution
images): every score of its rows goes to a :class:`~lib.engine.evaluator.MetricSink` (published
protocol) per (row, set), its argmax to a :class:`~lib.engine.evaluator.SemanticSink`, and the
first images to the heat-map panels. Each method's results are written with the one results writer
(:mod:`lib.results`); the demo table (:mod:`demo.claims`) reads them back. Columns (fractions in
``[0, 1]``):

- ``toy_anomaly`` / ``toy_shift``: AUROC, AP, FPR95 (published rule), and mIoU on ``toy_shift``;
- ``toy_covariate``: ``FPR_at_shift_TPR95``, the fraction of its (all in-distribution) pixels scored
  at or above the highest threshold that still finds 95% of the ``toy_shift`` anomaly pixels (its
  AUROC/AP/FPR95 are not applicable: it has no anomaly pixel).

The pictures (:mod:`demo.pictures`) are drawn from what :func:`evaluate_rows` keeps.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

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
    Row("m2f_closed_mask_confidence", "m2f_closed", "mask_confidence"),
    Row("m2f_closed_rba", "m2f_closed", "rba"),
    Row("m2f_multishift", "m2f_multishift", "learned"),
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
