"""The official SegmentMeIfYouCan (SMIYC) evaluation protocol: pixel curves and component metrics.

Follows the rules of the official ``road-anomaly-benchmark`` code (metrics ``PixBinaryClass``,
``PixBinaryClass-uniThr`` and ``SegEval-<track>``), reimplemented without that package.

Pixel level, per frame (non-void pixels only), one of two binnings (:data:`PIXEL_METRICS`):

- ``PixBinaryClass`` (the leaderboard's): candidate thresholds are the score range widened by
  ``eps = max(1% of the range, 0.01)`` on both sides plus 384 quantiles of the anomaly and 384 of
  the inlier scores (``np.quantile``, deduplicated); per-bin anomaly / inlier counts, where a score
  equal to a threshold counts as positive. Frames are pooled by sorting all their thresholds
  (descending) and summing the bins.
- ``PixBinaryClass-uniThr``: 4096 equal-width bins on [-0.01, 1.01], the same for every frame, so
  frames are pooled by summing the bins; scores outside that range are never positive. The bin
  edges are ``np.linspace`` in the scores' own dtype, as ``np.histogram`` makes them. For float16
  scores (what the toolkit reads from a submission file) the bin of each value is the one numpy
  1.23 (the toolkit's pinned version) computes in float16 arithmetic: it can lie one or two bins
  above the exact one and some float16 edges coincide. Newer numpy refuses that histogram, so the
  rule is reproduced here (:func:`uniform_bin_index`).

Then, on the pooled curve, repeated thresholds collapse to their last occurrence (plus the first
and the last entry), the thresholds being collapsed with the same indices as the counts; the
origin (threshold: highest + 1) and the all-positive end are added where missing. AP by the step
rule ``sum(diff(recall) * precision[1:])``, AUROC by the trapezoid rule, FPR95 at the first point
with TPR >= 0.95, and the best pixel F1 with ``best_f1_threshold``, the threshold at which the
collapsed curve reaches it (the first maximum, i.e. the highest such threshold).

Component level at the ``PixBinaryClass`` ``best_f1_threshold`` (prediction: ``score > threshold``,
strict, void removed): 8-connected components; predicted components smaller than the track's
``min_pred_size`` are dropped and ground-truth components smaller than ``min_gt_size`` become
void. ``sIoU`` of a ground-truth component = intersection / (its size + the predicted pixels,
outside any other ground-truth component, of the predicted components touching it); ``PPV`` of a
predicted component = its pixels on any ground-truth component / its size. sIoU and PPV are
averaged over all components of the dataset; ``F1_mean`` averages, over 11 thresholds ``tau`` in
0.25..0.75, the F1 of dataset counts TP = #(sIoU >= tau), FN = #(sIoU < tau), FP = #(PPV < tau).
With no predicted component PPV is NaN, as in the official code.

Streaming: the component pass needs the pixel threshold, which is known only after the last
frame. :class:`SMIYCAccumulator` keeps, per frame, the pixel-curve bins (at most 770 thresholds
and counts) and the frame itself (score map in its dtype plus the label map as uint8, about
5 bytes/pixel for float32: 0.28 GB for 60 RoadAnomaly frames) rather than asking the caller for a
second pass, which would run the model twice; measured at 1280x720 on 2 CPU cores, the pixel
bins take about 0.12 s per frame and the component pass about 0.09 s, far below one model pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from scipy import ndimage

from lib.labels import OOD_IN, OOD_OUT, OOD_VOID
from lib.metrics import as_score_label_pair

PERCENTILE_METRIC = "PixBinaryClass"
UNIFORM_METRIC = "PixBinaryClass-uniThr"
PIXEL_METRICS = (PERCENTILE_METRIC, UNIFORM_METRIC)
QUANTILES_PER_CLASS = 384
UNIFORM_BINS = 4096
UNIFORM_RANGE = (-0.01, 1.01)
SIOU_THRESHOLDS = np.linspace(0.25, 0.75, 11, endpoint=True)
_EIGHT_CONNECTED = np.ones((3, 3), dtype=np.uint8)


@dataclass(frozen=True)
class SMIYCTrack:
    """Component size filters of a track, in pixels."""

    min_pred_size: int
    min_gt_size: int


TRACKS = {
    "AnomalyTrack": SMIYCTrack(min_pred_size=500, min_gt_size=100),
    "ObstacleTrack": SMIYCTrack(min_pred_size=50, min_gt_size=10),
}


def get_track(track: str) -> SMIYCTrack:
    if track not in TRACKS:
        raise ValueError(f"unknown SMIYC track {track!r}; expected one of {sorted(TRACKS)}")
    return TRACKS[track]


def _check_pixel_metric(metric: str) -> None:
    if metric not in PIXEL_METRICS:
        raise ValueError(f"unknown SMIYC pixel metric {metric!r}; expected one of {PIXEL_METRICS}")


@dataclass(frozen=True)
class FrameBins:
    """Pixel-curve data of one frame: ``thresholds`` descending ``[K]``, anomaly and inlier
    counts ``[K]`` (int64) in the bin starting at each threshold, and the class totals.
    ``uniform``: the thresholds are the fixed ``PixBinaryClass-uniThr`` edges."""

    thresholds: np.ndarray
    tp_rel: np.ndarray
    fp_rel: np.ndarray
    n_pos: int
    n_neg: int
    uniform: bool = False


def uniform_bin_index(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(index, edges)``: the ``PixBinaryClass-uniThr`` bin of each value (-1 outside the range)
    and the ``UNIFORM_BINS + 1`` edges, as the toolkit's ``np.histogram`` call assigns them (module
    doc): a value is in bin ``i`` if ``edges[i] <= value < edges[i + 1]`` (the last bin is closed),
    except for float16 values, which follow numpy 1.23's float16 arithmetic."""
    if not np.issubdtype(values.dtype, np.floating):
        values = values.astype(np.float64)
    dtype = values.dtype.type
    lo, hi = UNIFORM_RANGE
    edges = np.linspace(lo, hi, UNIFORM_BINS + 1, dtype=dtype)
    keep = (values >= dtype(lo)) & (values <= dtype(hi))
    kept = values[keep]
    if dtype is np.float16:
        # numpy 1.23's fast path, step by step: the bin estimated in float16 arithmetic (value-based
        # casting kept every operand float16), then moved by one where a float16 edge disagrees.
        norm = np.float16(UNIFORM_BINS / (hi - lo))
        estimate = np.multiply(np.subtract(kept, np.float16(lo), dtype=np.float16), norm, dtype=np.float16)
        idx = estimate.astype(np.intp)
        idx[idx == UNIFORM_BINS] -= 1
        idx[kept < edges[idx]] -= 1
        idx[(kept >= edges[idx + 1]) & (idx != UNIFORM_BINS - 1)] += 1
    else:
        idx = np.minimum(np.searchsorted(edges, kept, side="right") - 1, UNIFORM_BINS - 1)
    index = np.full(values.shape, -1, dtype=np.intp)
    index[keep] = idx
    return index, edges


