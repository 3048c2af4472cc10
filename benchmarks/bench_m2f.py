"""How fast is a Mask2Anomaly R50 test step, and how much memory does it take?

One test step = ``model(image)`` in eval mode (semantic scores and anomaly map at input size) on a
3x512x1024 image with random weights, as in the reference measurement of the published
detectron2 model (median of 3 runs after a warm-up, 2 CPU threads, pure-PyTorch deformable
attention): 3.1 s and 3.9 s wall in two runs on an idle machine, peak RSS 2.45-2.5 GB. That model
cannot be installed here (detectron2 is built from source), so the ratio is against those recorded
numbers, measured on a machine of this kind. On CUDA it also times bf16 autocast + channels_last.

    python benchmarks/bench_m2f.py [--size 512 1024] [--runs 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import platform
import resource
import statistics
import time

import torch

from lib.models import build_model

REFERENCE_CPU_SECONDS = (3.1, 3.9)
REFERENCE_CPU_PEAK_RSS_GB = 2.45


def time_forward(model: torch.nn.Module, image: torch.Tensor, runs: int, amp: bool) -> list[float]:
    """Wall seconds of ``runs`` forwards after one warm-up (synchronised on CUDA)."""
    times = []
    for i in range(runs + 1):
        if image.is_cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.inference_mode(), torch.autocast(image.device.type, torch.bfloat16, enabled=amp):
            anomaly, scores = model(image)
        if image.is_cuda:
            torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - start)
    assert anomaly.shape == image.shape[:1] + image.shape[2:] and scores.shape[1] == 19
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs=2, default=(512, 1024), metavar=("H", "W"))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name() if device.type == "cuda" else platform.machine()
    print(f"device {device} ({name}), torch {torch.__version__}, {args.threads} CPU threads, float32 weights")

    torch.manual_seed(0)
    model = build_model("mask2anomaly_r50").eval().to(device)
    image = torch.randn(1, 3, *args.size, device=device)
    fp32 = time_forward(model, image, args.runs, amp=False)
    median = statistics.median(fp32)
    print(f"fp32 test step {args.size[0]}x{args.size[1]}: median {median:.3f} s over {args.runs} runs")
    if device.type == "cpu":
        peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        low, high = REFERENCE_CPU_SECONDS
        print(f"  vs recorded published model {low}-{high} s: {low / median:.2f}x-{high / median:.2f}x")
        print(
            f"  peak RSS {peak_gb:.2f} GB vs recorded {REFERENCE_CPU_PEAK_RSS_GB} GB: "
            f"{REFERENCE_CPU_PEAK_RSS_GB / peak_gb:.2f}x less"
        )
        return
    peak_gb = torch.cuda.max_memory_allocated() / 2**30
    model.to(memory_format=torch.channels_last)
    image = image.contiguous(memory_format=torch.channels_last)
    bf16 = statistics.median(time_forward(model, image, args.runs, amp=True))
    print(f"  peak CUDA memory {peak_gb:.2f} GB")
    print(f"bf16 autocast + channels_last: median {bf16:.3f} s ({median / bf16:.2f}x vs fp32)")


if __name__ == "__main__":
    main()
