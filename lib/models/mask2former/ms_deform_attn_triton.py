"""Multi-scale deformable attention as one fused Triton kernel, forward and backward.

The same operation as :func:`lib.models.mask2former.ms_deform_attn.ms_deform_attn_core` (bilinear
sampling at ``x = loc_x * W - 0.5``, ``y = loc_y * H - 0.5``, zero outside the map, as
``grid_sample`` with ``align_corners=False`` and zero padding; then the attention-weighted sum over
levels x points), without the per-level ``[B*M, D, Lq, P]`` intermediates of the PyTorch path: one
program gathers the four corners of every sampling point for a block of queries of one (batch,
head) and accumulates the weighted sum in registers. Backward recomputes the samples and gives the
gradients to the values (atomic adds: several queries sample the same pixel), to the sampling
locations and to the attention weights (reduced over the head's channels inside the program).

Importing this module imports Triton. Kernels run on CUDA tensors, or on CPU tensors under
Triton's interpreter (``TRITON_INTERPRET=1`` set before this module is imported), which is how the
tests check them against the PyTorch path.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.autograd.function import once_differentiable
from triton.runtime.interpreter import InterpretedFunction

from lib.errors import UserError
from lib.models.mask2former.ms_deform_attn import TRITON_DTYPES, check_spatial_shapes

_MAX_BLOCK_Q = 64


@triton.jit
def _bilinear_setup(loc_ptr, idx, q_mask, h, w):
    """Pixel coordinates of the sampling points ``idx``: the top-left corner (int) and the fractions."""
    loc_x = tl.load(loc_ptr + 2 * idx, mask=q_mask, other=0.0)
    loc_y = tl.load(loc_ptr + 2 * idx + 1, mask=q_mask, other=0.0)
    # Beyond one pixel outside the map every corner is zero; the clamp only keeps the int cast in range.
    x = tl.minimum(tl.maximum(loc_x * w - 0.5, -2.0), w + 1.0)
    y = tl.minimum(tl.maximum(loc_y * h - 0.5, -2.0), h + 1.0)
    x0 = tl.floor(x)
    y0 = tl.floor(y)
    return x0.to(tl.int32), y0.to(tl.int32), x - x0, y - y0


@triton.jit
def _corner_offsets(yi, xi, h, w, start, q_mask, row_stride, col, d_mask):
    """Element offsets ``[BLOCK_Q, BLOCK_D]`` of corner ``(yi, xi)`` of a level and where it is inside."""
    inside = q_mask & (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
    row = (start + yi * w + xi).to(tl.int64) * row_stride
    return row[:, None] + col[None, :], inside[:, None] & d_mask[None, :]


@triton.jit
def _forward_kernel(
    value_ptr,
    shapes_ptr,
    starts_ptr,
    loc_ptr,
    attn_ptr,
    out_ptr,
    n_queries,
    n_values,
    N_HEADS: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    N_LEVELS: tl.constexpr,
    N_POINTS: tl.constexpr,
    BLOCK_Q: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    b = tl.program_id(1) // N_HEADS
    m = tl.program_id(1) % N_HEADS
    q = tl.program_id(0) * BLOCK_Q + tl.arange(0, BLOCK_Q)
    d = tl.arange(0, BLOCK_D)
    q_mask = q < n_queries
    d_mask = d < HEAD_DIM
    row_stride = N_HEADS * HEAD_DIM
    col = (b * n_values).to(tl.int64) * row_stride + m * HEAD_DIM + d
    point_base = ((b * n_queries + q).to(tl.int64) * N_HEADS + m) * (N_LEVELS * N_POINTS)
    acc = tl.zeros((BLOCK_Q, BLOCK_D), dtype=value_ptr.dtype.element_ty)
    for lvl in tl.static_range(N_LEVELS):
        h = tl.load(shapes_ptr + 2 * lvl)
        w = tl.load(shapes_ptr + 2 * lvl + 1)
        start = tl.load(starts_ptr + lvl)
        for p in tl.static_range(N_POINTS):
            idx = point_base + lvl * N_POINTS + p
            a = tl.load(attn_ptr + idx, mask=q_mask, other=0.0)
            x0, y0, fx, fy = _bilinear_setup(loc_ptr, idx, q_mask, h, w)
            o00, k00 = _corner_offsets(y0, x0, h, w, start, q_mask, row_stride, col, d_mask)
            o01, k01 = _corner_offsets(y0, x0 + 1, h, w, start, q_mask, row_stride, col, d_mask)
            o10, k10 = _corner_offsets(y0 + 1, x0, h, w, start, q_mask, row_stride, col, d_mask)
            o11, k11 = _corner_offsets(y0 + 1, x0 + 1, h, w, start, q_mask, row_stride, col, d_mask)
            v00 = tl.load(value_ptr + o00, mask=k00, other=0.0)
            v01 = tl.load(value_ptr + o01, mask=k01, other=0.0)
            v10 = tl.load(value_ptr + o10, mask=k10, other=0.0)
            v11 = tl.load(value_ptr + o11, mask=k11, other=0.0)
            gx = (1 - fx)[:, None]
            gy = (1 - fy)[:, None]
            sampled = gy * (gx * v00 + fx[:, None] * v01) + fy[:, None] * (gx * v10 + fx[:, None] * v11)
            acc += a[:, None] * sampled
    out = ((b * n_queries + q).to(tl.int64) * N_HEADS + m) * HEAD_DIM
    tl.store(out_ptr + out[:, None] + d[None, :], acc, mask=q_mask[:, None] & d_mask[None, :])


@triton.jit
def _backward_kernel(
    value_ptr,
    shapes_ptr,
    starts_ptr,
    loc_ptr,
    attn_ptr,
    grad_out_ptr,
    grad_value_ptr,
    grad_loc_ptr,
    grad_attn_ptr,
    n_queries,
    n_values,
    N_HEADS: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    N_LEVELS: tl.constexpr,
    N_POINTS: tl.constexpr,
    BLOCK_Q: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    b = tl.program_id(1) // N_HEADS
    m = tl.program_id(1) % N_HEADS
    q = tl.program_id(0) * BLOCK_Q + tl.arange(0, BLOCK_Q)
    d = tl.arange(0, BLOCK_D)
    q_mask = q < n_queries
    d_mask = d < HEAD_DIM
    row_stride = N_HEADS * HEAD_DIM
    col = (b * n_values).to(tl.int64) * row_stride + m * HEAD_DIM + d
    point_base = ((b * n_queries + q).to(tl.int64) * N_HEADS + m) * (N_LEVELS * N_POINTS)
    out = ((b * n_queries + q).to(tl.int64) * N_HEADS + m) * HEAD_DIM
    grad_out = tl.load(
        grad_out_ptr + out[:, None] + d[None, :], mask=q_mask[:, None] & d_mask[None, :], other=0.0
    )
    for lvl in tl.static_range(N_LEVELS):
        h = tl.load(shapes_ptr + 2 * lvl)
        w = tl.load(shapes_ptr + 2 * lvl + 1)
        start = tl.load(starts_ptr + lvl)
        for p in tl.static_range(N_POINTS):
            idx = point_base + lvl * N_POINTS + p
            a = tl.load(attn_ptr + idx, mask=q_mask, other=0.0)
            x0, y0, fx, fy = _bilinear_setup(loc_ptr, idx, q_mask, h, w)
            o00, k00 = _corner_offsets(y0, x0, h, w, start, q_mask, row_stride, col, d_mask)
            o01, k01 = _corner_offsets(y0, x0 + 1, h, w, start, q_mask, row_stride, col, d_mask)
            o10, k10 = _corner_offsets(y0 + 1, x0, h, w, start, q_mask, row_stride, col, d_mask)
            o11, k11 = _corner_offsets(y0 + 1, x0 + 1, h, w, start, q_mask, row_stride, col, d_mask)
            v00 = tl.load(value_ptr + o00, mask=k00, other=0.0)
            v01 = tl.load(value_ptr + o01, mask=k01, other=0.0)
            v10 = tl.load(value_ptr + o10, mask=k10, other=0.0)
            v11 = tl.load(value_ptr + o11, mask=k11, other=0.0)
            gx = (1 - fx)[:, None]
            gy = (1 - fy)[:, None]
            top = gx * v00 + fx[:, None] * v01
            bottom = gx * v10 + fx[:, None] * v11
            sampled = gy * top + fy[:, None] * bottom
            tl.store(grad_attn_ptr + idx, tl.sum(grad_out * sampled, axis=1), mask=q_mask)
            weighted = a[:, None] * grad_out
            d_x = gy * (v01 - v00) + fy[:, None] * (v11 - v10)
            d_y = bottom - top
            tl.store(grad_loc_ptr + 2 * idx, tl.sum(weighted * d_x, axis=1) * w, mask=q_mask)
            tl.store(grad_loc_ptr + 2 * idx + 1, tl.sum(weighted * d_y, axis=1) * h, mask=q_mask)
            tl.atomic_add(grad_value_ptr + o00, weighted * (gy * gx), mask=k00)
            tl.atomic_add(grad_value_ptr + o01, weighted * (gy * fx[:, None]), mask=k01)
            tl.atomic_add(grad_value_ptr + o10, weighted * (fy[:, None] * gx), mask=k10)
            tl.atomic_add(grad_value_ptr + o11, weighted * (fy[:, None] * fx[:, None]), mask=k11)


INTERPRETED = isinstance(_forward_kernel, InterpretedFunction)
"""Whether the kernels run on Triton's CPU interpreter (``TRITON_INTERPRET=1`` at import)."""


