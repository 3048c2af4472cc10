"""One name -> builder registry for every model family (``build_model("deeplab_wrn38")``)."""

from __future__ import annotations

from collections.abc import Callable

import torch.nn as nn

from lib.registry import Registry

MODELS: Registry[Callable[..., nn.Module]] = Registry(
    "model", modules=("lib.models.deeplab", "lib.models.mask2former")
)
register_model = MODELS.register
model_names = MODELS.names


def build_model(name: str, **kwargs: object) -> nn.Module:
    """Build the model registered as ``name`` with keyword arguments ``kwargs``.

    An unknown name is a ``KeyError`` that lists the known names and the closest one.
    """
    return MODELS.get(name)(**kwargs)
