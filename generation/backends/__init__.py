"""Step 5 of CG-Aug: image synthesis backends behind one small interface and a name registry.

A backend turns ADE20K-palette condition maps into images of the same size, several per call::

    backend.render_batch(conditions [H, W, 3] uint8, prompts, negative_prompts, seeds) -> [H, W, 3] uint8 list

``controlnet`` is Stable Diffusion 1.5 with a segmentation ControlNet (diffusers); ``procedural`` is
the ToyShift renderer, which runs on a CPU in milliseconds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np

from generation.config import GenerationConfig
from lib.registry import Registry


class SynthesisBackend(Protocol):
    """What the pipeline needs from a backend."""

    name: str

    def render_batch(
        self,
        conditions: Sequence[np.ndarray],
        prompts: Sequence[str],
        negative_prompts: Sequence[str],
        seeds: Sequence[int],
    ) -> list[np.ndarray]:
        """One ``[H, W, 3]`` uint8 RGB image per same-size ``[H, W, 3]`` uint8 condition map, each
        from its own prompt, negative prompt and seed."""
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
