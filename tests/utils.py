"""Helpers shared by tests: reading the parity fixtures shipped in ``tests/fixtures``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

FIXTURES = Path(__file__).parent / "fixtures"


def load_fixture(name: str) -> dict[str, np.ndarray]:
    """Load ``tests/fixtures/<name>.npz`` as a dict of arrays."""
    with np.load(FIXTURES / f"{name}.npz") as data:
        return {k: data[k] for k in data.files}
