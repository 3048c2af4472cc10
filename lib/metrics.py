"""Exact pixel-level anomaly-segmentation metrics and the streaming mIoU confusion matrix.

AUROC and AP follow scikit-learn (``roc_auc_score``, ``average_precision_score``): the anomaly
class (label ``OOD_OUT``) is positive, a higher score is more anomalous, and pixels with equal
scores enter a threshold together. FPR95 has two rules, and results always name theirs:

- ``"published"``: the rule of the published evaluation (Hendrycks' ``fpr_and_fdr_at_recall``):
  the achievable recall closest to 0.95 (possibly below it; on an exact tie in float64 distance
  the larger recall), and among its thresholds the lowest one, i.e. the largest false-positive
  count;
- ``"first_tpr_geq"``: the first threshold, from high to low, whose TPR is at least 0.95
  (SegmentMeIfYouCan, Fishyscapes).

How: only non-void pixels are kept, split by class in their own dtype. The inlier scores are
sorted once; every count the metrics need is taken at the distinct anomaly scores with
``searchsorted``, in int64, so counts stay exact at benchmark scale (5.5e7 pixels) and AUROC is
the Mann-Whitney statistic with one final rounding. ``benchmarks/bench_metrics.py`` measures this
against the scikit-learn procedure.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from lib.labels import IGNORE, NUM_CLASSES, OOD_IN, OOD_OUT, OOD_VOID

FPR_RULES = ("published", "first_tpr_geq")
RECALL_LEVEL = 0.95
_CHUNK = 1 << 22  # pixels validated and split at a time, which bounds the temporaries of a big input


def _to_numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach()
        if x.dtype == torch.bfloat16:
            x = x.float()
        return x.cpu().numpy()
    return np.asarray(x)


def _check_pair(scores: np.ndarray, labels: np.ndarray) -> None:
    if scores.shape != labels.shape:
        raise ValueError(f"scores shape {scores.shape} does not match labels shape {labels.shape}")
    if scores.dtype.kind not in "fiu":
        raise ValueError(f"scores must be real numbers, got dtype {scores.dtype}")
    if labels.dtype.kind not in "iu":
        raise ValueError(
            f"labels must be integers {OOD_IN}/{OOD_OUT}/{OOD_VOID} (in/anomaly/void), "
            f"got dtype {labels.dtype}"
        )


def _class_masks(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(anomaly mask, inlier mask) of one flat chunk after checking its label and score values."""
    is_out = labels == OOD_OUT
    is_in = labels == OOD_IN
    n_void = np.count_nonzero(labels == OOD_VOID)
    if np.count_nonzero(is_out) + np.count_nonzero(is_in) + n_void != labels.size:
        bad = np.unique(labels[~(is_out | is_in | (labels == OOD_VOID))])
        raise ValueError(
            f"labels hold values {bad[:10].tolist()}; expected only {OOD_IN} (in), {OOD_OUT} (anomaly), "
            f"{OOD_VOID} (void)"
        )
    if scores.dtype.kind == "f" and not np.isfinite(scores[is_out | is_in]).all():
        raise ValueError("scores hold NaN or inf at non-void pixels")
    return is_out, is_in


def _chunks(scores: np.ndarray, labels: np.ndarray):
    """Yield flat (scores, labels, anomaly mask, inlier mask) chunks of a checked pair."""
    s, lab = scores.reshape(-1), labels.reshape(-1)
    for start in range(0, s.size, _CHUNK):
        s_c, l_c = s[start : start + _CHUNK], lab[start : start + _CHUNK]
        yield (s_c, *_class_masks(s_c, l_c))


def as_score_label_pair(
    scores: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor
) -> tuple[np.ndarray, np.ndarray]:
    """Numpy views of a score map and a 0/1/255 label map, checked as :func:`ood_metrics` does."""
    s, lab = _to_numpy(scores), _to_numpy(labels)
    _check_pair(s, lab)
    flat_s, flat_l = s.reshape(-1), lab.reshape(-1)
    for start in range(0, flat_s.size, _CHUNK):
        _class_masks(flat_s[start : start + _CHUNK], flat_l[start : start + _CHUNK])
    return s, lab


@dataclass(frozen=True)
class _Counts:
    """Exact counts at the distinct anomaly scores ``values`` (descending), all int64 ``[K]``."""

    values: np.ndarray
    tp: np.ndarray  # anomalies with score >= value
    fp_ge: np.ndarray  # inliers with score >= value
    fp_gt: np.ndarray  # inliers with score > value
    n_pos: int
    n_neg: int


