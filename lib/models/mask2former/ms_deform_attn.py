"""Multi-scale deformable attention (Deformable DETR, Zhu et al. 2021, Sec. 4.1).

Each query attends to ``n_points`` bilinearly sampled locations per head and per level around
its reference point; the sampled values are summed with softmax weights over levels x points.

Two implementations of the core, chosen per module by ``deform_attn`` (``model.kwargs.deform_attn``):

- ``pytorch``: ``F.grid_sample`` (``align_corners=False``, zero padding), the published fallback
  path that produced the reference outputs; it runs on any device. Levels differ in size, so
  sampling takes one ``grid_sample`` per level (all heads and points at once); the weighted sum
  over levels x points is one fused reduction in the published order, which keeps the encoder
  bit-identical to the reference on CPU (the decoder's attention masks are thresholds, so small
  drifts there can flip mask bits).
- ``triton``: the fused kernel of :mod:`lib.models.mask2former.ms_deform_attn_triton` (the
  compiled op of the published model), equal to the PyTorch path to float rounding, with far less
  memory in training.
- ``auto`` (default): ``triton`` for float32/float64 CUDA tensors when Triton is importable, else
  ``pytorch``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from lib.errors import UnknownNameError, UserError

DEFORM_ATTN_BACKENDS = ("auto", "pytorch", "triton")
TRITON_DTYPES = (torch.float32, torch.float64)
"""The dtypes the Triton kernel computes in (the pixel decoder runs in float32 under autocast too)."""


@functools.cache
def triton_available() -> bool:
    """Whether Triton imports here (it ships with CUDA builds of torch; ``pip install .[triton]``)."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def check_deform_attn(name: str) -> str:
    """``name`` if it is a usable backend; an :class:`UnknownNameError` for an unknown one, a
    :class:`UserError` for ``triton`` where Triton is not importable."""
    if name not in DEFORM_ATTN_BACKENDS:
        raise UnknownNameError(
            f"model.kwargs.deform_attn={name!r} is not a deformable-attention backend; "
            f"expected one of {', '.join(DEFORM_ATTN_BACKENDS)}"
        )
    if name == "triton" and not triton_available():
        raise UserError(
            "model.kwargs.deform_attn='triton' needs the triton package, which does not import here; "
            "install it (pip install triton) or use deform_attn=auto or pytorch"
        )
    return name


def deform_attn_core(
    deform_attn: str, device: torch.device, dtype: torch.dtype = torch.float32
) -> Callable[..., torch.Tensor]:
    """The core function that backend ``deform_attn`` runs for values on ``device`` of ``dtype``:
    ``triton`` always takes the kernel, ``auto`` takes it for CUDA values of :data:`TRITON_DTYPES`
    when Triton is importable, anything else the PyTorch path."""
    if deform_attn == "auto":
        kernel_fits = device.type == "cuda" and dtype in TRITON_DTYPES and triton_available()
        deform_attn = "triton" if kernel_fits else "pytorch"
    if deform_attn == "triton":
        from lib.models.mask2former.ms_deform_attn_triton import ms_deform_attn_triton

        return ms_deform_attn_triton
    return ms_deform_attn_core


def check_spatial_shapes(value: torch.Tensor, spatial_shapes: list[tuple[int, int]], n_levels: int) -> None:
    """A ``ValueError`` unless ``spatial_shapes`` has ``n_levels`` levels that tile ``value``'s length."""
    s = value.shape[1]
    if len(spatial_shapes) != n_levels or sum(h * w for h, w in spatial_shapes) != s:
        raise ValueError(
            f"spatial_shapes {spatial_shapes} do not match value length {s} and {n_levels} sampling levels"
        )


