"""The one evaluation loop: stream a benchmark's images once and feed a list of sinks.

A source yields :class:`ScoredImage` items: :func:`model_images` runs a model over a benchmark at
full resolution (no resize) and applies every requested score function to the same outputs;
``lib.evaluate`` reads score files instead. :func:`stream` hands each item to every sink and
finishes them in order. Sinks here: :class:`MetricSink` (anomaly metrics of one score under a
protocol of :mod:`lib.protocols`), :class:`SemanticSink` (mIoU/mAcc of the prediction),
:class:`ExportSink` (server files of :mod:`lib.submission`), :class:`HeatmapSink` (heat-map
panels of the first images) and :class:`CurveSink` (ROC/PR PNG of some metric sinks); a caller may add its own
(anything with ``add`` and ``finish``).

Under ``torchrun`` every rank streams a disjoint, unpadded share of the images and the sinks
gather their state in ``finish``, so the numbers equal a single-process run. Results are
fractions in ``[0, 1]``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch
import torch.distributed as dist
import torch.nn as nn
from matplotlib.figure import Figure
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from lib.data.collate import collate_items
from lib.engine.precision import autocast
from lib.metrics import RECALL_LEVEL, ConfusionMatrix
from lib.panels import MethodMap, panel_figure, save_figure
from lib.plots import curve_points, save_curves
from lib.postprocess import POSTPROCESS, apply_postprocess
from lib.protocols import OODEvaluation
from lib.results import SEMANTIC_COLUMNS, THRESHOLD_COLUMN
from lib.scores import ScoreFn
from lib.submission import Exporter
from lib.viz import denormalize

logger = logging.getLogger(__name__)


@dataclass
class ScoredImage:
    """One benchmark image as the sinks see it.

    ``scores``: score name -> anomaly map ``[H, W]`` (float32, CPU); ``ood_label`` ``[H, W]`` 0/1/255
    (``None``: an unlabelled image, only exported); ``sem_label`` trainIds where the benchmark has
    them; ``pred`` the predicted trainIds and ``image`` the normalised ``[3, H, W]`` input where a
    model ran (``None`` for score files).
    """

    index: int
    name: str
    scores: dict[str, torch.Tensor]
    ood_label: torch.Tensor | None = None
    sem_label: torch.Tensor | None = None
    pred: torch.Tensor | None = None
    image: torch.Tensor | None = None


class Sink(Protocol):
    """What :func:`stream` feeds: ``add`` per image, ``finish`` once after the last (all ranks)."""

    def add(self, item: ScoredImage) -> None: ...

    def finish(self) -> None: ...


@dataclass(frozen=True)
class Inference:
    """How a model runs over a benchmark: device, optional autocast dtype, channels-last memory,
    loader workers, images per forward pass (of one size) and the anomaly-map post-processing."""

    device: torch.device
    amp_dtype: torch.dtype | None = None
    channels_last: bool = False
    num_workers: int = 0
    batch_size: int = 1
    postprocess: str = "none"

    def __post_init__(self) -> None:
        POSTPROCESS.get(self.postprocess)


def rank_share(n_images: int, limit: int = 0) -> tuple[range, int]:
    """This rank's image indices among the first ``limit`` (all if 0): ``rank, rank + world, ...``,
    and the number of images of all ranks together."""
    total = n_images if limit <= 0 else min(limit, n_images)
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    return range(rank, total, world), total


@torch.no_grad()
def model_images(
    model: nn.Module,
    dataset: Dataset,
    scores: Mapping[str, ScoreFn],
    inference: Inference,
    *,
    indices: Sequence[int],
) -> Iterator[ScoredImage]:
    """Run ``model`` (put in eval mode; the caller restores train mode) over ``dataset[indices]``
    (items: ``image``, ``name``, optional ``ood_label`` / ``sem_label``) and yield each image with
    every score of ``scores`` applied to the same outputs."""
    loader = DataLoader(
        Subset(dataset, indices),
        batch_size=inference.batch_size,
        shuffle=False,
        num_workers=inference.num_workers,
        collate_fn=collate_items,
        pin_memory=inference.device.type == "cuda",
    )
    model.eval()
    position = 0
    for batch in loader:
        image = batch["image"].to(inference.device, non_blocking=True)
        if inference.channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        with autocast(inference.device, inference.amp_dtype):
            anomaly_score, logits = model(image)
        maps = {
            name: apply_postprocess(inference.postprocess, fn(logits, anomaly_score)).float().cpu()
            for name, fn in scores.items()
        }
        preds = logits.argmax(1)
        for i in range(image.shape[0]):
            yield ScoredImage(
                index=indices[position],
                name=batch["name"][i],
                scores={name: m[i] for name, m in maps.items()},
                ood_label=batch["ood_label"][i] if "ood_label" in batch else None,
                sem_label=batch["sem_label"][i] if "sem_label" in batch else None,
                pred=preds[i],
                image=image[i],
            )
            position += 1


def stream(
    images: Iterable[ScoredImage], sinks: Sequence[Sink], *, desc: str, total: int, progress: bool = True
) -> None:
    """Feed every image to every sink, then finish the sinks in order (metrics before curves)."""
    for item in tqdm(images, desc=desc, total=total, disable=not progress, leave=False):
        for sink in sinks:
            sink.add(item)
    for sink in sinks:
        sink.finish()


def _all_reduce_counts(*counts: int) -> list[int]:
    tensor = torch.tensor(counts, dtype=torch.int64)
    if dist.is_initialized():
        dist.all_reduce(tensor)
    return tensor.tolist()


@dataclass
class MetricSink:
    """Anomaly metrics of the map ``score`` under ``protocol`` (:class:`~lib.protocols.OODEvaluation`);
    counts the labelled images it scored and the unlabelled ones it skipped."""

    score: str
    protocol: str = "published"
    per_image: bool = False
    track: str = "AnomalyTrack"
    n_labelled: int = 0
    n_unlabelled: int = 0
    evaluation: OODEvaluation = field(init=False)

    def __post_init__(self) -> None:
        self.evaluation = OODEvaluation(self.protocol, per_image=self.per_image, track=self.track)

    def add(self, item: ScoredImage) -> None:
        if item.ood_label is None:
            self.n_unlabelled += 1
            return
        self.n_labelled += 1
        self.evaluation.update(item.scores[self.score], item.ood_label)

    def finish(self) -> None:
        self.evaluation.reduce_from_all_processes()
        self.n_labelled, self.n_unlabelled = _all_reduce_counts(self.n_labelled, self.n_unlabelled)

    @property
    def has_curve(self) -> bool:
        """Whether both classes were seen, so the pixel metrics and curves exist."""
        return self.n_labelled > 0 and self.evaluation.not_applicable() is None

    def result(self, *, threshold: float | None = None) -> dict[str, object]:
        """``{"protocol", <metrics>, "images"}`` (+ ``"unlabelled"``); with ``threshold`` also the
        false-positive rate of ``score >= threshold`` (``FPR_at_threshold``) and the threshold."""
        if self.n_labelled == 0:
            out: dict[str, object] = {"protocol": self.protocol}
        else:
            out = self.evaluation.compute()
            if threshold is not None:
                out[THRESHOLD_COLUMN] = self.evaluation.fpr_at_threshold(threshold)
        out["images"] = self.n_labelled
        if self.n_unlabelled:
            out["unlabelled"] = self.n_unlabelled
        return out


class SemanticSink:
    """mIoU / mAcc of the predicted trainIds on the images with semantic labels."""

    def __init__(self) -> None:
        self.confusion = ConfusionMatrix()
        self.n_images = 0

    def add(self, item: ScoredImage) -> None:
        if item.sem_label is None or item.pred is None:
            return
        self.n_images += 1
        self.confusion.update(item.pred, item.sem_label.to(item.pred.device, non_blocking=True))

    def finish(self) -> None:
        (self.n_images,) = _all_reduce_counts(self.n_images)
        if self.n_images:
            self.confusion.reduce_from_all_processes()

    def result(self) -> dict[str, float]:
        """``{"mIoU", "mAcc"}``, or nothing without semantic labels."""
        if not self.n_images:
            return {}
        semantic = self.confusion.compute()
        return {k: semantic[k] for k in SEMANTIC_COLUMNS}


class ExportSink:
    """Hands every image's map ``score`` and prediction to a server exporter (named by benchmark
    index or image name, as its ``file_key`` says); the caller closes the exporter."""

    def __init__(self, exporter: Exporter, score: str) -> None:
        self.exporter, self.score = exporter, score

    def add(self, item: ScoredImage) -> None:
        key = item.index if self.exporter.file_key == "index" else item.name
        pred = None if item.pred is None else item.pred.to(torch.uint8)
        self.exporter.add(key, item.scores[self.score], pred)

    def finish(self) -> None:
        return None


class HeatmapSink:
    """Heat-map panels (:mod:`lib.panels`) of the first ``count`` images, one ``<name>_heatmap.png``
    per image in ``folder`` (``None``: only kept in :attr:`figures`), the method named ``label``.

    The images (de-normalised with ``mean``/``std``), maps and predictions are kept in memory while
    streaming and drawn at :meth:`finish` on the main process, when the benchmark's 95%-TPR
    threshold is known: that of the first of ``references`` (``(benchmark, metric sink)``, finished
    before this sink) that has both classes; the benchmark itself first, then e.g. the
    ``eval.threshold_from`` benchmark for a set without anomalies.
    """

    def __init__(
        self,
        folder: str | Path | None,
        *,
        count: int,
        score: str,
        label: str,
        benchmark: str,
        mean: Sequence[float],
        std: Sequence[float],
        references: Sequence[tuple[str, MetricSink]] = (),
    ) -> None:
        self.folder = None if folder is None else Path(folder)
        self.count, self.score, self.label, self.benchmark = count, score, label, benchmark
        self.mean, self.std = tuple(mean), tuple(std)
        self.references = list(references)
        self.kept: list[dict[str, object]] = []
        self.figures: list[tuple[str, Figure]] = []

    def add(self, item: ScoredImage) -> None:
        if item.index >= self.count or item.image is None:
            return
        self.kept.append(
            {
                "index": item.index,
                "name": item.name,
                "rgb": denormalize(item.image, self.mean, self.std),
                "score": item.scores[self.score].numpy(),
                "pred": None if item.pred is None else item.pred.to(torch.uint8).cpu().numpy(),
                "ood": None if item.ood_label is None else item.ood_label.to(torch.uint8).cpu().numpy(),
            }
        )

    def finish(self) -> None:
        kept = self.kept
        if dist.is_initialized():
            gathered: list[list[dict[str, object]] | None] = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, kept)
            kept = [k for part in gathered for k in part]
            if dist.get_rank() != 0:
                return
        source = next(((name, s) for name, s in self.references if s.has_curve), None)
        if source is None:
            note = (
                f"none: {self.benchmark} has no labelled anomaly pixel and no other benchmark sets a "
                "threshold (eval.threshold_from)"
            )
            threshold, fpr, reference = None, None, ""
        else:
            reference, evaluation = source[0], source[1].evaluation
            threshold, fpr = evaluation.threshold_at_tpr(RECALL_LEVEL), evaluation.fpr_at_thresholds
            note = f"score ≥ the threshold that finds {RECALL_LEVEL:.0%} of {reference}'s anomaly pixels"
        for k in sorted(kept, key=lambda k: k["index"]):
            fig = panel_figure(
                k["rgb"],
                [MethodMap(self.label, k["score"], k["pred"], threshold, fpr)],
                title=f"{self.benchmark}: {k['name']}",
                ood_label=k["ood"],
                threshold_note=note,
                reference=reference,
            )
            self.figures.append((str(k["name"]), fig))
            if self.folder is not None:
                save_figure(self.folder / f"{k['name']}_heatmap.png", fig)
        self.kept = []


class CurveSink:
    """Draws the ROC/PR curves of ``{label: metric sink}`` into the PNG ``path`` on the main process,
    after the metric sinks (listed before it) have finished; sinks without both classes are left out."""

    def __init__(self, path: str | Path, curves: Mapping[str, MetricSink], *, title: str) -> None:
        self.path, self.curves, self.title = Path(path), dict(curves), title

    def add(self, item: ScoredImage) -> None:
        return None

    def finish(self) -> None:
        if dist.is_initialized() and dist.get_rank() != 0:
            return
        drawable = {label: curve_points(s.evaluation) for label, s in self.curves.items() if s.has_curve}
        if drawable:
            save_curves(self.path, drawable, title=self.title)


def benchmark_result(
    metrics: MetricSink,
    semantic: SemanticSink | None = None,
    *,
    postprocess: str = "none",
    threshold: float | None = None,
) -> dict[str, object]:
    """One benchmark's result: the metric sink's numbers, the post-processing if any, and mIoU/mAcc."""
    result = metrics.result(threshold=threshold)
    if postprocess != "none":
        result["postprocess"] = postprocess
    if semantic is not None:
        result.update(semantic.result())
    return result


def metric_summary(result: Mapping[str, object]) -> dict[str, float]:
    """The scalar metrics of one benchmark result (for logs, TensorBoard, checkpoints)."""
    return {k: float(v) for k, v in result.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def evaluate_model(
    model: nn.Module,
    dataset: Dataset,
    *,
    score: str,
    score_fn: ScoreFn,
    inference: Inference,
    protocol: str = "published",
    per_image: bool = False,
    track: str = "AnomalyTrack",
    max_images: int = 0,
    desc: str = "eval",
    progress: bool = True,
    heatmaps: HeatmapSink | None = None,
) -> dict[str, object]:
    """Metrics (and mIoU where the benchmark has semantic labels) of one score of ``model`` on
    ``dataset``: the loop with a metric and a semantic sink (validation during training).
    ``max_images`` > 0 evaluates only the first images. ``heatmaps`` (optional) is fed too, with
    this evaluation's metrics as the first reference of its thresholds."""
    indices, total = rank_share(len(dataset), max_images)
    if max_images > 0 and total < len(dataset):
        logger.info("%s: evaluating the first %d of %d images (max_images)", desc, total, len(dataset))
    metric = MetricSink(score, protocol, per_image=per_image, track=track)
    semantic = SemanticSink()
    images = model_images(model, dataset, {score: score_fn}, inference, indices=indices)
    sinks: list[Sink] = [metric, semantic]
    if heatmaps is not None:
        heatmaps.references.insert(0, (heatmaps.benchmark, metric))
        sinks.append(heatmaps)
    stream(images, sinks, desc=desc, total=len(indices), progress=progress)
    if metric.n_labelled == 0:
        logger.warning("%s: no labelled image among %d; no metrics", desc, total)
    return benchmark_result(metric, semantic, postprocess=inference.postprocess)
