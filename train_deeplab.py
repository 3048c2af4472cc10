"""Train MultiShiftSeg's DeepLabv3+ (two stages, relative contrastive loss) on Cityscapes + CG-Aug pairs.

    python train_deeplab.py --cfg exp/DeepLab.yaml --id X --weight_path DeepLabV3+_WideResNet38_baseline.pth
    torchrun --nproc_per_node 4 train_deeplab.py --cfg exp/DeepLab.yaml --id X --weight_path ...
    python train_deeplab.py --cfg exp/DeepLab.yaml --id X --resume        # continue from outputs/X/last.pth

Logs, the resolved config, ``last.pth`` and ``best_AP.pth`` go to ``output_root/id``.
"""

from __future__ import annotations

import argparse

from lib.cli_errors import run_cli
from lib.engine.cli import train_main, train_parser


def get_args_parser() -> argparse.ArgumentParser:
    return train_parser("Train MultiShiftSeg DeepLabv3+ (two stages).")


def main(args: argparse.Namespace) -> dict:
    return train_main(args)


if __name__ == "__main__":
    run_cli(main, get_args_parser(), intermixed=True)
