"""Does every GPU-only path of the project run, how fast, and how close to float32? One command.

Nothing CUDA-specific runs on a CPU: bf16/fp16 autocast and the fp16 GradScaler in the trainer,
channels-last, the real-size models at Cityscapes resolution, the ControlNet pipeline and SAM at
their published sizes. This script checks and times all of it in one go, so that one run on a GPU
machine answers everything:

====================  ==========================================================================
check                 what it does (sizes on a GPU; ``--smoke``: tiny inputs, light models, CPU)
====================  ==========================================================================
``env``               torch / CUDA / cuDNN versions, device, bf16 support, bf16 and fp32 matmul rate
``deeplab``           ``deeplab_wrn38`` forward at 1024x2048: strict fp32 vs TF32 vs bf16 autocast +
                      channels-last (score and logit errors, times); one ``rcl`` stage-2 train step
                      (the trainer's own ``train_one_epoch``) on 2+2 images at 700x700 in bf16 and
                      in fp16 with GradScaler (finite loss, s/step, peak memory)
``m2f``               ``mask2anomaly_r50`` forward at 1024x2048 as in ``bench_m2f.py`` (strict fp32,
                      TF32, bf16 + channels-last) and one ``m2f_rcl`` stage-2 step in bf16
``deform_attn``       Mask2Former's deformable attention, PyTorch path vs the Triton kernel: the op
                      at the R50 encoder's shapes for a 2+2 batch of 700x700 crops (forward, forward
                      + backward: times, peak memory, output and gradient errors), then
                      ``mask2anomaly_r50``'s strict-fp32 forward at 1024x2048 and a stage-2 step in
                      bf16 on 2+2 crops of 700x700 with each core (``--smoke``: the kernel runs on
                      Triton's CPU interpreter, tiny shapes)
``trainer``           ``lib.engine.trainer.fit`` (2 epochs = both stages, 3 iterations each, with
                      validation and checkpoints) on a tiny fixture tree with ``deeplab_wrn_light``
                      under ``train.amp_dtype`` bf16 and fp16
``evaluator``         ``evaluate_model`` on a tiny RoadAnomaly21 tree: CUDA strict fp32 metrics
                      equal to the CPU run's within 1e-6; bf16 differences reported
``controlnet``        ``bench_generation``'s real-size SD-1.5 + ControlNet (random weights built on
                      the GPU, loaded by the ``controlnet`` backend), fp16, 512x1024 control map;
                      s/step and fixed cost per image from 1- and 10-step renders
``sam``               SAM ViT-H (random weights) through ``load_sam``, box prompt on 1024x2048
====================  ==========================================================================

Each check runs in its own process (a CUDA error cannot poison the next check; peak memory is per
check) under its own time limit, all of them within ``--budget`` seconds (default 480). A failure
or time-out is recorded and the next check runs. The end of the output is a summary table;
``OUT/gpu_check.json`` holds every number and ``OUT/gpu_check.log`` every check's output.
``--smoke`` runs the same code on a CPU with tiny inputs and the light models
(``deeplab_wrn_light``, ``mask2anomaly_tiny``, the narrow SD pipeline, a tiny SAM); the CUDA-only
parts report "skipped: no CUDA". ``tests/test_gpu_check_smoke.py`` runs that.

How to run it on a GPU machine
------------------------------
With the project installed (``pip install -e '.[gen]'``) it is one command:
``python -m benchmarks.gpu_check --out OUT``. A GPU machine that has CUDA torch and the rest of the
dependencies but no ``diffusers`` or ``cityscapesscripts`` (``lib.labels`` imports it), and cannot
reach a package index, needs those two brought along as pure-Python wheels. Download them once,
on a machine with network access, in the repository root (``/.whl/`` is in ``.gitignore``)::

    python -m pip download --no-deps --only-binary=:all: --python-version 3.12 \\
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \\
        -d .whl diffusers==0.42.1 cityscapesScripts==2.3.0

(``diffusers`` needs nothing else a CUDA torch machine lacks; of ``cityscapesScripts`` only
``cityscapesscripts.helpers.labels`` is imported, which needs nothing else). Copy the repository
with its ``.whl/`` folder to the GPU machine and run, in its root, :data:`RUN_COMMAND`
(``python -m benchmarks.gpu_check --print-command`` prints it): it installs the wheels into
``/tmp/site``, puts that and the repository on ``PYTHONPATH`` and runs every check into ``OUT``
(default ``gpu_check_out``)::

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \\
        --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD || exit;
    export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 MPLBACKEND=Agg; nvidia-smi -L;
    python3 -m benchmarks.gpu_check --out "${OUT:-gpu_check_out}"

The output ends with the summary table; ``OUT/gpu_check.json`` and ``OUT/gpu_check.log`` hold the
rest. To rerun only some checks (say after a fix): ``--checks deeplab,m2f``. On a CPU:
``python -m benchmarks.gpu_check --out /tmp/gc --smoke`` (``python benchmarks/gpu_check.py`` works
too; each check's process gets the repository on ``PYTHONPATH``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import torch

REPO = Path(__file__).resolve().parents[1]
SKIPPED_NO_CUDA = "skipped: no CUDA"
BF16_REL_TOLERANCE = 0.05
"""Largest accepted relative L2 error of a bf16 output against strict fp32 (random weights)."""
METRIC_TOLERANCE = 1e-6
RUN_COMMAND = (
    "python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade "
    "--target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD || exit; "
    "export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 MPLBACKEND=Agg; nvidia-smi -L; "
    'python3 -m benchmarks.gpu_check --out "${OUT:-gpu_check_out}"'
)
"""One shell line for a GPU machine without a package index, run in the repository root with the
two wheels in ``.whl/``; see the module docstring."""


@dataclass
class Context:
    """What a check gets: sizes (``smoke``), the device, a scratch folder, and where numbers go."""

    smoke: bool
    device: torch.device
    work: Path
    numbers: dict[str, object] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def record(self, key: str, value: object) -> None:
        self.numbers[key] = round(value, 6) if isinstance(value, float) else value

    def skip(self, what: str) -> None:
        self.notes.append(f"{what}: {SKIPPED_NO_CUDA}")


class CheckFailed(AssertionError):
    """A check ran but its result is wrong (non-finite, beyond tolerance)."""


def require(ok: bool, message: str) -> None:
    if not ok:
        raise CheckFailed(message)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def median_seconds(fn: Callable[[], object], device: torch.device, runs: int) -> tuple[float, object]:
    """Median wall seconds of ``runs`` calls of ``fn`` after one warm-up call, and the last result."""
    out = fn()
    times = []
    for _ in range(runs):
        synchronize(device)
        start = time.perf_counter()
        out = fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2], out


def reset_peak(ctx: Context) -> None:
    if ctx.cuda:
        torch.cuda.reset_peak_memory_stats()


def peak_gb(ctx: Context) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if ctx.cuda else None


@contextlib.contextmanager
def strict_fp32() -> Iterator[None]:
    """TF32 off for cuDNN convolutions and matmuls (true float32 reference on Ampere and later)."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def errors(ref: torch.Tensor, out: torch.Tensor) -> dict[str, float]:
    """Max absolute and relative L2 error of ``out`` against ``ref`` (both taken in float64)."""
    ref, out = ref.double(), out.double()
    return {
        "max_abs": float((out - ref).abs().max()),
        "rel_l2": float((out - ref).norm() / ref.norm().clamp_min(1e-30)),
    }


