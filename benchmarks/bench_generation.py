"""How fast is CG-Aug generation per backend? Prints images/s for the procedural backend at Cityscapes
size (1024x2048) and for a tiny random SD + ControlNet pipeline (2 steps, 64x128 control map), on this
machine's device, with versions. Run from the repository root: ``python -m benchmarks.bench_generation``.
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from generation.backends import build_backend  # noqa: E402
from generation.condition import condition_from_train_ids  # noqa: E402
from generation.config import GenerationConfig  # noqa: E402
from generation.tiny_models import save_tiny_sd_controlnet  # noqa: E402


def street_label(h: int, w: int) -> np.ndarray:
    label = np.full((h, w), 10, dtype=np.uint8)
    label[h // 4 : h // 2] = 2
    label[h // 2 :] = 0
    return label


def time_backend(backend, cond: np.ndarray, n: int) -> float:
    backend.render(cond, "An image taken by dash cam in Paris in a foggy night.", "blurry", 0)
    start = time.perf_counter()
    for i in range(n):
        backend.render(cond, "An image taken by dash cam in Paris in a foggy night.", "blurry", i + 1)
    return n / (time.perf_counter() - start)


def main() -> None:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"python {platform.python_version()}  torch {torch.__version__}  device {device}")
    proc = build_backend("procedural", GenerationConfig(backend="procedural", device="cpu"))
    rate = time_backend(proc, condition_from_train_ids(street_label(1024, 2048)), 3)
    print(f"procedural  cpu   1024x2048            {rate:8.2f} images/s")
    with tempfile.TemporaryDirectory() as tmp:
        save_tiny_sd_controlnet(Path(tmp))
        cfg = GenerationConfig(device=device)
        cfg.controlnet.base_model, cfg.controlnet.controlnet = f"{tmp}/base", f"{tmp}/controlnet"
        cfg.controlnet.steps, cfg.controlnet.resolution, cfg.controlnet.dtype = 2, 64, "fp32"
        rate = time_backend(
            build_backend("controlnet", cfg), condition_from_train_ids(street_label(64, 128)), 5
        )
        print(f"controlnet  {device:5s} tiny random, 2 steps {rate:8.2f} images/s  (fp32, 64x128)")


if __name__ == "__main__":
    main()
