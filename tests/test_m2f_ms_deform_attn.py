"""Multi-scale deformable attention: the grid_sample path against a naive per-point bilinear loop."""

from __future__ import annotations

import math

import pytest
import torch

from lib.models.mask2former.ms_deform_attn import MSDeformAttn, ms_deform_attn_core

SHAPES = [(3, 4), (2, 3), (1, 2)]


def _naive(value, shapes, locations, weights):
    """Sum over heads/levels/points of weight x bilinear(value) at loc*size - 0.5, zero outside."""
    b, _, m, d = value.shape
    _, lq, _, n_levels, n_points, _ = locations.shape
    starts = [0]
    for h, w in shapes:
        starts.append(starts[-1] + h * w)
    out = []
    for bi in range(b):
        rows = []
        for q in range(lq):
            heads = []
            for hd in range(m):
                acc = value.new_zeros(d)
                for lvl, (h, w) in enumerate(shapes):
                    for p in range(n_points):
                        x = locations[bi, q, hd, lvl, p, 0] * w - 0.5
                        y = locations[bi, q, hd, lvl, p, 1] * h - 0.5
                        x0, y0 = math.floor(x.item()), math.floor(y.item())
                        for yy, xx in ((y0, x0), (y0, x0 + 1), (y0 + 1, x0), (y0 + 1, x0 + 1)):
                            if 0 <= yy < h and 0 <= xx < w:
                                corner = (1 - (x - xx).abs()) * (1 - (y - yy).abs())
                                v = value[bi, starts[lvl] + yy * w + xx, hd]
                                acc = acc + weights[bi, q, hd, lvl, p] * corner * v
                heads.append(acc)
            rows.append(torch.cat(heads))
        out.append(torch.stack(rows))
    return torch.stack(out)


def _inputs(dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    b, m, d, lq, p = 2, 2, 3, 4, 2
    s = sum(h * w for h, w in SHAPES)
    value = torch.randn(b, s, m, d, generator=g, dtype=dtype)
    locations = torch.rand(b, lq, m, len(SHAPES), p, 2, generator=g, dtype=dtype) * 1.4 - 0.2  # some outside
    weights = torch.rand(b, lq, m, len(SHAPES) * p, generator=g, dtype=dtype).softmax(-1)
    weights = weights.view(b, lq, m, len(SHAPES), p)
    return [t.requires_grad_() for t in (value, locations, weights)]


def test_values_and_gradients_match_naive_loop():
    inputs = _inputs()
    fast = ms_deform_attn_core(inputs[0], SHAPES, inputs[1], inputs[2])
    grads_fast = torch.autograd.grad(fast.square().sum(), inputs)
    slow = _naive(inputs[0], SHAPES, inputs[1], inputs[2])
    grads_slow = torch.autograd.grad(slow.square().sum(), inputs)
    assert fast.shape == (2, 4, 2 * 3)
    torch.testing.assert_close(fast, slow, rtol=1e-10, atol=1e-12)
    for gf, gs in zip(grads_fast, grads_slow):
        torch.testing.assert_close(gf, gs, rtol=1e-9, atol=1e-11)


def test_gradcheck():
    inputs = _inputs()
    assert torch.autograd.gradcheck(lambda v, loc, w: ms_deform_attn_core(v, SHAPES, loc, w), inputs)


def test_mismatched_spatial_shapes_are_rejected():
    value, locations, weights = _inputs()
    with pytest.raises(ValueError, match="do not match value length 20"):
        ms_deform_attn_core(value, [(3, 4), (2, 3), (1, 1)], locations, weights)


def test_module_initial_offsets_ring_and_uniform_weights():
    attn = MSDeformAttn(d_model=16, n_levels=2, n_heads=4, n_points=3)
    offsets = attn.sampling_offsets.bias.view(4, 2, 3, 2)
    torch.testing.assert_close(offsets[0, 0], torch.tensor([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0]]))
    torch.testing.assert_close(
        offsets[1, 1], torch.tensor([[0.0, 1.0], [0.0, 2.0], [0.0, 3.0]]), atol=1e-6, rtol=0
    )
    out = attn(torch.randn(1, 5, 16), torch.rand(1, 5, 2, 2), torch.randn(1, 6 + 2, 16), [(2, 3), (1, 2)])
    assert out.shape == (1, 5, 16)