def compare_forward_precisions(
    ctx: Context, model: torch.nn.Module, size: tuple[int, int], runs: int
) -> None:
    """Strict fp32 vs TF32 (CUDA) vs bf16 autocast + channels-last: times and output errors."""
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(0)).to(ctx.device)

    def forward(
        amp: torch.dtype | None, inp: torch.Tensor
    ) -> Callable[[], tuple[torch.Tensor, torch.Tensor]]:
        def run() -> tuple[torch.Tensor, torch.Tensor]:
            with (
                torch.inference_mode(),
                torch.autocast(ctx.device.type, amp or torch.float32, enabled=amp is not None),
            ):
                anomaly, logits = model(inp)
            return anomaly.float(), logits.float()

        return run

    reset_peak(ctx)
    with strict_fp32():
        t32, (anomaly_ref, logits_ref) = median_seconds(forward(None, x), ctx.device, runs)
    require(
        bool(torch.isfinite(anomaly_ref).all() and torch.isfinite(logits_ref).all()), "fp32 output not finite"
    )
    ctx.record("input_hw", list(size))
    ctx.record("fp32_s", t32)
    ctx.record("fp32_peak_gb", peak_gb(ctx))
    if ctx.cuda:
        ttf32, (anomaly, logits) = median_seconds(forward(None, x), ctx.device, runs)
        ctx.record("tf32_s", ttf32)
        ctx.record("tf32_anomaly_err", errors(anomaly_ref, anomaly))
    else:
        ctx.skip("TF32 timing")
    model.to(memory_format=torch.channels_last)
    xcl = x.contiguous(memory_format=torch.channels_last)
    reset_peak(ctx)
    tbf, (anomaly, logits) = median_seconds(forward(torch.bfloat16, xcl), ctx.device, runs)
    model.to(memory_format=torch.contiguous_format)
    ctx.record("bf16_channels_last_s", tbf)
    ctx.record("bf16_speedup_vs_fp32", t32 / tbf)
    ctx.record("bf16_peak_gb", peak_gb(ctx))
    anomaly_err, logits_err = errors(anomaly_ref, anomaly), errors(logits_ref, logits)
    ctx.record("bf16_anomaly_err", anomaly_err)
    ctx.record("bf16_logits_err", logits_err)
    ctx.record("bf16_argmax_agreement", float((logits.argmax(1) == logits_ref.argmax(1)).double().mean()))
    require(bool(torch.isfinite(anomaly).all()), "bf16 anomaly score not finite")
    worst = max(anomaly_err["rel_l2"], logits_err["rel_l2"])
    require(worst < BF16_REL_TOLERANCE, f"bf16 relative L2 error {worst:.3g} >= {BF16_REL_TOLERANCE}")


