"""ADE20K tables shipped with the package: the 150 scene-parsing categories and their ControlNet colours,
the ADE20K-full -> 150 mapping and the out-of-distribution (OOD) category lists of CG-Aug.

Indices of the 150 categories are 1-based everywhere, as in the published tables. The JSON files live
in ``generation/data`` (package data), so nothing here reads outside the installed package.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np


@dataclass(frozen=True)
class ADE150:
    """The 150 categories: ``names[i - 1]`` and ``palette[i - 1]`` (uint8 RGB) belong to index ``i``."""

    names: tuple[str, ...]
    palette: np.ndarray

    def index(self, name: str) -> int:
        """1-based index of the category called ``name`` (surrounding spaces ignored)."""
        try:
            return self.names.index(name.strip()) + 1
        except ValueError:
            raise KeyError(f"unknown ADE20K category {name!r}") from None

    def color(self, index: int) -> np.ndarray:
        """``[3]`` uint8 colour of the 1-based category ``index``."""
        if not 1 <= index <= len(self.names):
            raise KeyError(f"ADE20K category index {index} outside 1..{len(self.names)}")
        return self.palette[index - 1]


def _read_json(name: str) -> object:
    return json.loads(resources.files("generation.data").joinpath(name).read_text(encoding="utf-8"))


@lru_cache(maxsize=1)
def ade150() -> ADE150:
    """The 150 ADE20K categories and the palette a segmentation ControlNet reads."""
    rows = sorted(_read_json("ade150_classes_palette.json"), key=lambda r: r["index"])
    if [r["index"] for r in rows] != list(range(1, len(rows) + 1)):
        raise ValueError("ade150_classes_palette.json: indices are not 1..N")
    names = tuple(r["name"].strip() for r in rows)
    palette = np.array([r["rgb"] for r in rows], dtype=np.uint8)
    palette.setflags(write=False)
    return ADE150(names=names, palette=palette)


@lru_cache(maxsize=1)
def full_to_150() -> dict[int, int]:
    """ADE20K-full object class (``R // 10 * 256 + G`` of a ``*_seg.png``) -> 1-based 150-category index."""
    return {int(k): int(v) for k, v in _read_json("ade_full_to_150.json").items()}


def ood_classes(split: str) -> tuple[int, ...]:
    """1-based 150-category indices that may be pasted as anomalies: ``split`` is ``train`` or ``val``."""
    table = _read_json("ade150_ood_classes.json")
    if split not in table:
        raise KeyError(f"unknown OOD class list {split!r}; expected one of {sorted(table)}")
    return tuple(int(i) for i in table[split])
