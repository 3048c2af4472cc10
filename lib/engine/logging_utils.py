"""Run logging: console + file through :mod:`logging`, TensorBoard when it is installed.

Only rank 0 writes: other ranks get a logger that shows warnings and errors only, and a scalar
writer that drops everything.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from lib.atomic import make_folder

LOGGER_NAME = "multishiftseg"
_FORMAT = "%(asctime)s %(levelname)s %(message)s"
HPARAMS_RUN = "hparams"
"""The TensorBoard sub-run (folder under the log dir) holding the hyper-parameters and final metrics."""


def setup_logging(
    run_dir: str | Path | None, *, is_main: bool = True, filename: str = "log.txt"
) -> logging.Logger:
    """The project logger: stderr, plus ``run_dir/filename`` on rank 0 when ``run_dir`` is given.

    The library modules log under ``lib.*``; their records go to the same handlers. Calling this
    again replaces the handlers, so tests and repeated runs in one process do not duplicate lines.
    """
    level = logging.INFO if is_main else logging.WARNING
    formatter = logging.Formatter(_FORMAT, datefmt="%H:%M:%S")
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if is_main and run_dir is not None:
        make_folder(run_dir, "run folder (output_root/id)")
        handlers.append(logging.FileHandler(Path(run_dir) / filename, encoding="utf-8"))
    for name in (LOGGER_NAME, "lib"):
        logger = logging.getLogger(name)
        for old in list(logger.handlers):
            logger.removeHandler(old)
            old.close()
        for handler in handlers:
            handler.setFormatter(formatter)
            logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = False
    return logging.getLogger(LOGGER_NAME)


def get_logger() -> logging.Logger:
    return logging.getLogger(LOGGER_NAME)


def tensorboard_available() -> bool:
    """Whether the ``tensorboard`` package is installed (the same answer on every rank)."""
    return importlib.util.find_spec("tensorboard") is not None


def flat_hparams(tree: Mapping[str, Any], prefix: str = "") -> dict[str, bool | int | float | str]:
    """A nested config dict as TensorBoard hyper-parameters: ``section.key`` -> a bool, number or
    string (lists, ``None`` and other values as their JSON text)."""
    out: dict[str, bool | int | float | str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out |= flat_hparams(value, f"{name}.")
        elif isinstance(value, bool | int | float | str):
            out[name] = value
        else:
            out[name] = json.dumps(value)
    return out


class ScalarWriter:
    """TensorBoard under ``log_dir`` on rank 0 when ``tensorboard`` is importable; else nothing.

    Scalars (losses, learning rate, validation metrics), images (validation heat maps), text (the
    resolved config) and, once at the end, the hyper-parameters with the final metrics (in the
    ``hparams`` sub-run, which TensorBoard's HParams tab reads).
    """

    def __init__(self, log_dir: str | Path, *, enabled: bool = True) -> None:
        self._writer = None
        if enabled and tensorboard_available():
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(log_dir))

    @property
    def active(self) -> bool:
        return self._writer is not None

    def add_scalars(self, values: dict[str, float], step: int, *, prefix: str) -> None:
        """Write each ``values[name]`` as ``prefix/name`` at ``step``."""
        if self._writer is None:
            return
        for name, value in values.items():
            self._writer.add_scalar(f"{prefix}/{name}", value, step)

    def add_image(self, tag: str, rgb: np.ndarray, step: int) -> None:
        """An ``[H, W, 3]`` uint8 RGB picture at ``step``."""
        if self._writer is not None:
            self._writer.add_image(tag, rgb, step, dataformats="HWC")

    def add_text(self, tag: str, text: str, *, code: bool = False) -> None:
        """Text (Markdown; ``code``: shown verbatim, e.g. a YAML file) at step 0."""
        if self._writer is not None:
            shown = "".join(f"    {line}\n" for line in text.splitlines()) if code else text
            self._writer.add_text(tag, shown, 0)

    def add_hparams(
        self, hparams: Mapping[str, bool | int | float | str], metrics: Mapping[str, float]
    ) -> None:
        """The run's hyper-parameters with its final ``metrics`` (non-finite ones left out)."""
        if self._writer is None:
            return
        finite = {f"final/{k}": float(v) for k, v in metrics.items() if math.isfinite(v)}
        self._writer.add_hparams(dict(hparams), finite, run_name=HPARAMS_RUN)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