def paired_batch(pairs: int, size: tuple[int, int]) -> dict[str, torch.Tensor]:
    """``pairs`` originals + ``pairs`` generated images (random) with fixture trainId labels that
    hold every class, ignore and an anomaly square."""
    from tests.data_fixtures import train_label

    g = torch.Generator().manual_seed(1)
    labels = torch.stack(
        [torch.from_numpy(train_label(*size, 7 + i, anomaly=True)) for i in range(2 * pairs)]
    )
    images = torch.randn(2 * pairs, 3, *size, generator=g)
    return {
        "image": images[:pairs],
        "aug_image": images[pairs:],
        "label": labels[:pairs],
        "aug_label": labels[pairs:],
    }


def time_train_steps(
    ctx: Context,
    model: torch.nn.Module,
    cfg: object,
    batch: dict[str, torch.Tensor],
    *,
    amp: str,
    bn_train_mode: bool,
    runs: int,
    tag: str = "",
) -> None:
    """Stage-2 steps of ``cfg``'s train step through the trainer's ``train_one_epoch``: one warm-up
    step, then ``runs`` timed steps; records s/step, loss terms, peak memory (and the fp16 scale)
    under ``train_<amp>[_<tag>]_*``."""
    from lib.engine.optim import build_optimizer
    from lib.engine.precision import AMP_DTYPES, make_grad_scaler
    from lib.engine.stages import apply_stage, set_train_mode, stages_from_config
    from lib.engine.steps import build_train_step
    from lib.engine.trainer import train_one_epoch

    stage = stages_from_config(cfg)[-1]
    apply_stage(model, stage)
    set_train_mode(model, bn_train_mode=bn_train_mode)
    step = build_train_step(cfg)
    optimizer = build_optimizer(model, stage)
    dtype = AMP_DTYPES[amp] if ctx.cuda else None
    scaler = make_grad_scaler(ctx.device, dtype)
    channels_last = ctx.cuda
    if channels_last:
        model.to(memory_format=torch.channels_last)

    def steps(n: int) -> dict[str, float]:
        means, _ = train_one_epoch(
            model,
            step,
            [batch] * n,
            optimizer,
            stage=stage,
            epoch=0,
            device=ctx.device,
            amp_dtype=dtype,
            scaler=scaler,
            channels_last=channels_last,
            log_interval=10**6,
            progress=False,
        )
        return means

    steps(1)
    reset_peak(ctx)
    synchronize(ctx.device)
    start = time.perf_counter()
    means = steps(runs)
    synchronize(ctx.device)
    key = f"train_{amp if ctx.cuda else 'fp32'}" + (f"_{tag}" if tag else "")
    ctx.record(f"{key}_s_per_step", (time.perf_counter() - start) / runs)
    ctx.record(f"{key}_terms", {k: round(v, 5) for k, v in means.items()})
    ctx.record(f"{key}_peak_gb", peak_gb(ctx))
    ctx.record(
        f"{key}_batch",
        f"{batch['image'].shape[0]}+{batch['aug_image'].shape[0]} at {list(batch['image'].shape[-2:])}",
    )
    if scaler is not None:
        ctx.record(f"{key}_grad_scale", float(scaler.get_scale()))
    model.to(memory_format=torch.contiguous_format)


