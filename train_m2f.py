"""Train MultiShiftSeg's Mask2Former (Mask2Anomaly R50; two stages, set criterion + RCL) on Cityscapes +
CG-Aug pairs.

    python train_m2f.py --cfg exp/M2F.yaml --id X --weight_path bt-f-xl.pth
    torchrun --nproc_per_node 4 train_m2f.py --cfg exp/M2F.yaml --id X --weight_path bt-f-xl.pth
    python train_m2f.py --cfg exp/M2F.yaml --id X --resume             # continue from outputs/X/last.pth
    python train_m2f.py --cfg exp/M2F_paper_stage2.yaml --id X ...     # the paper's stage 2 (backbone frozen)

Stage 1 trains the OOD head ``class_embed2`` (initialised as a copy of ``class_embed`` after the
starting weights load, as published; ``model.init_ood_head=false`` keeps a loaded head, e.g. of a
released MultiShiftSeg checkpoint) with the RCL; stage 2 adds the set criterion (see
``lib/engine/m2f_step.py``). Logs, the resolved config, ``last.pth`` and ``best_AP.pth`` go to
``output_root/id``.
"""

from __future__ import annotations

import argparse

from lib.config import add_experiment_args, config_from_args
from lib.engine.distributed import cleanup, init_distributed
from lib.engine.logging_utils import setup_logging
from lib.engine.training import add_training_args, run_training

DESCRIPTION = "Train MultiShiftSeg Mask2Former (two stages)."


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    return add_training_args(add_experiment_args(parser))


def main(args: argparse.Namespace) -> dict[str, object]:
    cfg = config_from_args(args)
    info = init_distributed(args.device)
    setup_logging(cfg.run_dir, is_main=info.is_main)
    try:
        return run_training(cfg, info=info, resume=args.resume, progress=not args.no_progress)
    finally:
        cleanup()


if __name__ == "__main__":
    main(get_args_parser().parse_intermixed_args())
