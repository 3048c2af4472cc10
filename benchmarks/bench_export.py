"""Is the exported segmenter as fast as the eager one on CPU?

Times ``lib.export``'s three ways to run the light models (``deeplab_wrn_light``,
``mask2anomaly_tiny``, random weights, score ``learned``) on one normalised 3x512x1024 image: the
eager ``ScoredSegmenter`` under ``torch.inference_mode``, the ``torch.export`` program
(``ExportedProgram.module()``) and the ONNX model in onnxruntime (CPU provider, when installed).
Median of ``--runs`` after one warm-up, ``--threads`` threads for torch and onnxruntime alike;
prints each time and its ratio to eager (>1: faster than eager).

    python benchmarks/bench_export.py [--size 512 1024] [--runs 5] [--threads 2] [--models NAME ...]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from lib.export import ScoredSegmenter, export_onnx, export_program
from lib.models import build_model

MODELS = ("deeplab_wrn_light", "mask2anomaly_tiny")


def median_seconds(run: Callable[[], object], runs: int) -> float:
    """Median wall seconds of ``runs`` calls after one warm-up."""
    run()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench(name: str, image: torch.Tensor, runs: int, threads: int, folder: Path) -> None:
    torch.manual_seed(0)
    segmenter = ScoredSegmenter(build_model(name).eval(), score="learned", postprocess="none").eval()
    start = time.perf_counter()
    program = export_program(segmenter)
    traced = time.perf_counter() - start
    exported = program.module()

    def eager_run():
        with torch.inference_mode():
            return segmenter(image)

    def exported_run():
        with torch.inference_mode():
            return exported(image)

    eager = median_seconds(eager_run, runs)
    print(f"{name} (traced in {traced:.0f} s): eager {eager:.3f} s")
    seconds = median_seconds(exported_run, runs)
    print(f"  torch.export program {seconds:.3f} s: {eager / seconds:.2f}x eager")
    try:
        import onnxruntime
    except ImportError:
        print("  onnxruntime not installed: ONNX not timed (pip install 'multishiftseg[export]')")
        return
    path = export_onnx(program, folder / f"{name}.onnx")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {"image": image.numpy()}
    seconds = median_seconds(lambda: session.run(None, feed), runs)
    print(f"  ONNX in onnxruntime {onnxruntime.__version__} {seconds:.3f} s: {eager / seconds:.2f}x eager")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs=2, default=(512, 1024), metavar=("H", "W"))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cpu = platform.processor() or platform.machine()
    print(
        f"device cpu ({cpu}), torch {torch.__version__}, {args.threads} threads, float32, "
        f"image 1x3x{args.size[0]}x{args.size[1]}"
    )
    image = torch.randn(1, 3, *args.size, generator=torch.Generator().manual_seed(0))
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models:
            bench(name, image, args.runs, args.threads, Path(folder))


if __name__ == "__main__":
    main()