def check_env(ctx: Context) -> None:
    """Versions, device and a matmul rate (bf16 and fp32) as a sanity figure for the card."""
    import numpy as np

    ctx.record("python", platform.python_version())
    ctx.record("torch", torch.__version__)
    ctx.record("numpy", np.__version__)
    for name in ("diffusers", "transformers", "cityscapesscripts"):
        try:
            module = __import__(name)
            ctx.record(name, getattr(module, "__version__", "installed"))
        except ImportError as err:
            ctx.record(name, f"missing: {err}")
    ctx.record("cuda_available", torch.cuda.is_available())
    if not ctx.cuda:
        ctx.skip("CUDA versions, device, bf16 support, matmul rate")
        return
    props = torch.cuda.get_device_properties(ctx.device)
    ctx.record("cuda", torch.version.cuda)
    ctx.record("cudnn", torch.backends.cudnn.version())
    ctx.record("device", torch.cuda.get_device_name(ctx.device))
    ctx.record("capability", list(torch.cuda.get_device_capability(ctx.device)))
    ctx.record("memory_gb", props.total_memory / 2**30)
    ctx.record("gpus", torch.cuda.device_count())
    ctx.record("bf16_supported", torch.cuda.is_bf16_supported())
    ctx.record("cudnn_allow_tf32_default", torch.backends.cudnn.allow_tf32)
    ctx.record("matmul_allow_tf32_default", torch.backends.cuda.matmul.allow_tf32)
    n = 8192
    for dtype in (torch.bfloat16, torch.float32):
        a = torch.randn(n, n, device=ctx.device, dtype=dtype)
        b = torch.randn(n, n, device=ctx.device, dtype=dtype)
        with strict_fp32():
            seconds, _ = median_seconds(lambda a=a, b=b: a @ b, ctx.device, 5)
        ctx.record(f"matmul_{str(dtype).removeprefix('torch.')}_tflops", 2 * n**3 / seconds / 1e12)
    require(torch.cuda.is_bf16_supported(), "bf16 not supported on this GPU")
    for name in ("diffusers", "cityscapesscripts"):
        require(
            not str(ctx.numbers[name]).startswith("missing"),
            f"{name} is not importable: install its wheel (see the module docstring)",
        )


def check_deeplab(ctx: Context) -> None:
    """DeepLabv3+ WRN38: forward precisions at 1024x2048, ``rcl`` train steps in bf16 and fp16."""
    from lib.config import Config, load_config
    from lib.models import build_model

    name = "deeplab_wrn_light" if ctx.smoke else "deeplab_wrn38"
    ctx.record("model", name)
    torch.manual_seed(0)
    model = build_model(name).eval().to(ctx.device)
    compare_forward_precisions(
        ctx, model, (64, 128) if ctx.smoke else (1024, 2048), runs=1 if ctx.smoke else 3
    )
    cfg = load_config(Config, REPO / "exp" / "DeepLab.yaml", [f"model.name={name}"])
    batch = paired_batch(2, (64, 64) if ctx.smoke else (700, 700))
    runs = 1 if ctx.smoke else 3
    time_train_steps(ctx, model, cfg, batch, amp="bf16", bn_train_mode=True, runs=runs)
    if ctx.cuda:
        time_train_steps(ctx, model, cfg, batch, amp="fp16", bn_train_mode=True, runs=runs)
    else:
        ctx.skip("bf16 and fp16 + GradScaler train steps (ran fp32)")


def check_m2f(ctx: Context) -> None:
    """Mask2Anomaly R50: forward precisions at 1024x2048 (``bench_m2f.py``), stage-2 step in bf16."""
    from lib.config import Config, load_config
    from lib.models import build_model

    name = "mask2anomaly_tiny" if ctx.smoke else "mask2anomaly_r50"
    ctx.record("model", name)
    torch.manual_seed(0)
    model = build_model(name).eval().to(ctx.device)
    compare_forward_precisions(
        ctx, model, (64, 128) if ctx.smoke else (1024, 2048), runs=1 if ctx.smoke else 3
    )
    overrides = [f"model.name={name}"] + (["loss.num_points=256"] if ctx.smoke else [])
    cfg = load_config(Config, REPO / "exp" / "M2F.yaml", overrides)
    batch = paired_batch(2, (64, 64) if ctx.smoke else (700, 700))
    time_train_steps(ctx, model, cfg, batch, amp="bf16", bn_train_mode=False, runs=1 if ctx.smoke else 3)
    if not ctx.cuda:
        ctx.skip("bf16 stage-2 step (ran fp32)")


DEFORM_ATTN_OP_TOLERANCE = 1e-5
"""Largest accepted relative L2 error of the Triton kernel's output and gradients against the
PyTorch path (float32; both sum the same terms in different orders)."""


def deform_attn_op_inputs(
    smoke: bool, device: torch.device
) -> tuple[list[tuple[int, int]], list[torch.Tensor]]:
    """Spatial shapes and ``(value, locations, weights)`` of one encoder layer of ``mask2anomaly_r50``
    on 4 crops of 700x700 (levels 1/32, 1/16, 1/8 of the 704x704 padded input; every pixel a query);
    tiny in smoke mode. A tenth of the locations fall outside the map."""
    shapes = [(1, 2), (2, 3), (3, 4)] if smoke else [(22, 22), (44, 44), (88, 88)]
    b, m, d, p = (1, 2, 4, 2) if smoke else (4, 8, 32, 4)
    s = sum(h * w for h, w in shapes)
    g = torch.Generator().manual_seed(0)
    value = torch.randn(b, s, m, d, generator=g)
    locations = torch.rand(b, s, m, len(shapes), p, 2, generator=g) * 1.1 - 0.05
    weights = torch.rand(b, s, m, len(shapes) * p, generator=g).softmax(-1).view(b, s, m, len(shapes), p)
    return shapes, [t.to(device).requires_grad_() for t in (value, locations, weights)]