def ms_deform_attn_core(
    value: torch.Tensor,
    spatial_shapes: list[tuple[int, int]],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Deformable attention core.

    Args:
        value: ``[B, S, M, D]``, the ``S = Σ_l H_l W_l`` flattened level maps (level-major), ``M``
            heads of ``D`` channels.
        spatial_shapes: ``[(H_l, W_l)]`` per level, in the order of ``value``.
        sampling_locations: ``[B, Lq, M, L, P, 2]`` normalised ``(x, y)`` in ``[0, 1]``.
        attention_weights: ``[B, Lq, M, L, P]``, softmax-normalised over ``L x P``.

    Returns:
        ``[B, Lq, M * D]``.
    """
    b, s, m, d = value.shape
    _, lq, _, n_levels, n_points, _ = sampling_locations.shape
    check_spatial_shapes(value, spatial_shapes, n_levels)
    value = value.permute(0, 2, 3, 1).reshape(b * m, d, s)
    grids = (2 * sampling_locations - 1).transpose(1, 2).reshape(b * m, lq, n_levels, n_points, 2)
    sampled = []
    start = 0
    for lvl, (h, w) in enumerate(spatial_shapes):
        value_l = value[:, :, start : start + h * w].view(b * m, d, h, w)
        start += h * w
        sampled.append(
            F.grid_sample(
                value_l, grids[:, :, lvl], mode="bilinear", padding_mode="zeros", align_corners=False
            )
        )  # [B*M, D, Lq, P]
    weights = attention_weights.transpose(1, 2).reshape(b * m, 1, lq, n_levels * n_points)
    out = (torch.stack(sampled, dim=-2).flatten(-2) * weights).sum(-1)
    return out.view(b, m * d, lq).transpose(1, 2)


class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention module with the published parameter names.

    ``sampling_offsets`` is laid out as (head, level, point, xy); ``attention_weights`` as
    (head, level x point). ``deform_attn`` picks the core (module docstring).
    """

    def __init__(
        self,
        *,
        d_model: int = 256,
        n_levels: int = 3,
        n_heads: int = 8,
        n_points: int = 4,
        deform_attn: str = "auto",
    ) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} must be divisible by n_heads {n_heads}")
        self.d_model, self.n_levels, self.n_heads, self.n_points = d_model, n_levels, n_heads, n_points
        self.deform_attn = check_deform_attn(deform_attn)
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        """Deformable DETR's init: offsets start on a ring of directions, one per head."""
        nn.init.zeros_(self.sampling_offsets.weight)
        thetas = torch.arange(self.n_heads, dtype=torch.float32) * (2.0 * math.pi / self.n_heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid = (grid / grid.abs().max(-1, keepdim=True)[0]).view(self.n_heads, 1, 1, 2)
        grid = grid.repeat(1, self.n_levels, self.n_points, 1)
        grid = grid * torch.arange(1, self.n_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.view(-1))
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for proj in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(proj.weight)
            nn.init.zeros_(proj.bias)

    def forward(
        self,
        query: torch.Tensor,
        reference_points: torch.Tensor,
        input_flatten: torch.Tensor,
        spatial_shapes: list[tuple[int, int]],
    ) -> torch.Tensor:
        """``query [B, Lq, C]``, ``reference_points [B, Lq, L, 2]`` (normalised x, y),
        ``input_flatten [B, S, C]`` -> ``[B, Lq, C]``."""
        b, lq, _ = query.shape
        m, n_levels, n_points = self.n_heads, self.n_levels, self.n_points
        value = self.value_proj(input_flatten).view(b, input_flatten.shape[1], m, self.d_model // m)
        offsets = self.sampling_offsets(query).view(b, lq, m, n_levels, n_points, 2)
        weights = self.attention_weights(query).view(b, lq, m, n_levels * n_points).softmax(-1)
        weights = weights.view(b, lq, m, n_levels, n_points)
        normalizer = torch.stack(
            [
                torch.stack([torch.full((), size, dtype=query.dtype, device=query.device) for size in (w, h)])
                for h, w in spatial_shapes
            ]
        )  # [L, 2] as (W, H); built from the sizes (symbolic under torch.export), not a constant
        locations = (
            reference_points[:, :, None, :, None, :] + offsets / normalizer[None, None, None, :, None, :]
        )
        core = deform_attn_core(self.deform_attn, value.device, value.dtype)
        return self.output_proj(core(value, spatial_shapes, locations, weights))
