"""Benchmark evaluation: stream images through a model into exact metric accumulators.

Each image runs at full resolution (batch 1, no resize). Its anomaly map (the score function of
:mod:`lib.scores` applied to the model's outputs) and its 0/1/255 anomaly label go to an
:class:`~lib.metrics.OODMetricAccumulator`; where the benchmark has semantic labels, the argmax
of the logits goes to a :class:`~lib.metrics.ConfusionMatrix`. Under ``torchrun`` every rank
evaluates a disjoint, unpadded share of the images and the accumulators are gathered, so the
numbers equal a single-process run. Results are fractions in ``[0, 1]``; the tables print
percentages.

While it streams, the evaluator can hand every anomaly map (and the predicted trainIds) to a
server-format exporter of :mod:`lib.submission`, including the images without a label (the SMIYC
test frames), which the metrics skip, and can draw the benchmark's ROC/PR curves
(:mod:`lib.plots`) once the metrics are computed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from lib.atomic import write_text_atomic
from lib.config import ConfigError
from lib.data.collate import collate_items
from lib.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from lib.engine.precision import autocast
from lib.metrics import ConfusionMatrix, OODEvaluation
from lib.plots import curve_points, save_curves
from lib.postprocess import POSTPROCESS, apply_postprocess
from lib.scores import ScoreFn
from lib.submission import Exporter
from lib.viz import colorize_segmentation, denormalize, heatmap_overlay, save_png

logger = logging.getLogger(__name__)

PROTOCOL_RULES = {
    "published": "pooled pixels, exact AUROC/AP; FPR95 at the recall closest to 0.95 "
    "(published fpr_and_fdr_at_recall rule)",
    "exact": "pooled pixels, exact AUROC/AP; FPR95 at the first threshold with TPR >= 0.95",
    "smiyc": "official SegmentMeIfYouCan protocol: per-frame binned pixel curves pooled over frames, "
    "FPR95 at the first TPR >= 0.95, component sIoU/PPV/mean F1 at the best-F1 threshold",
}
"""``eval.protocol`` -> the sentence printed and saved with the results."""

FPR95_RULES = {
    "published": "FPR95 at the recall closest to 0.95 (published fpr_and_fdr_at_recall rule)",
    "exact": "FPR95 at the first threshold with TPR >= 0.95",
    "smiyc": "FPR95 at the first point of the binned SMIYC curve with TPR >= 0.95",
}
"""``eval.protocol`` -> how its FPR95 is read off the curve (saved as ``fpr_rule``)."""

OOD_COLUMNS = ("AUROC", "AP", "FPR95")
COMPONENT_COLUMNS = ("best_f1", "sIoU", "PPV", "F1_mean")
SEMANTIC_COLUMNS = ("mIoU", "mAcc")
SMIYC_OBSTACLE_BENCHMARKS = ("RoadObstacle21",)


def protocol_rule(protocol: str) -> str:
    """The description of ``eval.protocol`` (an unknown protocol is an error listing the known ones)."""
    if protocol not in PROTOCOL_RULES:
        raise ConfigError(f"unknown eval.protocol {protocol!r}; expected one of {', '.join(PROTOCOL_RULES)}")
    return PROTOCOL_RULES[protocol]


def smiyc_track(benchmark: str) -> str:
    """The SMIYC track whose component size filters apply to ``benchmark``."""
    return "ObstacleTrack" if benchmark in SMIYC_OBSTACLE_BENCHMARKS else "AnomalyTrack"


def _rank_share(dataset: Dataset, limit: int) -> tuple[Dataset, int]:
    """This rank's images among the first ``limit`` (all if 0): indices ``rank, rank + world, ...``."""
    total = len(dataset) if limit <= 0 else min(limit, len(dataset))
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    return Subset(dataset, range(rank, total, world)), total


