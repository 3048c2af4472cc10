"""CLI: ``python -m demo --out outputs/demo [--stage NAME] [--fresh] [--seed N] [--no_progress]``.

Runs the demo's stages (:mod:`demo.stages`) in ``--out``, skipping finished ones.

The module sets ``OMP_WAIT_POLICY=PASSIVE`` (unless set already) before torch is imported: with
OpenMP's default spin-waiting, one other busy process on a 2-core machine makes every training
step about 15 times slower; passive waiting costs about 20% on an idle machine.
"""

# ruff: noqa: E402  (the OpenMP wait policy must be set before the first torch import)
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse

from demo.stages import STAGES, Demo, WorldSizes
from lib.cli_errors import run_cli


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m demo",
        description="The ToyShift demo: world, CG-Aug, training, evaluation and report, in --out; "
        "finished stages are skipped.",
    )
    parser.add_argument("--out", default="outputs/demo", help="output folder (datasets, runs, results)")
    parser.add_argument("--stage", choices=STAGES, default=None, help="run only this stage")
    parser.add_argument(
        "--fresh", action="store_true", help="redo from scratch (with --stage: redo that stage only)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the world and of every training stage (default 0)"
    )
    parser.add_argument("--no_progress", action="store_true", help="no progress bars")
    return parser


def main(args: argparse.Namespace) -> dict[str, str]:
    """Run the demo's stages (all, or ``--stage``) in ``--out``; returns ``{stage: "ran" | "skipped"}``."""
    demo = Demo(args.out, sizes=WorldSizes(seed=args.seed), progress=not args.no_progress)
    stages = STAGES if args.stage is None else (args.stage,)
    if args.fresh:
        for stage in stages:
            demo.clear(stage)
    return demo.run(stages)


if __name__ == "__main__":
    run_cli(main, get_args_parser())
