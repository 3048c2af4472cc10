"""The Triton deformable-attention kernel against the PyTorch path, forward and backward, on Triton's
CPU interpreter (``TRITON_INTERPRET=1``, set in ``conftest.py``); and how the backend is selected.

The interpreter runs every kernel op in Python, about a second per call at these sizes: shapes are
tiny (3 levels, 2-3 heads and points, a few queries), with sampling locations outside the map and
on its borders.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lib.errors import UnknownNameError, UserError
from lib.models import build_model
from lib.models.mask2former import ms_deform_attn
from lib.models.mask2former.ms_deform_attn import MSDeformAttn, deform_attn_core, ms_deform_attn_core

triton_kernel = pytest.importorskip(
    "lib.models.mask2former.ms_deform_attn_triton", reason="triton is not installed (pip install .[triton])"
)
ms_deform_attn_triton = triton_kernel.ms_deform_attn_triton

REPO = Path(__file__).resolve().parents[1]
SHAPES = [(3, 4), (2, 3), (1, 2)]
TOLERANCE = {torch.float64: {"rtol": 1e-12, "atol": 1e-12}, torch.float32: {"rtol": 1e-5, "atol": 1e-6}}


def _inputs(dtype, *, b=2, m=2, d=3, lq=5, p=2, seed=0):
    """Random value/locations/weights; locations span [-0.3, 1.3] (a fifth outside the map), the
    first query samples exactly at pixel corners and beyond the far border."""
    g = torch.Generator().manual_seed(seed)
    s = sum(h * w for h, w in SHAPES)
    value = torch.randn(b, s, m, d, generator=g, dtype=dtype)
    locations = torch.rand(b, lq, m, len(SHAPES), p, 2, generator=g, dtype=dtype) * 1.6 - 0.3
    locations[:, 0, :, :, 0] = torch.tensor([0.0, 1.0], dtype=dtype)
    locations[:, 0, :, :, -1] = torch.tensor([1.5, -2.0], dtype=dtype)
    weights = torch.rand(b, lq, m, len(SHAPES), p, generator=g, dtype=dtype)
    return [t.requires_grad_() for t in (value, locations, weights)]


def _forward_and_grads(core, inputs, grad_out=None):
    out = core(inputs[0], SHAPES, inputs[1], inputs[2])
    grad_out = (
        torch.randn_like(out, generator=torch.Generator().manual_seed(1)) if grad_out is None else grad_out
    )
    return out, torch.autograd.grad(out, inputs, grad_out), grad_out


def test_kernels_run_on_the_interpreter():
    assert triton_kernel.INTERPRETED, "TRITON_INTERPRET=1 must be set before the kernel module is imported"


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_forward_and_gradients_equal_the_pytorch_path(dtype):
    inputs = _inputs(dtype, m=3, p=3, d=5)
    out, grads, grad_out = _forward_and_grads(ms_deform_attn_triton, inputs)
    expected, expected_grads, _ = _forward_and_grads(ms_deform_attn_core, inputs, grad_out)
    assert out.shape == (2, 5, 3 * 5) and out.dtype == dtype
    torch.testing.assert_close(out, expected, **TOLERANCE[dtype])
    for name, grad, want in zip(("value", "locations", "weights"), grads, expected_grads):
        assert grad.dtype == dtype
        torch.testing.assert_close(grad, want, **TOLERANCE[dtype], msg=lambda m, n=name: f"grad {n}: {m}")
    assert expected_grads[1].abs().amax() > 0 and (expected_grads[1] == 0).any()  # some points outside


def test_gradcheck_float64():
    inputs = _inputs(torch.float64, b=1, lq=3)
    assert torch.autograd.gradcheck(
        lambda v, loc, w: ms_deform_attn_triton(v, SHAPES, loc, w), inputs, fast_mode=True
    )


def test_many_queries_span_several_blocks():
    """More queries than one program's block: every block and the ragged last one are written."""
    inputs = _inputs(torch.float32, b=1, m=1, d=2, lq=triton_kernel._MAX_BLOCK_Q + 3, p=1)
    out, grads, grad_out = _forward_and_grads(ms_deform_attn_triton, inputs)
    expected, expected_grads, _ = _forward_and_grads(ms_deform_attn_core, inputs, grad_out)
    torch.testing.assert_close(out, expected, **TOLERANCE[torch.float32])
    for grad, want in zip(grads, expected_grads):
        torch.testing.assert_close(grad, want, **TOLERANCE[torch.float32])


def test_bad_inputs_are_rejected():
    value, locations, weights = _inputs(torch.float32)
    with pytest.raises(ValueError, match="do not match value length 20"):
        ms_deform_attn_triton(value, [(3, 4), (2, 3), (1, 1)], locations, weights)
    with pytest.raises(ValueError, match="needs one dtype of"):
        ms_deform_attn_triton(value, SHAPES, locations.double(), weights)
    with pytest.raises(ValueError, match="needs one dtype of"):
        ms_deform_attn_triton(value.half(), SHAPES, locations.half(), weights.half())