def set_deform_attn(model: torch.nn.Module, deform_attn: str) -> None:
    """Switch every deformable-attention layer of ``model`` to the core ``deform_attn``."""
    from lib.models.mask2former.ms_deform_attn import MSDeformAttn, check_deform_attn

    for module in model.modules():
        if isinstance(module, MSDeformAttn):
            module.deform_attn = check_deform_attn(deform_attn)


def check_deform_attn(ctx: Context) -> None:
    """Deformable attention, PyTorch path vs Triton kernel: the op (forward, forward + backward) at
    the R50 encoder's training shapes, then Mask2Anomaly's forward and a stage-2 train step."""
    from lib.config import Config, load_config
    from lib.models import build_model
    from lib.models.mask2former.ms_deform_attn import deform_attn_core, ms_deform_attn_core, triton_available

    ctx.record("auto_core", deform_attn_core("auto", ctx.device).__name__)
    if not triton_available():
        require(not ctx.cuda, "triton does not import on this CUDA machine")
        ctx.notes.append("all: skipped: triton is not installed")
        return
    import triton

    from lib.models.mask2former.ms_deform_attn_triton import ms_deform_attn_triton

    ctx.record("triton", triton.__version__)
    require(
        not ctx.cuda or ctx.numbers["auto_core"] == "ms_deform_attn_triton", "auto does not pick the kernel"
    )
    cores = {"pytorch": ms_deform_attn_core, "triton": ms_deform_attn_triton}
    shapes, inputs = deform_attn_op_inputs(ctx.smoke, ctx.device)
    ctx.record("op_shapes", {"value": list(inputs[0].shape), "levels": shapes, "points": inputs[2].shape[-1]})
    grad_out = torch.randn(*inputs[0].shape[:2], inputs[0].shape[2] * inputs[0].shape[3], device=ctx.device)
    runs = 1 if ctx.smoke else 5
    results = {}
    for name, core in cores.items():

        def forward(core=core) -> torch.Tensor:
            with torch.no_grad():
                return core(inputs[0], shapes, inputs[1], inputs[2])

        def train(core=core) -> tuple[torch.Tensor, ...]:
            out = core(inputs[0], shapes, inputs[1], inputs[2])
            return (out.detach(), *torch.autograd.grad(out, inputs, grad_out))

        reset_peak(ctx)
        ctx.record(f"op_forward_{name}_s", median_seconds(forward, ctx.device, runs)[0])
        ctx.record(f"op_forward_{name}_peak_gb", peak_gb(ctx))
        reset_peak(ctx)
        seconds, results[name] = median_seconds(train, ctx.device, runs)
        ctx.record(f"op_train_{name}_s", seconds)
        ctx.record(f"op_train_{name}_peak_gb", peak_gb(ctx))
    for what in ("forward", "train"):
        ctx.record(
            f"op_{what}_speedup", ctx.numbers[f"op_{what}_pytorch_s"] / ctx.numbers[f"op_{what}_triton_s"]
        )
    worst = 0.0
    for what, ref, out in zip(("out", "grad_value", "grad_locations", "grad_weights"), *results.values()):
        err = errors(ref, out)
        ctx.record(f"op_{what}_err", err)
        worst = max(worst, err["rel_l2"])
    require(worst < DEFORM_ATTN_OP_TOLERANCE, f"kernel vs PyTorch path: relative L2 error {worst:.3g}")

    name = "mask2anomaly_tiny" if ctx.smoke else "mask2anomaly_r50"
    ctx.record("model", name)
    torch.manual_seed(0)
    model = build_model(name, deform_attn="pytorch").eval().to(ctx.device)
    size = (32, 64) if ctx.smoke else (1024, 2048)
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(0)).to(ctx.device)
    outputs = {}
    for core in cores:
        set_deform_attn(model, core)
        reset_peak(ctx)
        with torch.inference_mode(), strict_fp32():
            seconds, outputs[core] = median_seconds(lambda: model(x), ctx.device, runs=1 if ctx.smoke else 3)
        ctx.record(f"forward_fp32_{core}_s", seconds)
        ctx.record(f"forward_fp32_{core}_peak_gb", peak_gb(ctx))
    ctx.record("forward_input_hw", list(size))
    ctx.record(
        "forward_speedup", ctx.numbers["forward_fp32_pytorch_s"] / ctx.numbers["forward_fp32_triton_s"]
    )
    ctx.record("forward_anomaly_err", errors(outputs["pytorch"][0], outputs["triton"][0]))
    ctx.record("forward_logits_err", errors(outputs["pytorch"][1], outputs["triton"][1]))
    require(all(bool(torch.isfinite(t).all()) for t in outputs["triton"]), "kernel forward not finite")
    overrides = [f"model.name={name}"] + (["loss.num_points=256"] if ctx.smoke else [])
    cfg = load_config(Config, REPO / "exp" / "M2F.yaml", overrides)
    batch = paired_batch(1 if ctx.smoke else 2, (32, 32) if ctx.smoke else (700, 700))
    start = {k: v.clone() for k, v in model.state_dict().items()}
    for core in cores:  # the same steps from the same weights with each core
        model.load_state_dict(start)
        set_deform_attn(model, core)
        torch.manual_seed(0)
        time_train_steps(
            ctx, model, cfg, batch, amp="bf16", bn_train_mode=False, runs=1 if ctx.smoke else 3, tag=core
        )
    key = f"train_{'bf16' if ctx.cuda else 'fp32'}"
    ctx.record(
        "train_speedup", ctx.numbers[f"{key}_pytorch_s_per_step"] / ctx.numbers[f"{key}_triton_s_per_step"]
    )
    losses = [ctx.numbers[f"{key}_{core}_terms"]["loss"] for core in cores]
    ctx.record("train_loss_rel_diff", abs(losses[1] - losses[0]) / abs(losses[0]))
    if not ctx.cuda:
        ctx.skip("kernel on the GPU (ran on Triton's CPU interpreter) and the bf16 step (ran fp32)")