def _uniform_counts(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    index, edges = uniform_bin_index(values)
    return np.bincount(index[index >= 0], minlength=UNIFORM_BINS), edges


def frame_bins(scores: np.ndarray, labels: np.ndarray, metric: str = PERCENTILE_METRIC) -> FrameBins | None:
    """Bins of one frame under pixel ``metric`` (``None`` if it has no non-void pixel); module doc."""
    _check_pixel_metric(metric)
    roi = labels != OOD_VOID
    values = scores[roi]
    if values.size == 0:
        return None
    is_pos = labels[roi] == OOD_OUT
    pos, neg = values[is_pos], values[~is_pos]
    if metric == UNIFORM_METRIC:
        (tp_rel, edges), (fp_rel, _) = _uniform_counts(pos), _uniform_counts(neg)
    else:
        # The range in the scores' dtype, the margin and the outer edges in float64 (as numpy 1.23,
        # the toolkit's version, computes them; numpy 2 would keep float32 scores in float32).
        vmin, vmax = np.min(values), np.max(values)
        eps = max(float(vmax - vmin) * 1e-2, 1e-2)
        parts = [[float(vmin) - eps, float(vmax) + eps]]
        for cls in (pos, neg):
            if cls.size:
                parts.append(np.quantile(cls, np.linspace(0, 1, min(QUANTILES_PER_CLASS, cls.size))))
        edges = np.unique(np.concatenate(parts))
        tp_rel, _ = np.histogram(pos, bins=edges)
        fp_rel, _ = np.histogram(neg, bins=edges)
    return FrameBins(
        thresholds=edges[:-1][::-1].astype(np.float64),
        tp_rel=tp_rel[::-1].astype(np.int64),
        fp_rel=fp_rel[::-1].astype(np.int64),
        n_pos=int(pos.size),
        n_neg=int(neg.size),
        uniform=metric == UNIFORM_METRIC,
    )


@dataclass(frozen=True)
class PixelCurve:
    """The pooled, collapsed pixel curve of a set of frames: cumulative anomaly / inlier counts
    ``tp``, ``fp`` (float64 ``[N]``, from ``(0, 0)`` to ``(n_pos, n_neg)``) at the descending
    ``thresholds`` ``[N]`` (a pixel with score >= threshold is positive)."""

    tp: np.ndarray
    fp: np.ndarray
    thresholds: np.ndarray
    n_pos: int
    n_neg: int

    @property
    def tpr(self) -> np.ndarray:
        return self.tp / self.n_pos

    @property
    def fpr(self) -> np.ndarray:
        return self.fp / self.n_neg

    @property
    def precision(self) -> np.ndarray:
        """``tp / (tp + fp)``, 1 where nothing is predicted yet (the curve origin)."""
        n_pred = self.tp + self.fp
        out = np.ones(self.tp.size)
        out[n_pred > 0] = self.tp[n_pred > 0] / n_pred[n_pred > 0]
        return out


def _pooled_counts(frames: Sequence[FrameBins]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Uncollapsed descending ``(thresholds, tp, fp)`` of all frames (module doc)."""
    uniform = {f.uniform for f in frames}
    if len(uniform) > 1:
        raise ValueError("cannot pool frames binned by different SMIYC pixel metrics")
    if uniform == {True}:
        thresholds = frames[0].thresholds
        if any(not np.array_equal(f.thresholds, thresholds) for f in frames):
            raise ValueError("uniform-bin frames of different score dtypes have different bin edges")
        tp_rel = np.sum([f.tp_rel for f in frames], axis=0)
        fp_rel = np.sum([f.fp_rel for f in frames], axis=0)
    else:
        thresholds = np.concatenate([f.thresholds for f in frames])
        order = np.argsort(thresholds)[::-1]
        thresholds = thresholds[order]
        tp_rel = np.concatenate([f.tp_rel for f in frames])[order]
        fp_rel = np.concatenate([f.fp_rel for f in frames])[order]
    return thresholds, np.cumsum(tp_rel.astype(np.float64)), np.cumsum(fp_rel.astype(np.float64))


def pixel_curve(frames: Sequence[FrameBins]) -> PixelCurve:
    """Pool per-frame bins into one collapsed curve with its end points (module doc)."""
    n_pos = sum(f.n_pos for f in frames)
    n_neg = sum(f.n_neg for f in frames)
    if n_pos == 0:
        raise ValueError(f"no anomaly pixel (label {OOD_OUT}) in {len(frames)} frames")
    if n_neg == 0:
        raise ValueError(f"no in-distribution pixel (label {OOD_IN}) in {len(frames)} frames")
    thresholds, tp, fp = _pooled_counts(frames)
    keep = np.concatenate([[0], np.nonzero(thresholds[:-1] != thresholds[1:])[0], [tp.size - 1]])
    thresholds, tp, fp = thresholds[keep], tp[keep], fp[keep]
    if tp[0] != 0 or fp[0] != 0:
        tp, fp = np.concatenate([[0.0], tp]), np.concatenate([[0.0], fp])
        thresholds = np.concatenate([[float(np.max(thresholds)) + 1], thresholds])
    if tp[-1] != n_pos or fp[-1] != n_neg:
        tp, fp = np.concatenate([tp, [n_pos]]), np.concatenate([fp, [n_neg]])
        thresholds = np.concatenate([thresholds, [float(np.max(thresholds)) - 1]])
    return PixelCurve(tp=tp, fp=fp, thresholds=thresholds, n_pos=n_pos, n_neg=n_neg)


def pixel_metrics(frames: Sequence[FrameBins]) -> dict[str, float]:
    """Pooled ``{"AP", "AUROC", "FPR95", "best_f1", "best_f1_threshold"}`` of per-frame bins."""
    curve = pixel_curve(frames)
    tp, fp, tpr, fpr, precision = curve.tp, curve.fp, curve.tpr, curve.fpr, curve.precision
    f1 = 2 * tp / (2 * tp + fp + (curve.n_pos - tp))
    at95 = int(np.searchsorted(tpr, 0.95))
    best = int(np.nanargmax(f1))
    return {
        "AP": float(np.sum(np.diff(tpr) * precision[1:])),
        "AUROC": float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0)),
        "FPR95": float(fpr[at95]) if at95 < tpr.size else 1.0,
        "best_f1": float(f1[best]),
        "best_f1_threshold": float(curve.thresholds[best]),
    }


@dataclass(frozen=True)
class FrameComponents:
    """Component scores of one frame: sIoU per ground-truth and PPV per predicted component."""

    siou: np.ndarray
    ppv: np.ndarray


def frame_components(
    scores: np.ndarray, labels: np.ndarray, threshold: float, track: SMIYCTrack
) -> FrameComponents:
    """sIoU / PPV of one ``[H, W]`` frame at ``threshold`` (``score > threshold``); module doc."""
    pred_mask = (scores > threshold) & (labels != OOD_VOID)
    gt_inst, n_gt = ndimage.label(labels == OOD_OUT, structure=_EIGHT_CONNECTED)
    pred_inst, n_pred = ndimage.label(pred_mask, structure=_EIGHT_CONNECTED)
    pred_size = np.bincount(pred_inst.ravel(), minlength=n_pred + 1)
    kept = pred_size >= track.min_pred_size
    kept[0] = False
    relabel = np.zeros(n_pred + 1, dtype=np.int64)
    relabel[kept] = np.arange(1, np.count_nonzero(kept) + 1)
    n_pred = int(np.count_nonzero(kept))
    gt_size = np.bincount(gt_inst.ravel(), minlength=n_gt + 1)
    roi = labels != OOD_VOID
    roi &= gt_size[gt_inst] >= np.where(gt_inst > 0, track.min_gt_size, 0)
    g = gt_inst[roi].astype(np.int64)
    p = relabel[pred_inst[roi]]
    # Contingency table over the region of interest: row = gt component (0: none), col = pred.
    table = np.bincount(g * (n_pred + 1) + p, minlength=(n_gt + 1) * (n_pred + 1)).reshape(
        n_gt + 1, n_pred + 1
    )
    gt_roi, pred_roi = table.sum(1), table.sum(0)
    gt_ids = np.flatnonzero(gt_roi[1:] > 0) + 1
    pred_ids = np.flatnonzero(pred_roi[1:] > 0) + 1
    touching = table[gt_ids][:, 1:] > 0
    union = gt_roi[gt_ids] + touching @ table[0, 1:]
    siou = (gt_roi[gt_ids] - table[gt_ids, 0]) / union
    ppv = (pred_roi[pred_ids] - table[0, pred_ids]) / pred_roi[pred_ids]
    return FrameComponents(siou=siou, ppv=ppv)


def component_counts(frames: Sequence[FrameComponents]) -> dict[str, np.ndarray]:
    """Dataset counts ``{"tp", "fn", "fp"}`` (int64 ``[11]``) at each sIoU threshold of
    :data:`SIOU_THRESHOLDS`: TP = #(sIoU >= tau), FN = #(sIoU < tau), FP = #(PPV < tau)."""
    siou = np.concatenate([f.siou for f in frames])
    ppv = np.concatenate([f.ppv for f in frames])
    tp = np.count_nonzero(siou[None, :] >= SIOU_THRESHOLDS[:, None], axis=1)
    fp = np.count_nonzero(ppv[None, :] < SIOU_THRESHOLDS[:, None], axis=1)
    return {"tp": tp, "fn": siou.size - tp, "fp": fp}


def component_metrics(frames: Sequence[FrameComponents]) -> dict[str, float]:
    """Dataset ``{"sIoU", "PPV", "F1_mean"}`` from per-frame component scores."""
    n_gt = sum(f.siou.size for f in frames)
    if n_gt == 0:
        raise ValueError("no ground-truth anomaly component survives the track's size filter")
    n_pred = sum(f.ppv.size for f in frames)
    counts = component_counts(frames)
    f1 = [
        2 * tp / (2 * tp + fn + fp) for tp, fn, fp in zip(*(counts[k].tolist() for k in ("tp", "fn", "fp")))
    ]
    return {
        "sIoU": sum(float(np.sum(f.siou)) for f in frames) / n_gt,
        "PPV": sum(float(np.sum(f.ppv)) for f in frames) / n_pred if n_pred else float("nan"),
        "F1_mean": sum(f1) / len(f1),
    }


class SMIYCAccumulator:
    """Streaming SMIYC protocol: ``update`` per ``[H, W]`` frame, ``compute`` at the end.

    ``pixel_metric`` (one of :data:`PIXEL_METRICS`) gives the pixel numbers; the component pass
    always runs at the ``PixBinaryClass`` best-F1 threshold, as the official toolkit reads it from
    that metric's curve. Keeps each frame's pixel-curve bins and the frame itself for the
    component pass (module doc says why). Frames without any non-void pixel are skipped and
    counted in ``n_skipped``.
    """

    def __init__(self, track: str = "AnomalyTrack", pixel_metric: str = PERCENTILE_METRIC) -> None:
        _check_pixel_metric(pixel_metric)
        self.track_name = track
        self.track = get_track(track)
        self.pixel_metric = pixel_metric
        self.reset()

    def reset(self) -> None:
        self._bins: dict[str, list[FrameBins]] = {m: [] for m in {PERCENTILE_METRIC, self.pixel_metric}}
        self._frames: list[tuple[np.ndarray, np.ndarray]] = []
        self.n_skipped = 0

    def update(self, scores: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor) -> None:
        s, lab = as_score_label_pair(scores, labels)
        if s.ndim != 2:
            raise ValueError(f"SMIYC frames must be [H, W] maps, got shape {s.shape}")
        if not np.any(lab != OOD_VOID):
            self.n_skipped += 1
            return
        for metric, bins in self._bins.items():
            bins.append(frame_bins(s, lab, metric))
        self._frames.append((s.copy(), lab.astype(np.uint8)))

    def reduce_from_all_processes(self) -> None:
        """Gather every rank's frames; a no-op without a process group."""
        if not (dist.is_available() and dist.is_initialized()):
            return
        gathered: list[tuple[dict, list, int] | None] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, (self._bins, self._frames, self.n_skipped))
        self._bins = {m: [b for bins, _, _ in gathered for b in bins[m]] for m in self._bins}
        self._frames = [f for _, frames, _ in gathered for f in frames]
        self.n_skipped = sum(n for _, _, n in gathered)

    def pixel_curve(self) -> PixelCurve:
        """The pooled curve of ``pixel_metric`` over every frame seen (what AP/AUROC/FPR95 are read from)."""
        return pixel_curve(self._bins[self.pixel_metric])

    def component_frames(self) -> list[FrameComponents]:
        """Per-frame component scores at the ``PixBinaryClass`` best-F1 threshold."""
        threshold = pixel_metrics(self._bins[PERCENTILE_METRIC])["best_f1_threshold"]
        return [frame_components(s, lab, threshold, self.track) for s, lab in self._frames]

    def compute(self) -> dict[str, float]:
        """``{"AP", "FPR95", "AUROC", "best_f1", "best_f1_threshold", "sIoU", "PPV", "F1_mean"}``
        (+ ``"component_threshold"`` under ``PixBinaryClass-uniThr``, whose own best-F1 threshold
        is not the one the components use)."""
        out = pixel_metrics(self._bins[self.pixel_metric])
        if self.pixel_metric != PERCENTILE_METRIC:
            out["component_threshold"] = pixel_metrics(self._bins[PERCENTILE_METRIC])["best_f1_threshold"]
        out.update(component_metrics(self.component_frames()))
        return out