@torch.no_grad()
def evaluate_benchmark(
    model: nn.Module,
    dataset: Dataset,
    *,
    score_fn: ScoreFn,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    protocol: str = "published",
    per_image: bool = False,
    track: str = "AnomalyTrack",
    postprocess: str = "none",
    max_images: int = 0,
    num_workers: int = 0,
    channels_last: bool = False,
    heatmap_dir: str | Path | None = None,
    num_heatmaps: int = 0,
    exporter: Exporter | None = None,
    curves_path: str | Path | None = None,
    curve_label: str = "anomaly score",
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    desc: str = "eval",
    progress: bool = True,
) -> dict[str, object]:
    """Metrics of ``model`` on ``dataset`` (items: ``image [3,H,W]``, ``ood_label [H,W]``,
    optional ``sem_label [H,W]``, ``name``): ``{"protocol", "AUROC", "AP", "FPR95", "images"}``,
    plus the component metrics of ``track`` under ``protocol="smiyc"``, ``"per_image"`` means if
    asked, and ``{"mIoU", "mAcc"}`` with semantic labels. ``postprocess`` smooths each anomaly map
    (see :func:`lib.postprocess.apply_postprocess`) before it is scored. ``images`` counts the
    labelled images scored; items without ``ood_label`` are only exported and counted in
    ``"unlabelled"``.

    ``max_images`` > 0 evaluates only the first ``max_images`` images. The first ``num_heatmaps``
    images get ``<name>_heatmap.png`` (anomaly map over the image) and ``<name>_pred.png``
    (colourised prediction) in ``heatmap_dir``. ``exporter`` receives every image's map and
    prediction (named by dataset index or image name, as its ``file_key`` says; the caller
    closes it). ``curves_path``: the main process draws the ROC/PR curves there (PNG), the curve
    labelled ``curve_label``. The model is put in eval mode; the caller restores train mode.
    """
    protocol_rule(protocol)
    if postprocess not in POSTPROCESS:
        raise ConfigError(
            f"unknown eval.postprocess {postprocess!r}; expected one of {', '.join(POSTPROCESS)}"
        )
    share, total = _rank_share(dataset, max_images)
    if max_images > 0 and total < len(dataset):
        logger.info("%s: evaluating the first %d of %d images (max_images)", desc, total, len(dataset))
    loader = DataLoader(
        share,
        batch_size=1,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=collate_items,
        pin_memory=device.type == "cuda",
    )
    model.eval()
    ood = OODEvaluation(protocol, per_image=per_image, track=track)
    confusion, with_semantics = ConfusionMatrix(), None
    n_labelled = n_unlabelled = 0
    indices = share.indices
    for position, batch in enumerate(tqdm(loader, desc=desc, disable=not progress, leave=False)):
        image = batch["image"].to(device, non_blocking=True)
        if channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp_dtype):
            anomaly_score, logits = model(image)
        score = apply_postprocess(postprocess, score_fn(logits, anomaly_score))[0].float().cpu()
        pred = logits[0].argmax(0)
        name = batch["name"][0]
        if exporter is not None:
            key = indices[position] if exporter.file_key == "index" else name
            exporter.add(key, score, pred.to(torch.uint8))
        if heatmap_dir is not None and indices[position] < num_heatmaps:
            _save_pictures(Path(heatmap_dir), name, image[0], score, pred, mean, std)
        if "ood_label" not in batch:
            n_unlabelled += 1
            continue
        n_labelled += 1
        ood.update(score, batch["ood_label"][0])
        has_sem = "sem_label" in batch
        if with_semantics is None:
            with_semantics = has_sem
        elif has_sem != with_semantics:
            raise ValueError(f"{desc}: image {name!r} differs from the first in having sem_label")
        if has_sem:
            confusion.update(pred[None], batch["sem_label"].to(device, non_blocking=True))
    ood.reduce_from_all_processes()
    counts = torch.tensor([n_labelled, n_unlabelled, int(bool(with_semantics))], dtype=torch.int64)
    if dist.is_initialized():
        dist.all_reduce(counts)
    n_labelled, n_unlabelled, n_with_semantics = counts.tolist()
    if n_labelled == 0:
        logger.warning("%s: no labelled image among %d; no metrics, only the export", desc, total)
        result: dict[str, object] = {"protocol": protocol}
    else:
        result = ood.compute()
        if curves_path is not None and (not dist.is_initialized() or dist.get_rank() == 0):
            save_curves(curves_path, {curve_label: curve_points(ood)}, title=desc)
    if postprocess != "none":
        result["postprocess"] = postprocess
    result["images"] = n_labelled
    if n_unlabelled:
        result["unlabelled"] = n_unlabelled
    if n_with_semantics:
        confusion.reduce_from_all_processes()
        semantic = confusion.compute()
        result.update({k: semantic[k] for k in SEMANTIC_COLUMNS})
    return result