def check_trainer(ctx: Context) -> None:
    """``fit`` for both stages on a fixture tree with the light DeepLab under bf16 and fp16."""
    from lib.config import Config, load_config
    from lib.data.benchmarks import build_benchmark
    from lib.data.multishift import MultiShiftPairs
    from lib.engine.distributed import DistInfo
    from lib.engine.steps import build_train_step
    from lib.engine.trainer import LAST, fit
    from lib.models import build_model
    from tests.data_fixtures import write_all_flat_benchmarks, write_cityscapes, write_multishift

    root = ctx.work / "datasets"
    stems = write_cityscapes(root, per_city=2, size=(48, 96))
    write_multishift(root, stems, variants=2, size=(48, 96))
    write_all_flat_benchmarks(root)
    info = DistInfo(0, 1, ctx.device)
    for amp in ("bf16", "fp16") if ctx.cuda else ("bf16",):
        cfg = load_config(
            Config,
            REPO / "exp" / "DeepLab.yaml",
            [
                f"data.root={root}",
                f"output_root={ctx.work / 'runs'}",
                f"id={amp}",
                "model.name=deeplab_wrn_light",
                f"train.amp_dtype={amp}",
                "train.batch_size=2",
                "train.epochs=2",
                "train.warmup_epoch=1",
                "train.iters_per_epoch=3",
                "train.lr=1e-3",
                "train.lr_update=1e-3",
                "data.num_workers=0",
                f"data.crop_size={64 if ctx.smoke else 256}",
            ],
        )
        torch.manual_seed(0)
        reset_peak(ctx)
        start = time.perf_counter()
        summary = fit(
            cfg,
            model=build_model("deeplab_wrn_light"),
            train_set=MultiShiftPairs(
                root / "cityscapes", root / "multishift_cityscapes", mixup_max=0.3, seed=0
            ),
            val_set=build_benchmark(cfg.data.val_ds, root=root),
            step=build_train_step(cfg),
            info=info,
            progress=False,
        )
        ctx.record(f"fit_{amp}_s", time.perf_counter() - start)
        ctx.record(f"fit_{amp}_peak_gb", peak_gb(ctx))
        ctx.record(f"fit_{amp}_val", {k: round(float(v), 5) for k, v in summary["last_metrics"].items()})
        last = torch.load(cfg.run_dir / LAST, weights_only=True)
        has_scaler = last["scaler"] is not None
        ctx.record(f"fit_{amp}_checkpoint_has_scaler", has_scaler)
        if ctx.cuda:
            require(has_scaler == (amp == "fp16"), f"{amp}: GradScaler state in last.pth is {has_scaler}")
        require(
            (last["epoch"], last["stage"]) == (1, 2),
            f"{amp}: last.pth at epoch/stage {last['epoch']}/{last['stage']}",
        )
    if not ctx.cuda:
        ctx.skip("autocast, GradScaler and channels-last in fit (ran fp32)")


