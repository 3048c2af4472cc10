"""Helpers shared by tests: reading the parity fixtures shipped in ``tests/fixtures``, generation
metadata files, and the SMIYC protocol over whole lists of frames."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from generation.writer import parse_jsonl
from lib.smiyc import PERCENTILE_METRIC, SMIYCAccumulator

FIXTURES = Path(__file__).parent / "fixtures"


def load_fixture(name: str) -> dict[str, np.ndarray]:
    """Load ``tests/fixtures/<name>.npz`` as a dict of arrays."""
    with np.load(FIXTURES / f"{name}.npz") as data:
        return {k: data[k] for k in data.files}


def read_jsonl(path: Path) -> list[dict]:
    """The records of a generation metadata file; a torn last line (killed mid-write) is left out."""
    return [record for _, record in parse_jsonl(path)[0]]


def smiyc_metrics(
    scores: Sequence[np.ndarray | torch.Tensor],
    labels: Sequence[np.ndarray | torch.Tensor],
    track: str = "AnomalyTrack",
    pixel_metric: str = PERCENTILE_METRIC,
) -> dict[str, float]:
    """The SMIYC protocol over per-frame ``[H, W]`` score maps and 0/1/255 label maps."""
    if len(scores) != len(labels):
        raise ValueError(f"{len(scores)} score frames but {len(labels)} label frames")
    acc = SMIYCAccumulator(track, pixel_metric)
    for s, lab in zip(scores, labels):
        acc.update(s, lab)
    return acc.compute()
