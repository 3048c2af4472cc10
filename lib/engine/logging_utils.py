"""Run logging: console + file through :mod:`logging`, TensorBoard scalars when it is installed.

Only rank 0 writes: other ranks get a logger that shows warnings and errors only, and a scalar
writer that drops everything.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from pathlib import Path

from lib.atomic import make_folder

LOGGER_NAME = "multishiftseg"
_FORMAT = "%(asctime)s %(levelname)s %(message)s"


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


class ScalarWriter:
    """TensorBoard scalars under ``log_dir`` on rank 0 when ``tensorboard`` is importable; else nothing."""

    def __init__(self, log_dir: str | Path, *, enabled: bool = True) -> None:
        self._writer = None
        if enabled and importlib.util.find_spec("tensorboard") is not None:
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

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