def check_evaluator(ctx: Context) -> None:
    """The evaluator's metrics on the device equal a CPU run's (strict fp32); bf16 differences."""
    import copy

    from lib.data.benchmarks import build_benchmark
    from lib.engine.evaluator import Inference, evaluate_model, metric_summary
    from lib.models import build_model
    from lib.scores import get_score
    from tests.data_fixtures import write_all_flat_benchmarks

    root = ctx.work / "datasets"
    write_all_flat_benchmarks(root)
    dataset = build_benchmark("RoadAnomaly21", root=root)
    torch.manual_seed(0)
    model = build_model("deeplab_wrn_light").eval()
    cpu = torch.device("cpu")

    def evaluate(
        net: torch.nn.Module, device: torch.device, amp: torch.dtype | None, channels_last: bool
    ) -> dict[str, float]:
        result = evaluate_model(
            net,
            dataset,
            score="learned",
            score_fn=get_score("learned"),
            inference=Inference(device=device, amp_dtype=amp, channels_last=channels_last),
            progress=False,
        )
        return metric_summary(result)

    reference = evaluate(model, cpu, None, False)
    ctx.record("cpu_metrics", reference)
    on_device = copy.deepcopy(model).to(ctx.device)
    with strict_fp32():
        metrics = evaluate(on_device, ctx.device, None, True)
    diffs = {k: abs(metrics[k] - reference[k]) for k in reference}
    ctx.record("device_fp32_metric_diffs", diffs)
    item = dataset[0]
    with torch.inference_mode(), strict_fp32():
        score_cpu = model(item["image"][None])[0]
        score_dev = on_device(item["image"][None].to(ctx.device))[0].cpu()
    ctx.record("device_fp32_score_err", errors(score_cpu, score_dev))
    require(
        max(diffs.values()) <= METRIC_TOLERANCE,
        f"device fp32 metrics differ from CPU by {max(diffs.values()):.3g}",
    )
    if not ctx.cuda:
        ctx.skip("device run (compared CPU channels-last with CPU)")
        return
    bf16 = evaluate(on_device, ctx.device, torch.bfloat16, True)
    ctx.record("device_bf16_metric_diffs", {k: abs(bf16[k] - reference[k]) for k in reference})


def check_controlnet(ctx: Context) -> None:
    """Real-size SD-1.5 + ControlNet through the ``controlnet`` backend (fp16), s/step."""
    from benchmarks.bench_generation import time_real_controlnet

    numbers = time_real_controlnet(
        ctx.work / "sd",
        device=ctx.device.type,
        dtype="fp16",
        smoke=ctx.smoke,
        steps=2 if ctx.smoke else 10,
        runs=1 if ctx.smoke else 2,
    )
    for key, value in numbers.items():
        ctx.record(key, value)
    if not ctx.cuda:
        ctx.skip("fp16 pipeline (ran fp32)")


def check_sam(ctx: Context) -> None:
    """SAM (ViT-H; tiny in smoke mode) loaded by ``load_sam``: one box prompt on 1024x2048."""
    from benchmarks.bench_generation import time_real_sam

    variant = "tiny" if ctx.smoke else "vit_h"
    for key, value in time_real_sam(
        ctx.work / "sam", variant=variant, device=ctx.device.type, runs=3
    ).items():
        ctx.record(key, value)


@dataclass(frozen=True)
class Check:
    run: Callable[[Context], None]
    budget_s: int


CHECKS = {
    "env": Check(check_env, 45),
    "deeplab": Check(check_deeplab, 100),
    "m2f": Check(check_m2f, 100),
    "deform_attn": Check(check_deform_attn, 150),
    "trainer": Check(check_trainer, 60),
    "evaluator": Check(check_evaluator, 45),
    "controlnet": Check(check_controlnet, 150),
    "sam": Check(check_sam, 60),
}
"""Checks in run order, each with its time limit in seconds (the total is capped by ``--budget``)."""


def run_one(name: str, smoke: bool, result_path: Path) -> None:
    """Run check ``name`` in this process and write its result JSON (status, seconds, numbers)."""
    if smoke:
        torch.set_num_threads(1)  # tiny tensors: on a shared CPU, OpenMP waits cost more than the work
    device = torch.device("cuda" if torch.cuda.is_available() and not smoke else "cpu")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"gpu_check_{name}_") as tmp:
        ctx = Context(smoke=smoke, device=device, work=Path(tmp))
        status, error = "pass", None
        try:
            CHECKS[name].run(ctx)
        except Exception as err:  # recorded, and the parent goes on with the next check
            status = "fail"
            error = f"{type(err).__name__}: {err}"
            traceback.print_exc()
    result = {
        "status": status,
        "seconds": round(time.perf_counter() - start, 2),
        "device": str(device),
        "numbers": ctx.numbers,
        "notes": ctx.notes,
        "error": error,
    }
    result_path.write_text(json.dumps(result, indent=1, default=str))


