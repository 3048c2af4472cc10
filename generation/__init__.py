"""CG-Aug: coherent generative augmentation of Cityscapes-layout datasets.

``generation.run(cfg, shard)`` generates one shard from a resolved
:class:`~generation.config.GenerationConfig` (:func:`generation.runner.run`, imported on first use so
that ``import generation.config`` stays light).
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "run":
        from generation.runner import run

        return run
    raise AttributeError(f"module 'generation' has no attribute {name!r}")