def test_module_with_triton_equals_pytorch():
    """``MSDeformAttn(deform_attn="triton")`` gives the PyTorch module's output and parameter gradients."""
    torch.manual_seed(0)
    reference = MSDeformAttn(d_model=8, n_levels=3, n_heads=2, n_points=2, deform_attn="pytorch")
    kernel = MSDeformAttn(d_model=8, n_levels=3, n_heads=2, n_points=2, deform_attn="triton")
    kernel.load_state_dict(reference.state_dict())
    query, source = torch.randn(1, 4, 8), torch.randn(1, 20, 8)
    reference_points = torch.rand(1, 4, 3, 2)
    outputs = []
    for module in (reference, kernel):
        out = module(query, reference_points, source, SHAPES)
        out.square().sum().backward()
        outputs.append((out, {n: p.grad for n, p in module.named_parameters()}))
    torch.testing.assert_close(outputs[1][0], outputs[0][0], **TOLERANCE[torch.float32])
    for name, grad in outputs[0][1].items():
        torch.testing.assert_close(outputs[1][1][name], grad, rtol=1e-4, atol=1e-5, msg=name)


def test_core_selection_follows_deform_attn(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert deform_attn_core("auto", cpu) is ms_deform_attn_core
    assert deform_attn_core("auto", cuda) is ms_deform_attn_triton
    assert deform_attn_core("pytorch", cuda) is ms_deform_attn_core
    assert deform_attn_core("triton", cpu) is ms_deform_attn_triton
    assert deform_attn_core("auto", cuda, torch.bfloat16) is ms_deform_attn_core  # not a kernel dtype
    assert deform_attn_core("auto", cuda, torch.float64) is ms_deform_attn_triton
    monkeypatch.setattr(ms_deform_attn, "triton_available", lambda: False)
    assert deform_attn_core("auto", cuda) is ms_deform_attn_core


def test_builders_pass_deform_attn_to_every_layer():
    model = build_model("mask2anomaly_tiny", deform_attn="triton")
    layers = [m for m in model.modules() if isinstance(m, MSDeformAttn)]
    assert layers and {m.deform_attn for m in layers} == {"triton"}
    assert {
        m.deform_attn for m in build_model("mask2anomaly_tiny").modules() if isinstance(m, MSDeformAttn)
    } == {"auto"}


def test_unknown_or_unavailable_backend_is_a_user_error(monkeypatch):
    with pytest.raises(
        UnknownNameError, match=r"model.kwargs.deform_attn='cuda' .*expected one of auto, pytorch, triton"
    ):
        build_model("mask2anomaly_tiny", deform_attn="cuda")
    monkeypatch.setattr(ms_deform_attn, "triton_available", lambda: False)
    with pytest.raises(UserError, match=r"deform_attn='triton' needs the triton package"):
        build_model("mask2anomaly_tiny", deform_attn="triton")
    assert build_model("mask2anomaly_tiny", deform_attn="auto") is not None


def test_cpu_tensors_without_the_interpreter_are_a_user_error(monkeypatch):
    monkeypatch.setattr(triton_kernel, "INTERPRETED", False)
    with pytest.raises(UserError, match="runs on CUDA tensors, got a cpu tensor"):
        value, locations, weights = _inputs(torch.float32)
        ms_deform_attn_triton(value, SHAPES, locations, weights)


_COMPILE_FOR_GPU = """
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from lib.models.mask2former import ms_deform_attn_triton as kernels

assert not kernels.INTERPRETED
constexprs = dict(N_HEADS=8, HEAD_DIM=32, N_LEVELS=3, N_POINTS=4, BLOCK_Q=64, BLOCK_D=32)
for kernel in (kernels._forward_kernel, kernels._backward_kernel):
    names = kernel.arg_names
    signature = {
        n: "constexpr" if n in constexprs else "i32" if n.startswith("n_") else
        "*i32" if n in ("shapes_ptr", "starts_ptr") else "*fp32"
        for n in names
    }
    source = ASTSource(
        fn=kernel, signature=signature, constexprs={(names.index(n),): v for n, v in constexprs.items()}
    )
    assert "cubin" in triton.compile(source, target=GPUTarget("cuda", 80, 32)).asm
print("compiled")
"""


@pytest.mark.slow
def test_kernels_compile_for_a_gpu():
    """The interpreter accepts more than the compiler: both kernels go through Triton's real compiler
    down to a CUDA binary (sm_80, the R50 encoder's shapes), which needs no GPU (about 2 min)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(REPO), env.get("PYTHONPATH"))))
    done = subprocess.run(
        [sys.executable, "-c", _COMPILE_FOR_GPU], env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0 and done.stdout.strip() == "compiled", done.stderr[-3000:]