def _counts_of(pos: np.ndarray, neg: np.ndarray) -> _Counts:
    """Counts of ascending anomaly scores ``pos`` and ascending inlier scores ``neg`` (1-D, both
    classes present)."""
    if pos.size == 0:
        raise ValueError(f"no anomaly pixel (label {OOD_OUT}) among {neg.size} scored pixels")
    if neg.size == 0:
        raise ValueError(f"no in-distribution pixel (label {OOD_IN}) among {pos.size} scored pixels")
    desc = pos[::-1]
    last = np.append(np.flatnonzero(desc[1:] != desc[:-1]), desc.size - 1)
    values = desc[last]
    n_neg = neg.size
    return _Counts(
        values=values,
        tp=last.astype(np.int64) + 1,
        fp_ge=n_neg - np.searchsorted(neg, values, side="left").astype(np.int64),
        fp_gt=n_neg - np.searchsorted(neg, values, side="right").astype(np.int64),
        n_pos=pos.size,
        n_neg=n_neg,
    )


@dataclass(frozen=True)
class Curve:
    """ROC and precision-recall curves of pooled pixels, what plots draw.

    ROC ``fpr``/``tpr`` from (0, 0) to (1, 1); PR ``recall``/``precision`` by increasing recall;
    ``auroc``/``ap`` as the protocol that made the curve reports them; ``positive_rate`` = share of
    anomaly pixels (the precision of a random score).
    """

    fpr: np.ndarray
    tpr: np.ndarray
    recall: np.ndarray
    precision: np.ndarray
    auroc: float
    ap: float
    positive_rate: float


def exact_curve(pos: np.ndarray, neg: np.ndarray) -> Curve:
    """The exact curves of ascending anomaly scores ``pos`` and ascending inlier scores ``neg`` (1-D).

    Every count is taken at the distinct anomaly scores, as :meth:`OODMetricAccumulator.compute`
    does: the area under the ROC staircase is the exact AUROC (ties form a diagonal step) and the
    step sum under the PR points is the exact AP.
    """
    c = _counts_of(pos, neg)
    tp, fp_ge, fp_gt, n_pos, n_neg = c.tp, c.fp_ge, c.fp_gt, c.n_pos, c.n_neg
    # At each distinct anomaly score, first the inliers strictly above it (TPR unchanged), then the
    # tied pixels of both classes together.
    tp_prev = np.concatenate([[0], tp[:-1]])
    roc_fp = np.concatenate([[0], np.stack([fp_gt, fp_ge], 1).ravel(), [n_neg]]) / n_neg
    roc_tp = np.concatenate([[0], np.stack([tp_prev, tp], 1).ravel(), [n_pos]]) / n_pos
    recall = tp / n_pos
    precision = tp / (tp + fp_ge)
    return Curve(
        fpr=roc_fp,
        tpr=roc_tp,
        recall=recall,
        precision=precision,
        auroc=float(np.sum(np.diff(roc_fp) * (roc_tp[1:] + roc_tp[:-1]) / 2.0)),
        ap=float(np.sum(np.diff(recall, prepend=0.0) * precision)),
        positive_rate=n_pos / (n_pos + n_neg),
    )


