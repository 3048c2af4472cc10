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

from lib.cli_errors import run_cli
from lib.engine.cli import train_main, train_parser


def get_args_parser() -> argparse.ArgumentParser:
    return train_parser("Train MultiShiftSeg Mask2Former (two stages).")


def main(args: argparse.Namespace) -> dict:
    return train_main(args)


if __name__ == "__main__":
    run_cli(main, get_args_parser(), intermixed=True)
