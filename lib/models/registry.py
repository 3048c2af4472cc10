"""One name -> builder registry for every model family (``build_model("deeplab_wrn38")``)."""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable

import torch.nn as nn

_BUILDERS: dict[str, Callable[..., nn.Module]] = {}
_MODEL_MODULES = ("lib.models.deeplab", "lib.models.mask2former")


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: register ``builder`` under ``name``; a duplicate name is a programming error."""

    def wrap(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _BUILDERS and _BUILDERS[name] is not builder:
            raise KeyError(f"model name {name!r} is registered twice")
        _BUILDERS[name] = builder
        return builder

    return wrap


def _import_model_modules() -> None:
    for module in _MODEL_MODULES:
        importlib.import_module(module)


def model_names() -> list[str]:
    """All registered model names, sorted."""
    _import_model_modules()
    return sorted(_BUILDERS)


def build_model(name: str, **kwargs: object) -> nn.Module:
    """Build the model registered as ``name`` with keyword arguments ``kwargs``.

    An unknown name is a ``KeyError`` that lists the known names and the closest one.
    """
    _import_model_modules()
    if name not in _BUILDERS:
        close = difflib.get_close_matches(name, list(_BUILDERS), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise KeyError(f"unknown model {name!r}.{hint} Known models: {', '.join(sorted(_BUILDERS))}")
    return _BUILDERS[name](**kwargs)
