"""Mixed precision: ``train.amp_dtype`` (bf16 | fp16 | none) -> autocast context and grad scaler.

Autocast runs on CUDA only; CPU runs stay float32 whatever the config says, so tests and the
ToyShift demo are exact and reproducible. fp16 needs a ``GradScaler``; bf16 has float32's range
and does not.
"""

from __future__ import annotations

import contextlib

import torch

from lib.config import ConfigError

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "none": None}


def resolve_amp_dtype(name: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``name`` on ``device`` (None = full precision)."""
    if name not in AMP_DTYPES:
        raise ConfigError(f"unknown train.amp_dtype {name!r}; expected one of {', '.join(AMP_DTYPES)}")
    return AMP_DTYPES[name] if device.type == "cuda" else None


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` on ``device`` with ``dtype``, or a no-op when ``dtype`` is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def make_grad_scaler(device: torch.device, dtype: torch.dtype | None) -> torch.amp.GradScaler | None:
    """A ``GradScaler`` for fp16 on CUDA, None otherwise."""
    if dtype is torch.float16:
        return torch.amp.GradScaler(device.type)
    return None
