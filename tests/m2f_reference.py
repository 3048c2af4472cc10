"""The reference weights of ``tests/fixtures/m2f_*.npz``: the deterministic fill recipe of the
MultiShiftSeg Mask2Former parity data, applied over the stored key/kind/shape list.

Every entry is seeded by ``crc32(key)``; the published model loaded these tensors and produced
the fixture outputs. Entries the recipe keeps at their constructor value are
``num_batches_tracked`` (int64 0) and ``criterion.empty_weight`` (``[1]*NUM_CLASSES + [0.1]``).
"""

from __future__ import annotations

import math
import zlib

import numpy as np
import torch

from lib.labels import NUM_CLASSES
from tests.utils import load_fixture


def _shape(text: str) -> tuple[int, ...]:
    return () if text == "scalar" else tuple(int(x) for x in text.split("x"))


def fill(key: str, kind: str, shape: tuple[int, ...]) -> torch.Tensor | None:
    """The recipe's tensor for one entry, or None where it keeps the constructor value."""
    g = torch.Generator().manual_seed(zlib.crc32(key.encode()))
    if kind == "conv_or_linear_weight":
        return torch.randn(shape, generator=g) * math.sqrt(1.0 / math.prod(shape[1:]))
    if kind == "bias":
        return 0.01 * torch.randn(shape, generator=g)
    if kind == "norm_weight":
        return 1.0 + 0.1 * torch.randn(shape, generator=g)
    if kind == "norm_bias":
        return 0.1 * torch.randn(shape, generator=g)
    if kind == "bn_running_mean":
        return 0.1 * torch.randn(shape, generator=g)
    if kind == "bn_running_var":
        return 1.0 + 0.5 * torch.rand(shape, generator=g)
    if kind == "embedding":
        return (5.0 if "predictor.query_embed" in key else 0.1) * torch.randn(shape, generator=g)
    return None


def layout() -> dict[str, np.ndarray]:
    """The published state dict's columns (key, dtype, shape, kind, storage, fill, checksums)."""
    return load_fixture("m2f_layout")


def reference_state_dict() -> dict[str, torch.Tensor]:
    """All 667 entries of the published checkpoint layout, filled by the recipe."""
    lay = layout()
    out = {}
    for key, kind, shape in zip(lay["key"].tolist(), lay["kind"].tolist(), lay["shape"].tolist()):
        tensor = fill(key, kind, _shape(shape))
        if tensor is None:
            if kind == "bn_num_batches_tracked":
                tensor = torch.zeros((), dtype=torch.int64)
            elif key == "criterion.empty_weight":
                tensor = torch.tensor([1.0] * NUM_CLASSES + [0.1])
            else:
                raise KeyError(f"no fill rule for {key} ({kind})")
        out[key] = tensor
    return out
