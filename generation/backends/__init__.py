"""Step 5 of CG-Aug: image synthesis backends behind one small interface and a name registry.

A backend turns an ADE20K-palette condition map into an image of the same size::

    backend.render(condition_rgb [H, W, 3] uint8, prompt, negative_prompt, seed) -> [H, W, 3] uint8

``controlnet`` is Stable Diffusion 1.5 with a segmentation ControlNet (diffusers); ``procedural`` is
the ToyShift renderer, which runs on a CPU in milliseconds.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from typing import Protocol

import numpy as np

from generation.config import GenerationConfig


class SynthesisBackend(Protocol):
    """What the pipeline needs from a backend."""

    name: str

    def render(self, condition_rgb: np.ndarray, prompt: str, negative_prompt: str, seed: int) -> np.ndarray:
        """Return an ``[H, W, 3]`` uint8 RGB image for the ``[H, W, 3]`` uint8 condition map."""
        ...


BackendBuilder = Callable[[GenerationConfig], SynthesisBackend]
_BUILDERS: dict[str, BackendBuilder] = {}
_BACKEND_MODULES = {
    "controlnet": "generation.backends.controlnet",
    "procedural": "generation.backends.procedural",
}


def register_backend(name: str) -> Callable[[BackendBuilder], BackendBuilder]:
    """Decorator: register ``builder(cfg) -> backend`` under ``name``."""

    def wrap(builder: BackendBuilder) -> BackendBuilder:
        _BUILDERS[name] = builder
        return builder

    return wrap


def backend_names() -> list[str]:
    """Names accepted by :func:`build_backend`."""
    return sorted(_BACKEND_MODULES)


def build_backend(name: str, cfg: GenerationConfig) -> SynthesisBackend:
    """Build the backend ``name`` from its config section; an unknown name lists the known ones."""
    if name not in _BACKEND_MODULES:
        close = difflib.get_close_matches(name, list(_BACKEND_MODULES), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise KeyError(f"unknown generation backend {name!r}.{hint} Known: {', '.join(backend_names())}")
    importlib.import_module(_BACKEND_MODULES[name])
    return _BUILDERS[name](cfg)
