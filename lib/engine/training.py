"""Training an experiment from its config: what ``train_*.py`` runs.

Builds the recipe ``loss.name`` first — its train step and the training set that step reads (a
config error there shows before any weights load) — then the model (with its starting weights, or
bare when resuming: :func:`~lib.engine.trainer.fit` then restores ``last.pth``) and the validation benchmark
``data.val_ds``, and runs :func:`~lib.engine.trainer.fit`. The entry scripts only parse arguments,
set up distributed state and logging, and call :func:`run_training`; before any of it,
:func:`prepare_run_dir` refuses to start a new run over a finished one.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lib.config import Config
from lib.data.benchmarks import build_benchmark
from lib.engine.builders import build_training_model
from lib.engine.distributed import DistInfo
from lib.engine.logging_utils import get_logger
from lib.engine.steps import build_recipe
from lib.engine.trainer import BEST, LAST, fit, seed_everything
from lib.errors import UserError
from lib.models import build_model


def add_training_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The train scripts' own arguments, after :func:`~lib.config.add_experiment_args`'s."""
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--resume", action="store_true", help="continue from output_root/id/last.pth")
    start.add_argument(
        "--overwrite", action="store_true", help="start afresh in an output_root/id that holds a run"
    )
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--no_progress", action="store_true", help="no progress bars (log files only)")
    return parser


def prepare_run_dir(run_dir: str | Path, *, resume: bool = False, overwrite: bool = False) -> None:
    """Refuse a new run in ``run_dir`` when it holds a run's checkpoint, unless ``overwrite``.

    A finished or interrupted run would otherwise lose ``last.pth``, ``best_AP.pth`` and
    ``config.yaml`` to the new one. With ``overwrite`` the old checkpoints are removed at once, so
    that none of them can pass for the new run's; ``resume`` continues the run instead.
    """
    run_dir = Path(run_dir)
    found = [run_dir / name for name in (LAST, BEST) if (run_dir / name).exists()]
    if resume or not found:
        return
    if not overwrite:
        raise UserError(
            f"{run_dir} already holds a run ({', '.join(p.name for p in found)}); continue it with "
            "--resume, choose another --id, or pass --overwrite to replace it"
        )
    for path in found:
        path.unlink()


def run_training(
    cfg: Config, *, info: DistInfo, resume: bool = False, progress: bool = True
) -> dict[str, object]:
    """Train per ``cfg`` into ``cfg.run_dir``; returns :func:`~lib.engine.trainer.fit`'s summary.

    ``resume``: continue from ``run_dir/last.pth`` (the starting weights and the OOD-head
    initialisation are skipped: the checkpoint holds the trained model). Everything random is
    seeded from ``train.seed`` first, so a model built without starting weights is reproducible.
    """
    get_logger().info("run %s on %s (%d process(es))", cfg.run_dir, info.device, info.world_size)
    seed_everything(cfg.train.seed)  # a model without starting weights is the same in every run
    step, train_set = build_recipe(cfg)
    if resume:
        model = build_model(cfg.model.name, **cfg.model.kwargs)
    else:
        model = build_training_model(cfg)
    val_set = (
        build_benchmark(cfg.data.val_ds, root=cfg.data.root, mean=cfg.data.mean, std=cfg.data.std)
        if cfg.data.val_ds
        else None
    )
    return fit(
        cfg,
        model=model,
        train_set=train_set,
        val_set=val_set,
        step=step,
        info=info,
        resume=resume,
        progress=progress,
    )
