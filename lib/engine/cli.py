"""The bodies of the four entry scripts: argument parsers and ``main`` for training and testing.

``train_deeplab.py`` / ``train_m2f.py`` and ``test_deeplab.py`` / ``test_m2f.py`` differ only in
their documentation and default config; the model family comes from ``model.name`` in the config.
"""

from __future__ import annotations

import argparse

from lib.config import add_experiment_args, config_from_args
from lib.data.image_file import set_max_image_pixels
from lib.engine.distributed import cleanup, init_distributed
from lib.engine.logging_utils import setup_logging
from lib.engine.testing import add_test_args, apply_test_args, run_benchmarks
from lib.engine.training import add_training_args, prepare_run_dir, run_training


def train_parser(description: str) -> argparse.ArgumentParser:
    """``--cfg --id --weight_path --test_dataset --seed --resume|--overwrite --device --no_progress`` +
    overrides."""
    return add_training_args(add_experiment_args(argparse.ArgumentParser(description=description)))


def train_main(args: argparse.Namespace) -> dict[str, object]:
    """Resolve the config, check the run folder, set up (distributed) logging and train into
    ``output_root/id``."""
    cfg = config_from_args(args)
    set_max_image_pixels(cfg.data.max_image_pixels)
    prepare_run_dir(cfg.run_dir, resume=args.resume, overwrite=args.overwrite)
    info = init_distributed(args.device)
    setup_logging(cfg.run_dir, is_main=info.is_main)
    try:
        return run_training(cfg, info=info, resume=args.resume, progress=not args.no_progress)
    finally:
        cleanup()


def test_parser(description: str) -> argparse.ArgumentParser:
    """The experiment arguments plus ``--export``, ``--overwrite``, ``--save_heatmaps``, ``--device``,
    ``--no_progress``."""
    return add_test_args(add_experiment_args(argparse.ArgumentParser(description=description)))


def test_main(args: argparse.Namespace) -> dict[str, dict]:
    """Resolve the config and test the named benchmark, or every available one of ``eval.datasets``."""
    cfg = apply_test_args(config_from_args(args), args)
    set_max_image_pixels(cfg.data.max_image_pixels)
    info = init_distributed(args.device)
    setup_logging(cfg.run_dir, is_main=info.is_main, filename="test_log.txt")
    try:
        named = args.test_dataset is not None
        return run_benchmarks(
            cfg, info=info, named=named, progress=not args.no_progress, overwrite=args.overwrite
        )
    finally:
        cleanup()