class OODMetricAccumulator:
    """Streaming exact AUROC / AP / FPR95 over many images.

    ``update`` keeps the non-void scores of an image split by class (one compact copy in the
    input's dtype; no label maps, no void pixels); ``compute`` returns exactly
    :func:`ood_metrics` of the concatenation of everything seen. Peak memory at ``compute`` is
    the stored scores plus one image, as the stored pieces are merged into one sorted array.
    """

    def __init__(self) -> None:
        self._pos: list[np.ndarray] = []
        self._neg: list[np.ndarray] = []
        self._sorted = False  # True when each list is one sorted array

    def reset(self) -> None:
        self._pos, self._neg = [], []
        self._sorted = False

    @property
    def n_pos(self) -> int:
        return sum(a.size for a in self._pos)

    @property
    def n_neg(self) -> int:
        return sum(a.size for a in self._neg)

    def update(self, scores: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor) -> None:
        """Add one image (or any batch) of scores and 0/1/255 labels of the same shape."""
        s, lab = _to_numpy(scores), _to_numpy(labels)
        _check_pair(s, lab)
        for s_c, is_out, is_in in _chunks(s, lab):
            self._pos.append(s_c[is_out])
            self._neg.append(s_c[is_in])
        self._sorted = False

    def merge(self, other: OODMetricAccumulator) -> None:
        """Add everything ``other`` has seen (used by the distributed reduce)."""
        self._pos.extend(other._pos)
        self._neg.extend(other._neg)
        self._sorted = False

    def reduce_from_all_processes(self) -> None:
        """Gather every rank's pixels into this accumulator; a no-op without a process group."""
        if not (dist.is_available() and dist.is_initialized()):
            return
        mine = self._sorted_scores()
        gathered: list[tuple[np.ndarray, np.ndarray] | None] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, mine)
        self._pos = [pair[0] for pair in gathered]
        self._neg = [pair[1] for pair in gathered]
        self._sorted = False

    @staticmethod
    def _merged(pieces: list[np.ndarray]) -> np.ndarray:
        """Copy ``pieces`` into one sorted array, dropping each piece from the list once copied."""
        out = np.empty(sum(p.size for p in pieces), dtype=np.result_type(*pieces) if pieces else np.float32)
        at = 0
        while pieces:
            piece = pieces.pop(0)
            out[at : at + piece.size] = piece
            at += piece.size
            del piece
        out.sort()
        return out

    def _sorted_scores(self) -> tuple[np.ndarray, np.ndarray]:
        """(anomaly scores, inlier scores), each merged into one ascending array and kept so."""
        if not self._sorted:
            self._pos = [self._merged(self._pos)]
            self._neg = [self._merged(self._neg)]
            self._sorted = True
        return self._pos[0], self._neg[0]

    def _counts(self) -> _Counts:
        return _counts_of(*self._sorted_scores())

    def compute(self, *, fpr_rule: str = "published") -> dict[str, float]:
        """``{"AUROC", "AP", "FPR95"}`` of all pixels seen; FPR95 by ``fpr_rule`` (see module doc)."""
        if fpr_rule not in FPR_RULES:
            raise ValueError(f"unknown fpr_rule {fpr_rule!r}; expected one of {FPR_RULES}")
        c = self._counts()
        n_tie = c.fp_ge - c.fp_gt
        n_below = c.n_neg - c.fp_ge
        group = np.diff(c.tp, prepend=0)
        # Mann-Whitney U (ties count 1/2), doubled to stay integer.
        u2 = int(np.dot(group, 2 * n_below + n_tie))
        auroc = u2 / (2 * c.n_pos * c.n_neg)
        recall = c.tp / c.n_pos
        precision = c.tp / (c.tp + c.fp_ge)
        ap = float(np.sum(np.diff(recall, prepend=0.0) * precision))
        if fpr_rule == "published":
            # Distances in float64 exactly as the published code; argmin over descending recall
            # prefers the larger recall on a tie.
            k = recall.size - 1 - int(np.argmin(np.abs(recall[::-1] - RECALL_LEVEL)))
            fp = c.fp_ge[k] if k == recall.size - 1 else c.fp_gt[k + 1]
        else:
            fp = c.fp_ge[int(np.argmax(recall >= RECALL_LEVEL))]
        return {"AUROC": float(auroc), "AP": ap, "FPR95": float(fp / c.n_neg)}

    def curve(self) -> Curve:
        """The exact ROC and PR curves of every pixel seen (:func:`exact_curve`)."""
        return exact_curve(*self._sorted_scores())

    def threshold_at_tpr(self, tpr: float = RECALL_LEVEL) -> float:
        """Highest score threshold ``t`` whose rule ``score >= t`` reaches TPR >= ``tpr``."""
        if not 0.0 < tpr <= 1.0:
            raise ValueError(f"tpr must lie in (0, 1], got {tpr}")
        pos, _ = self._sorted_scores()
        if pos.size == 0:
            raise ValueError(f"no anomaly pixel (label {OOD_OUT}) to set a threshold on")
        desc = pos[::-1]
        k = int(np.argmax(np.arange(1, desc.size + 1) / desc.size >= tpr))
        return float(desc[k])

    def fpr_at_threshold(self, threshold: float) -> float:
        """Fraction of in-distribution pixels with ``score >= threshold`` (anomalies not needed)."""
        if not np.isfinite(threshold):
            raise ValueError(f"threshold must be finite, got {threshold}")
        return float(self.fpr_at_thresholds(np.asarray(threshold)))

    def fpr_at_thresholds(self, thresholds: np.ndarray) -> np.ndarray:
        """:meth:`fpr_at_threshold` of every value of ``thresholds`` (any shape, float64 out): e.g. a
        score map read as "the false-positive rate if this pixel's score were the threshold"."""
        _, neg = self._sorted_scores()
        if neg.size == 0:
            raise ValueError(f"no in-distribution pixel (label {OOD_IN}) to count false positives on")
        return (neg.size - np.searchsorted(neg, thresholds, side="left")) / neg.size