def _launch_config(value: torch.Tensor, n_queries: int) -> tuple[tuple[int, int], dict[str, int]]:
    """Grid ``(query blocks, B * M)`` and the block sizes (the whole head dimension in one block)."""
    b, _, m, d = value.shape
    block_q = min(_MAX_BLOCK_Q, triton.next_power_of_2(n_queries))
    grid = (triton.cdiv(n_queries, block_q), b * m)
    return grid, {"N_HEADS": m, "HEAD_DIM": d, "BLOCK_Q": block_q, "BLOCK_D": triton.next_power_of_2(d)}


class _MSDeformAttnFunction(torch.autograd.Function):
    """``(value [B,S,M,D], shapes [L,2], starts [L], locations [B,Lq,M,L,P,2], weights [B,Lq,M,L,P])``
    -> ``[B, Lq, M, D]``; every tensor contiguous on one device, shapes/starts int32."""

    @staticmethod
    def forward(ctx, value, shapes, starts, locations, weights):
        b, s, m, d = value.shape
        n_queries, n_levels, n_points = locations.shape[1], locations.shape[3], locations.shape[4]
        out = value.new_empty(b, n_queries, m, d)
        grid, blocks = _launch_config(value, n_queries)
        _forward_kernel[grid](
            value, shapes, starts, locations, weights, out, n_queries, s,
            N_LEVELS=n_levels, N_POINTS=n_points, **blocks,
        )  # fmt: skip
        ctx.save_for_backward(value, shapes, starts, locations, weights)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        value, shapes, starts, locations, weights = ctx.saved_tensors
        n_queries, n_levels, n_points = locations.shape[1], locations.shape[3], locations.shape[4]
        grad_value = torch.zeros_like(value)
        grad_locations = torch.empty_like(locations)
        grad_weights = torch.empty_like(weights)
        grid, blocks = _launch_config(value, n_queries)
        _backward_kernel[grid](
            value, shapes, starts, locations, weights, grad_out.contiguous(),
            grad_value, grad_locations, grad_weights, n_queries, value.shape[1],
            N_LEVELS=n_levels, N_POINTS=n_points, **blocks,
        )  # fmt: skip
        return grad_value, None, None, grad_locations, grad_weights