def _save_pictures(
    folder: Path,
    name: str,
    image: torch.Tensor,
    score: torch.Tensor,
    pred: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
) -> None:
    rgb = denormalize(image, mean, std)
    save_png(folder / f"{name}_heatmap.png", heatmap_overlay(rgb, score.numpy()))
    save_png(folder / f"{name}_pred.png", colorize_segmentation(pred))


def results_table(results: Mapping[str, Mapping[str, object]]) -> str:
    """Markdown table, one row per benchmark, metrics in percent (``-`` where not computed, e.g. a
    benchmark of unlabelled images that was only exported).

    Component metrics (smiyc), per-image means (``img AP`` ...) and mIoU/mAcc get columns when any
    benchmark has them.
    """
    rows = {}
    for name, r in results.items():
        row = {c: r[c] for c in (*OOD_COLUMNS, *COMPONENT_COLUMNS, *SEMANTIC_COLUMNS) if c in r}
        row |= {f"img {c}": v for c, v in dict(r.get("per_image", {})).items() if c in OOD_COLUMNS}
        unlabelled = int(r.get("unlabelled", 0))
        rows[name] = (row, f"{r['images']} (+{unlabelled} unlabelled)" if unlabelled else r["images"])
    order = [*OOD_COLUMNS, *COMPONENT_COLUMNS, *(f"img {c}" for c in OOD_COLUMNS), *SEMANTIC_COLUMNS]
    columns = [c for c in order if c in OOD_COLUMNS or any(c in row for row, _ in rows.values())]
    lines = [
        "| benchmark | " + " | ".join(columns) + " | images |",
        "| --- | " + " | ".join("---:" for _ in columns) + " | ---: |",
    ]
    for name, (row, images) in rows.items():
        cells = [f"{100.0 * row[c]:.2f}" if c in row else "-" for c in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {images} |")
    return "\n".join(lines)


def metric_summary(result: Mapping[str, object]) -> dict[str, float]:
    """The scalar metrics of one :func:`evaluate_benchmark` result (for logs, TensorBoard, checkpoints)."""
    return {k: float(v) for k, v in result.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def results_header(
    *,
    protocol: str,
    score: str,
    postprocess: str = "none",
    per_image: bool = False,
    weights: str = "",
    model: str = "",
) -> str:
    """Markdown lines saying how every number of the table was computed (console and results.md)."""
    rule = protocol_rule(protocol)
    per = (
        "yes: `img` columns are means over the images that have both classes"
        if per_image
        else "no (pooled over all pixels of a benchmark)"
    )
    lines = [
        f"Weights: `{weights}`" + (f" (model `{model}`)" if model else ""),
        f"Score: `{score}`, postprocess: `{postprocess}`",
        f"Protocol: `{protocol}` — {rule}",
        f"FPR95 rule: {FPR95_RULES[protocol]}",
        f"Per-image means: {per}",
    ]
    return "  \n".join(lines) + "\n"


def write_results(
    run_dir: str | Path,
    results: Mapping[str, Mapping[str, object]],
    *,
    protocol: str,
    score: str,
    weights: str,
    postprocess: str = "none",
    per_image: bool = False,
    model: str = "",
    export: Mapping[str, str] | None = None,
    skipped: Sequence[str] = (),
) -> tuple[Path, Path]:
    """Write ``results.json`` (fractions, with everything that says how they were computed) and
    ``results.md`` (:func:`results_header` + percent table) into ``run_dir``. ``export``: the
    ``{"format", "dir"}`` the maps were exported to, if any."""
    rule = protocol_rule(protocol)
    run_dir = Path(run_dir)
    payload = {
        "protocol": protocol,
        "protocol_rule": rule,
        "fpr_rule": FPR95_RULES[protocol],
        "score": score,
        "postprocess": postprocess,
        "per_image": per_image,
        "weights": weights,
        "model": model,
        "benchmarks": {k: dict(v) for k, v in results.items()},
        "skipped": list(skipped),
    }
    if export is not None:
        payload["export"] = dict(export)
    json_path, md_path = run_dir / "results.json", run_dir / "results.md"
    write_text_atomic(json_path, json.dumps(payload, indent=2) + "\n")
    header = results_header(
        protocol=protocol,
        score=score,
        postprocess=postprocess,
        per_image=per_image,
        weights=weights,
        model=model,
    )
    footer = f"\n\nSkipped (benchmark folder missing): {', '.join(skipped)}\n" if skipped else "\n"
    write_text_atomic(md_path, header + "\n" + results_table(results) + footer)
    return json_path, md_path
