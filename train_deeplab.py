"""Train MultiShiftSeg's DeepLabv3+ (two stages, relative contrastive loss) on Cityscapes + CG-Aug pairs.

    python train_deeplab.py --cfg exp/DeepLab.yaml --id X --weight_path DeepLabV3+_WideResNet38_baseline.pth
    torchrun --nproc_per_node 4 train_deeplab.py --cfg exp/DeepLab.yaml --id X --weight_path ...
    python train_deeplab.py --cfg exp/DeepLab.yaml --id X --resume        # continue from outputs/X/last.pth

Logs, the resolved config, ``last.pth`` and ``best_AP.pth`` go to ``output_root/id``.
"""

from __future__ import annotations

import argparse

from lib.config import add_experiment_args, config_from_args
from lib.data.benchmarks import build_benchmark
from lib.engine.builders import build_paired_train_set, build_training_model
from lib.engine.distributed import cleanup, init_distributed
from lib.engine.logging_utils import setup_logging
from lib.engine.steps import build_train_step
from lib.engine.trainer import fit
from lib.models import build_model


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Train MultiShiftSeg DeepLabv3+ (two stages).")
    add_experiment_args(parser)
    parser.add_argument("--resume", action="store_true", help="continue from output_root/id/last.pth")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--no_progress", action="store_true", help="no progress bars (log files only)")
    return parser


def main(args: argparse.Namespace) -> dict[str, object]:
    cfg = config_from_args(args)
    info = init_distributed(args.device)
    logger = setup_logging(cfg.run_dir, is_main=info.is_main)
    logger.info("run %s on %s (%d process(es))", cfg.run_dir, info.device, info.world_size)
    try:
        if args.resume:
            model = build_model(cfg.model.name, **cfg.model.kwargs)
        else:
            model = build_training_model(cfg)
        val_set = build_benchmark(cfg.data.val_ds, root=cfg.data.root) if cfg.data.val_ds else None
        return fit(
            cfg,
            model=model,
            train_set=build_paired_train_set(cfg),
            val_set=val_set,
            step=build_train_step(cfg),
            info=info,
            resume=args.resume,
            progress=not args.no_progress,
        )
    finally:
        cleanup()


if __name__ == "__main__":
    main(get_args_parser().parse_intermixed_args())
