"""Step 5 of CG-Aug: image synthesis backends behind one small interface and a name registry.

A backend turns an ADE20K-palette condition map into an image of the same size::

    backend.render(condition_rgb [H, W, 3] uint8, prompt, negative_prompt, seed) -> [H, W, 3] uint8

``controlnet`` is Stable Diffusion 1.5 with a segmentation ControlNet (diffusers); ``procedural`` is
the ToyShift renderer, which runs on a CPU in milliseconds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np

from generation.config import GenerationConfig
from lib.registry import Registry


class SynthesisBackend(Protocol):
    """What the pipeline needs from a backend."""

    name: str

    def render(self, condition_rgb: np.ndarray, prompt: str, negative_prompt: str, seed: int) -> np.ndarray:
        """Return an ``[H, W, 3]`` uint8 RGB image for the ``[H, W, 3]`` uint8 condition map."""
        ...


BackendBuilder = Callable[[GenerationConfig], SynthesisBackend]
BACKENDS: Registry[BackendBuilder] = Registry(
    "generation backend",
    modules=("generation.backends.controlnet", "generation.backends.procedural"),
)
register_backend = BACKENDS.register
backend_names = BACKENDS.names


def build_backend(name: str, cfg: GenerationConfig) -> SynthesisBackend:
    """Build the backend ``name`` from its config section; an unknown name lists the known ones."""
    return BACKENDS.get(name)(cfg)
