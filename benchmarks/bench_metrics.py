"""How much faster and leaner are lib.metrics than the published scikit-learn evaluation?

Synthetic data of RoadAnomaly's size (60 images of 1280x720, about 3% anomaly and 5% void pixels,
float32 scores with ties: every other image is rounded to float16 precision). The reference is
the published procedure re-implemented here: select in/out pixels, stack anomalies then inliers,
``roc_auc_score``, ``average_precision_score`` and Hendrycks' ``fpr_and_fdr_at_recall`` on
float64 cumulative sums. The project side is measured twice: ``ood_metrics`` on the same stacked
arrays, and ``OODMetricAccumulator`` fed image by image as the evaluator does.

Wall time is measured without tracing; peak memory is the ``tracemalloc`` peak of a second,
traced run (numpy reports its buffers to tracemalloc), above the inputs, which both sides share.

    python benchmarks/bench_metrics.py [--images N]
"""

from __future__ import annotations

import argparse
import platform
import time
import tracemalloc
from collections.abc import Callable

import numpy as np
import sklearn
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from lib.labels import OOD_IN, OOD_OUT, OOD_VOID
from lib.metrics import OODMetricAccumulator, ood_metrics

HEIGHT, WIDTH = 720, 1280


def make_data(n_images: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Scores ``[N, H, W]`` float32 and labels ``[N, H, W]`` uint8 with one anomaly ellipse
    (about 3%), a void ring around it and a void strip at the bottom (about 5% together)."""
    rng = np.random.default_rng(seed)
    scores = np.empty((n_images, HEIGHT, WIDTH), dtype=np.float32)
    labels = np.empty((n_images, HEIGHT, WIDTH), dtype=np.uint8)
    yy, xx = np.mgrid[:HEIGHT, :WIDTH].astype(np.float32)
    for i in range(n_images):
        cy, cx = rng.uniform(200, 600), rng.uniform(250, 1030)
        ry, rx = rng.uniform(55, 85), rng.uniform(100, 160)
        r = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2
        lab = np.full((HEIGHT, WIDTH), OOD_IN, dtype=np.uint8)
        lab[r < 1.25] = OOD_VOID
        lab[r < 1.0] = OOD_OUT
        lab[-int(rng.integers(28, 38)) :] = OOD_VOID
        labels[i] = lab
        s = rng.standard_normal((HEIGHT, WIDTH), dtype=np.float32)
        s += np.float32(1.8) * (lab == OOD_OUT) + np.float32(3.0) * (lab == OOD_VOID)
        scores[i] = s.astype(np.float16) if i % 2 else s
    return scores, labels


def _stable_cumsum(x: np.ndarray) -> np.ndarray:
    out = np.cumsum(x, dtype=np.float64)
    expected = np.sum(x, dtype=np.float64)
    if not np.isclose(out[-1], expected, rtol=1e-5, atol=1e-8):
        raise RuntimeError("cumsum was found to be unstable")
    return out


def _fpr_and_fdr_at_recall(y_true: np.ndarray, y_score: np.ndarray, recall_level: float = 0.95) -> float:
    y_true = y_true == 1
    desc = np.argsort(y_score, kind="mergesort")[::-1]
    y_score, y_true = y_score[desc], y_true[desc]
    distinct = np.where(np.diff(y_score))[0]
    threshold_idxs = np.r_[distinct, y_true.size - 1]
    tps = _stable_cumsum(y_true)[threshold_idxs]
    fps = 1 + threshold_idxs - tps
    recall = tps / tps[-1]
    last_ind = tps.searchsorted(tps[-1])
    sl = slice(last_ind, None, -1)
    recall, fps = np.r_[recall[sl], 1], np.r_[fps[sl], 0]
    cutoff = np.argmin(np.abs(recall - recall_level))
    return fps[cutoff] / np.sum(np.logical_not(y_true))


def reference_eval_ood_measure(conf: np.ndarray, seg_label: np.ndarray) -> dict[str, float]:
    """The published ``eval_ood_measure``: pooled pixels through scikit-learn."""
    in_scores = conf[seg_label == OOD_IN]
    out_scores = conf[seg_label == OOD_OUT]
    pos, neg = out_scores.reshape((-1, 1)), in_scores.reshape((-1, 1))
    examples = np.squeeze(np.vstack((pos, neg)))
    y = np.zeros(len(examples), dtype=np.int32)
    y[: len(pos)] = 1
    return {
        "AUROC": float(roc_auc_score(y, examples)),
        "AP": float(average_precision_score(y, examples)),
        "FPR95": float(_fpr_and_fdr_at_recall(y, examples)),
    }


def streaming(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    acc = OODMetricAccumulator()
    for s, lab in zip(scores, labels):
        acc.update(s, lab)
    return acc.compute()


def measure(fn: Callable[[], dict[str, float]]) -> tuple[dict[str, float], float, float]:
    """(result, wall seconds, tracemalloc peak in bytes)."""
    t0 = time.perf_counter()
    result = fn()
    wall = time.perf_counter() - t0
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return result, wall, peak


def main(args: argparse.Namespace) -> None:
    print(
        f"device: CPU ({platform.processor() or platform.machine()}), "
        f"torch threads {torch.get_num_threads()}; "
        f"python {platform.python_version()}, numpy {np.__version__}, scikit-learn {sklearn.__version__}, "
        f"torch {torch.__version__}"
    )
    scores, labels = make_data(args.images)
    n_out, n_in = np.count_nonzero(labels == OOD_OUT), np.count_nonzero(labels == OOD_IN)
    print(
        f"data: {args.images} x {HEIGHT}x{WIDTH} = {labels.size:,} px, "
        f"scores {scores.dtype}, labels {labels.dtype}; "
        f"anomaly {n_out / labels.size:.2%}, void {1 - (n_in + n_out) / labels.size:.2%}, "
        f"{np.unique(scores[labels != OOD_VOID]).size:,} distinct scored values"
    )
    runs = {
        "reference (sklearn)": lambda: reference_eval_ood_measure(scores, labels),
        "ood_metrics": lambda: ood_metrics(scores, labels),
        "OODMetricAccumulator": lambda: streaming(scores, labels),
    }
    results = {name: measure(fn) for name, fn in runs.items()}
    ref, ref_wall, ref_peak = results["reference (sklearn)"]
    print(f"{'':22s} {'wall s':>8s} {'peak MiB':>9s} {'speed-up':>9s} {'mem ratio':>9s}   AUROC / AP / FPR95")
    for name, (res, wall, peak) in results.items():
        values = " / ".join(f"{res[k]:.12f}" for k in ("AUROC", "AP", "FPR95"))
        ratios = f"{ref_wall / wall:8.1f}x {ref_peak / peak:8.1f}x"
        print(f"{name:22s} {wall:8.2f} {peak / 2**20:9.1f} {ratios}   {values}")
    for name, (res, _, _) in list(results.items())[1:]:
        diff = max(abs(res[k] - ref[k]) for k in ref)
        print(f"max |{name} - reference| = {diff:.2e}")
        assert diff <= 1e-10, (name, res, ref)
    print("peak memory: tracemalloc (numpy buffers), above the shared inputs")


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=60, help="number of 1280x720 images (RoadAnomaly: 60)")
    return parser


if __name__ == "__main__":
    main(get_args_parser().parse_args())