def ms_deform_attn_triton(
    value: torch.Tensor,
    spatial_shapes: list[tuple[int, int]],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Deformable attention core with the arguments and result of ``ms_deform_attn_core``
    (``[B, Lq, M * D]``), differentiable in ``value``, ``sampling_locations`` and ``attention_weights``.

    All three must share one dtype of ``TRITON_DTYPES`` (float32, float64) and one device: CUDA, or
    the CPU when the kernels run on Triton's interpreter.
    """
    if not value.is_cuda and not INTERPRETED:
        raise UserError(
            f"model.kwargs.deform_attn='triton' runs on CUDA tensors, got a {value.device} tensor "
            "(on a CPU it needs TRITON_INTERPRET=1, slow: use deform_attn=auto or pytorch)"
        )
    dtypes = {value.dtype, sampling_locations.dtype, attention_weights.dtype}
    if len(dtypes) != 1 or value.dtype not in TRITON_DTYPES:
        raise ValueError(
            f"the Triton deformable attention needs one dtype of {TRITON_DTYPES} for value, "
            f"locations and weights, got {sorted(map(str, dtypes))}"
        )
    b, lq, m, n_levels, n_points, _ = sampling_locations.shape
    check_spatial_shapes(value, spatial_shapes, n_levels)
    shapes = torch.tensor(spatial_shapes, dtype=torch.int32).view(n_levels, 2)
    starts = torch.cat([shapes.new_zeros(1), (shapes[:, 0] * shapes[:, 1]).cumsum(0)[:-1].int()])
    out = _MSDeformAttnFunction.apply(
        value.contiguous(),
        shapes.to(value.device),
        starts.to(value.device),
        sampling_locations.contiguous(),
        attention_weights.contiguous(),
    )
    return out.view(b, lq, m * value.shape[-1])
