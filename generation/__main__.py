"""CLI: ``python -m generation --cfg exp/generation.yaml [--source ROOT] [--out DIR]
[--backend controlnet|procedural] [--shard i/N] [section.key=value ...]``.

Generates one multi-shift image per source label map of this shard, skipping items that already have
a metadata line whose files exist (resume), and prints a summary: generated, already done, skipped
with the reason (no road, rejected by which filter), images per hour. Under
``torchrun --nproc_per_node N [--nnodes M ...] -m generation ...`` every process generates the
shard of its rank (leave ``--shard`` out); see :func:`generation.runner.run`.
"""

from __future__ import annotations

import argparse
import logging

from generation.backends import backend_names
from generation.config import GenerationConfig
from generation.runner import run
from generation.source import parse_shard
from lib.cli_errors import run_cli
from lib.config import load_config


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m generation", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cfg", required=True, help="generation YAML, e.g. exp/generation.yaml")
    parser.add_argument("--source", default=None, help="Cityscapes root (overrides source.root)")
    parser.add_argument("--out", default=None, help="output root (overrides output.root)")
    parser.add_argument("--backend", default=None, choices=backend_names(), help="overrides backend")
    parser.add_argument(
        "--shard",
        default=None,
        help="i/N: this process handles shard i of N (default: the torchrun rank, or all)",
    )
    parser.add_argument("overrides", nargs="*", metavar="section.key=value", help="config overrides")
    return parser


def resolve_config(args: argparse.Namespace) -> GenerationConfig:
    """The config from ``--cfg`` and overrides, with the dedicated flags applied last."""
    cfg = load_config(GenerationConfig, args.cfg, args.overrides)
    if args.source is not None:
        cfg.source.root = args.source
    if args.out is not None:
        cfg.output.root = args.out
    if args.backend is not None:
        cfg.backend = args.backend
    return cfg


def main(args: argparse.Namespace) -> dict:
    """Run one shard; returns the summary counts (also printed)."""
    shard = None if args.shard is None else parse_shard(args.shard)
    return run(resolve_config(args), shard)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    run_cli(main, get_args_parser())