def child_env(smoke: bool) -> dict[str, str]:
    """The environment of a check's process: the repository importable, no hub access, quiet bars
    (and, in smoke mode, Triton's interpreter)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        TRANSFORMERS_VERBOSITY="error",
        DIFFUSERS_VERBOSITY="error",
        MPLBACKEND="Agg",
        PYTHONUNBUFFERED="1",
    )
    if smoke:
        env["TRITON_INTERPRET"] = "1"  # no GPU: Triton kernels run on the CPU interpreter
    return env


def run_child(name: str, *, limit: float, smoke: bool, scratch: Path, log: TextIO) -> dict[str, object]:
    """Run check ``name`` in a fresh process for at most ``limit`` seconds; append its output to
    ``log``; return its result (a crash or time-out becomes a failed result with the reason)."""
    result_path = scratch / f"{name}.json"
    cmd = [sys.executable, "-m", "benchmarks.gpu_check", "--run-one", name, "--result", str(result_path)]
    cmd += ["--smoke"] if smoke else []
    print(f"[gpu_check] {name} (limit {limit:.0f} s) ...", flush=True)
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd, cwd=REPO, env=child_env(smoke), capture_output=True, text=True, timeout=limit
        )
        output, code = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as err:
        output, code = _text(err.stdout) + _text(err.stderr), None
    seconds = round(time.perf_counter() - start, 2)
    log.write(f"===== {name} ({seconds} s, exit {code}) =====\n{output}\n")
    log.flush()
    if result_path.is_file():
        return json.loads(result_path.read_text()) | {"wall_seconds": seconds}
    if code is None:
        return {"status": "fail", "seconds": seconds, "error": f"timed out after {limit:.0f} s"}
    tail = " | ".join(output.strip().splitlines()[-3:])
    return {"status": "fail", "seconds": seconds, "error": f"exit {code}: {tail}"}


def run_checks(names: list[str], *, out: Path, smoke: bool, budget_s: float) -> dict[str, dict]:
    """Run each check in a subprocess within its limit and the overall ``budget_s``; write
    ``out/gpu_check.json`` (after every check, so a killed run keeps what it measured) and
    ``out/gpu_check.log``; return the results by name."""
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict] = {}
    deadline = time.monotonic() + budget_s
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp, open(out / "gpu_check.log", "w") as log:
        for name in names:
            left = deadline - time.monotonic()
            if left < 10:
                results[name] = {"status": "skipped", "seconds": 0.0, "error": "out of time (--budget)"}
            else:
                limit = min(CHECKS[name].budget_s, left)
                results[name] = run_child(name, limit=limit, smoke=smoke, scratch=Path(tmp), log=log)
                print(f"[gpu_check] {name}: {results[name]['status']} in {results[name]['seconds']} s")
            report = {"smoke": smoke, "checks": results}
            (out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str))
    return results


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data


def summary_table(results: dict[str, dict]) -> str:
    """One line per check: status, seconds, and its numbers (flattened, shortened)."""
    lines = [f"{'check':11s} {'status':7s} {'s':>7s}  numbers / error", "-" * 100]
    for name, r in results.items():
        detail = r.get("error") or ""
        numbers = ", ".join(f"{k}={_short(v)}" for k, v in r.get("numbers", {}).items())
        lines.append(f"{name:11s} {r['status']:7s} {r['seconds']:7.1f}  {detail or numbers}")
        if detail and numbers:
            lines.append(f"{'':27s}{numbers}")
        for note in r.get("notes", []):
            lines.append(f"{'':27s}{note}")
    return "\n".join(lines)


def _short(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_short(v)}" for k, v in value.items()) + "}"
    return str(value)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Run every GPU check of the project in one go.")
    parser.add_argument("--out", type=Path, help="folder for gpu_check.json and gpu_check.log")
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny sizes, light models")
    parser.add_argument("--checks", default=",".join(CHECKS), help=f"comma list of {', '.join(CHECKS)}")
    parser.add_argument("--budget", type=float, default=480.0, help="seconds for all checks together")
    parser.add_argument(
        "--print-command", action="store_true", help="print the one-line command for an offline GPU machine"
    )
    parser.add_argument("--run-one", choices=tuple(CHECKS), help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    return parser


def main(args: argparse.Namespace) -> int:
    """Run the checks; the exit status is 1 if any failed."""
    if args.print_command:
        print(RUN_COMMAND)
        return 0
    if args.run_one:
        run_one(args.run_one, args.smoke, args.result)
        return 0
    if args.out is None:
        raise SystemExit("gpu_check: --out DIR is required")
    names = [n.strip() for n in args.checks.split(",") if n.strip()]
    unknown = [n for n in names if n not in CHECKS]
    if unknown:
        raise SystemExit(f"gpu_check: unknown checks {unknown}; known: {', '.join(CHECKS)}")
    results = run_checks(names, out=args.out, smoke=args.smoke, budget_s=args.budget)
    print(summary_table(results))
    print(f"[gpu_check] results: {args.out / 'gpu_check.json'}, logs: {args.out / 'gpu_check.log'}")
    return int(any(r["status"] == "fail" for r in results.values()))


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
