"""Train MultiShiftSeg's Mask2Former (Mask2Anomaly R50; two stages, set criterion + RCL) on Cityscapes +
CG-Aug pairs.

    python train_m2f.py --cfg exp/M2F.yaml --id X --weight_path bt-f-xl.pth
    torchrun --nproc_per_node 4 train_m2f.py --cfg exp/M2F.yaml --id X --weight_path bt-f-xl.pth
    python train_m2f.py --cfg exp/M2F.yaml --id X --resume             # continue from outputs/X/last.pth
    python train_m2f.py --cfg exp/M2F_paper_stage2.yaml --id X ...     # the paper's stage 2 (backbone frozen)

Stage 1 trains the OOD head ``class_embed2`` (initialised from ``class_embed`` when the checkpoint
has none, as Mask2Anomaly's ``bt-f-xl.pth``) with the RCL; stage 2 adds the set criterion (see
``lib/engine/m2f_step.py``). Logs, the resolved config, ``last.pth`` and ``best_AP.pth`` go to
``output_root/id``.
"""

from __future__ import annotations

import argparse

import lib.engine.m2f_step  # noqa: F401  (registers the "m2f_rcl" train step)
from lib.config import add_experiment_args, config_from_args
from lib.data.benchmarks import build_benchmark
from lib.engine.builders import build_paired_train_set, build_training_model
from lib.engine.distributed import cleanup, init_distributed
from lib.engine.logging_utils import setup_logging
from lib.engine.steps import build_train_step
from lib.engine.trainer import fit
from lib.models import build_model


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Train MultiShiftSeg Mask2Former (two stages).")
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
