"""The evaluation protocols by name, and the streaming evaluation of one benchmark under one of them.

A protocol (``eval.protocol``, ``lib.evaluate --protocol``) says how the anomaly maps of a benchmark
become its numbers: which accumulator pools the pixels, how FPR95 is read off the curve, and what
the per-image means are. :data:`PROTOCOLS` is the one table of them:

- ``published``: exact, pooled pixels, FPR95 at the recall closest to 0.95 (:mod:`lib.metrics`);
- ``exact``: exact, pooled pixels, FPR95 at the first threshold with TPR >= 0.95 (Fishyscapes);
- ``smiyc``: the official SegmentMeIfYouCan pixel and component protocol (:mod:`lib.smiyc`), with
  the component size filters of the benchmark's track (:func:`smiyc_track`).

:class:`OODEvaluation` feeds one benchmark's images to the protocol's accumulator. A benchmark
without an anomaly pixel (a covariate-only set) has no AUROC/AP/FPR95: its result says so with the
reason instead of failing, and it still answers the false-positive rate at a given threshold.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from lib.labels import OOD_IN, OOD_OUT
from lib.metrics import RECALL_LEVEL, Curve, OODMetricAccumulator, as_score_label_pair, ood_metrics
from lib.registry import Registry
from lib.smiyc import PixelCurve, SMIYCAccumulator, frame_bins, pixel_metrics

Accumulator = OODMetricAccumulator | SMIYCAccumulator

SMIYC_TRACK_OF_BENCHMARK = {"RoadAnomaly21": "AnomalyTrack", "RoadObstacle21": "ObstacleTrack"}
"""Benchmark name (:mod:`lib.data.benchmarks`) -> SMIYC track whose frames it holds."""


def smiyc_track(benchmark: str) -> str:
    """The SMIYC track whose component size filters apply to ``benchmark`` (AnomalyTrack's for
    benchmarks outside SMIYC)."""
    return SMIYC_TRACK_OF_BENCHMARK.get(benchmark, "AnomalyTrack")


@dataclass(frozen=True)
class Protocol:
    """One way of computing a benchmark's anomaly metrics.

    ``accumulator(track)`` builds the pooled accumulator; ``compute`` reads its metrics,
    ``image_metrics`` the AUROC/AP/FPR95 of one image, ``curve`` its ROC/PR curves for plotting.
    """

    description: str
    fpr_rule: str
    accumulator: Callable[[str], Accumulator]
    compute: Callable[[Accumulator], dict[str, float]]
    image_metrics: Callable[[np.ndarray, np.ndarray], dict[str, float]]
    curve: Callable[[Accumulator], Curve]


def _smiyc_curve(curve: PixelCurve) -> Curve:
    """The official binned curve; AUROC by the trapezoid rule, AP by the step rule, as reported."""
    tpr, fpr, precision = curve.tpr, curve.fpr, curve.precision
    return Curve(
        fpr=fpr,
        tpr=tpr,
        recall=tpr,
        precision=precision,
        auroc=float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0)),
        ap=float(np.sum(np.diff(tpr) * precision[1:])),
        positive_rate=curve.n_pos / (curve.n_pos + curve.n_neg),
    )


def _smiyc_image_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    m = pixel_metrics([frame_bins(scores, labels)])
    return {k: m[k] for k in ("AUROC", "AP", "FPR95")}


PROTOCOLS: Registry[Protocol] = Registry("protocol", key="eval.protocol")


def _pooled(fpr_rule: str, rule_text: str) -> Protocol:
    """Exact AUROC/AP over all pooled pixels, FPR95 read by ``fpr_rule`` (:func:`lib.metrics.ood_metrics`)."""
    return Protocol(
        description=f"pooled pixels, exact AUROC/AP; {rule_text}",
        fpr_rule=rule_text,
        accumulator=lambda track: OODMetricAccumulator(),
        compute=lambda acc: acc.compute(fpr_rule=fpr_rule),
        image_metrics=lambda s, lab: ood_metrics(s, lab, fpr_rule=fpr_rule),
        curve=lambda acc: acc.curve(),
    )


PROTOCOLS.register("published")(
    _pooled("published", "FPR95 at the recall closest to 0.95 (published fpr_and_fdr_at_recall rule)")
)
PROTOCOLS.register("exact")(_pooled("first_tpr_geq", "FPR95 at the first threshold with TPR >= 0.95"))
PROTOCOLS.register("smiyc")(
    Protocol(
        description="official SegmentMeIfYouCan protocol: per-frame binned pixel curves pooled over "
        "frames, FPR95 at the first TPR >= 0.95, component sIoU/PPV/mean F1 at the best-F1 threshold",
        fpr_rule="FPR95 at the first point of the binned SMIYC curve with TPR >= 0.95",
        accumulator=SMIYCAccumulator,
        compute=lambda acc: acc.compute(),
        image_metrics=_smiyc_image_metrics,
        curve=lambda acc: _smiyc_curve(acc.pixel_curve()),
    )
)


def get_protocol(name: str) -> Protocol:
    """The protocol ``name``; an unknown name is an :class:`~lib.errors.UnknownNameError` (nearest named)."""
    return PROTOCOLS.get(name)


def protocol_names() -> list[str]:
    """The registered protocol names, ``published`` first (the default)."""
    names = PROTOCOLS.names()
    return sorted(names, key=lambda n: (n != "published", n != "exact", n))


class OODEvaluation:
    """Anomaly metrics of one benchmark under a named protocol: ``update`` per image, one dict out.

    ``per_image`` also reports the mean of per-image AUROC / AP / FPR95 under the same protocol;
    images without an anomaly or without an inlier pixel are skipped and counted. The pooled
    inlier and anomaly scores are also kept exactly (for smiyc beside its own accumulator), so
    :meth:`threshold_at_tpr` and :meth:`fpr_at_threshold` answer under every protocol.
    """

    def __init__(self, protocol: str = "published", *, per_image: bool = False, track: str = "AnomalyTrack"):
        self.protocol, self.per_image, self.track = protocol, per_image, track
        self._rules = get_protocol(protocol)
        self._pooled = self._rules.accumulator(track)
        self._exact = (
            self._pooled if isinstance(self._pooled, OODMetricAccumulator) else OODMetricAccumulator()
        )
        self._images: list[dict[str, float]] = []
        self.n_images_skipped = 0

    def reset(self) -> None:
        self._pooled.reset()
        self._exact.reset()
        self._images, self.n_images_skipped = [], 0

    def update(self, scores: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor) -> None:
        """Add one image: scores and 0/1/255 labels of the same shape (``[H, W]`` for smiyc)."""
        s, lab = as_score_label_pair(scores, labels)
        self._pooled.update(s, lab)
        if self._exact is not self._pooled:
            self._exact.update(s, lab)
        if self.per_image:
            if np.any(lab == OOD_OUT) and np.any(lab == OOD_IN):
                self._images.append(self._rules.image_metrics(s, lab))
            else:
                self.n_images_skipped += 1

    def reduce_from_all_processes(self) -> None:
        """Gather every rank's data; a no-op without a process group."""
        self._pooled.reduce_from_all_processes()
        if self._exact is not self._pooled:
            self._exact.reduce_from_all_processes()
        if self.per_image and dist.is_available() and dist.is_initialized():
            gathered: list[tuple[list[dict[str, float]], int] | None] = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, (self._images, self.n_images_skipped))
            self._images = [m for images, _ in gathered for m in images]
            self.n_images_skipped = sum(n for _, n in gathered)

    def not_applicable(self) -> str | None:
        """Why the pixel metrics are undefined (no anomaly or no inlier pixel), or ``None``."""
        n_pos, n_neg = self._exact.n_pos, self._exact.n_neg
        if n_pos == 0:
            return (
                f"no anomaly pixel (label {OOD_OUT}) among {n_neg} scored pixels: AUROC, AP and FPR95 "
                "are undefined"
            )
        if n_neg == 0:
            return (
                f"no in-distribution pixel (label {OOD_IN}) among {n_pos} scored pixels: AUROC, AP and "
                "FPR95 are undefined"
            )
        return None

    def compute(self) -> dict[str, object]:
        """``{"protocol", <metrics>}`` (+ ``"track"`` for smiyc, + ``"per_image"`` if asked); without
        both classes ``{"protocol", "not_applicable": reason}``."""
        out: dict[str, object] = {"protocol": self.protocol}
        if self.protocol == "smiyc":
            out["track"] = self.track
        reason = self.not_applicable()
        if reason is not None:
            out["not_applicable"] = reason
        else:
            out.update(self._rules.compute(self._pooled))
        if self.per_image:
            summary: dict[str, object] = {"n_images": len(self._images), "n_skipped": self.n_images_skipped}
            if self._images:
                summary |= {k: float(np.mean([m[k] for m in self._images])) for k in ("AUROC", "AP", "FPR95")}
            out["per_image"] = summary
        return out

    def curve(self) -> Curve:
        """The ROC/PR curves of every pixel seen, as this protocol computes them."""
        return self._rules.curve(self._pooled)

    def threshold_at_tpr(self, tpr: float = RECALL_LEVEL) -> float:
        """Highest threshold ``t`` at which ``score >= t`` finds at least ``tpr`` of the anomaly pixels."""
        return self._exact.threshold_at_tpr(tpr)

    def fpr_at_threshold(self, threshold: float) -> float:
        """Fraction of the in-distribution pixels scored at or above ``threshold``."""
        return self._exact.fpr_at_threshold(threshold)

    def fpr_at_thresholds(self, thresholds: np.ndarray) -> np.ndarray:
        """:meth:`fpr_at_threshold` of every value of ``thresholds`` (any shape)."""
        return self._exact.fpr_at_thresholds(thresholds)