def _accumulate(scores: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor) -> OODMetricAccumulator:
    acc = OODMetricAccumulator()
    acc.update(scores, labels)
    return acc


def ood_metrics(
    scores: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor, *, fpr_rule: str = "published"
) -> dict[str, float]:
    """Exact ``{"AUROC", "AP", "FPR95"}`` of pooled pixels; arrays or tensors of any equal shape.

    ``labels``: ``OOD_IN`` (0) in-distribution, ``OOD_OUT`` (1) anomaly, ``OOD_VOID`` (255) not
    scored. NaN/inf at a scored pixel, other label values, a shape mismatch or a missing class
    raise ``ValueError``.
    """
    return _accumulate(scores, labels).compute(fpr_rule=fpr_rule)


def threshold_at_tpr(
    scores: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor, tpr: float = RECALL_LEVEL
) -> float:
    """Highest threshold ``t`` at which ``score >= t`` finds at least ``tpr`` of the anomaly pixels."""
    return _accumulate(scores, labels).threshold_at_tpr(tpr)


def fpr_at_threshold(
    scores: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor, threshold: float
) -> float:
    """False-positive rate of ``score >= threshold`` on the in-distribution pixels of ``labels``."""
    return _accumulate(scores, labels).fpr_at_threshold(threshold)


class ConfusionMatrix:
    """Streaming integer confusion matrix ``[num_classes, num_classes]`` (rows: target, cols: pred).

    Lives on the device of the first target it sees, so GPU evaluation never copies maps to the
    host; ``reduce_from_all_processes`` sums it over ranks.
    """

    def __init__(self, *, num_classes: int = NUM_CLASSES, ignore_index: int = IGNORE) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.mat = torch.zeros((num_classes, num_classes), dtype=torch.int64)

    def reset(self) -> None:
        self.mat.zero_()

    def _check_range(self, values: torch.Tensor, name: str) -> None:
        bad = (values < 0) | (values >= self.num_classes)
        if bool(bad.any()):
            found = torch.unique(values[bad])[:10].tolist()
            extra = f" or {self.ignore_index} (ignore)" if name == "target" else ""
            raise ValueError(f"{name} holds values {found}; expected 0..{self.num_classes - 1}{extra}")

    def update(self, pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray) -> None:
        """Add predicted and true class maps of the same shape (any integer dtype)."""
        pred, target = torch.as_tensor(pred), torch.as_tensor(target)
        if pred.shape != target.shape:
            raise ValueError(
                f"pred shape {tuple(pred.shape)} does not match target shape {tuple(target.shape)}"
            )
        for name, t in (("pred", pred), ("target", target)):
            if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
                raise ValueError(f"{name} must hold integer class ids, got dtype {t.dtype}")
        if self.mat.device != target.device:
            self.mat = self.mat.to(target.device)
        keep = target != self.ignore_index
        t = target[keep].long()
        p = pred.to(target.device)[keep].long()
        self._check_range(t, "target")
        self._check_range(p, "pred")
        k = self.num_classes
        self.mat += torch.bincount(t * k + p, minlength=k * k).reshape(k, k)

    def reduce_from_all_processes(self) -> None:
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(self.mat)

    def compute(self) -> dict[str, float | list[float]]:
        """Per-class ``IoU`` (NaN where a class is neither present nor predicted), ``mIoU`` and
        ``mAcc`` (means over the classes that are defined), and ``pixel_accuracy``."""
        h = self.mat.double().cpu()
        tp = h.diag()
        gt, pr = h.sum(1), h.sum(0)
        if h.sum() == 0:
            raise ValueError("ConfusionMatrix.compute called before any non-ignored pixel was added")
        iou = tp / (gt + pr - tp)
        acc = tp / gt
        return {
            "IoU": iou.tolist(),
            "mIoU": float(iou.nanmean()),
            "pixel_accuracy": float(tp.sum() / h.sum()),
            "mAcc": float(acc.nanmean()),
        }
