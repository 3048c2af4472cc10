"""CLI: ``python -m generation --cfg exp/generation.yaml [--source ROOT] [--out DIR]
[--backend controlnet|procedural] [--shard i/N] [section.key=value ...]``.

Generates one multi-shift image per source label map of this shard, skipping items that already have
a metadata line whose files exist (resume), and prints a summary: generated, already done, skipped
with the reason (no road, rejected by which filter), images per hour.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections import Counter

from tqdm import tqdm

from generation.backends import backend_names
from generation.config import GenerationConfig
from generation.pipeline import build_generator
from generation.source import list_source_items, parse_shard, shard_items
from generation.writer import DatasetWriter
from lib.atomic import make_folder
from lib.cli_errors import run_cli
from lib.config import load_config, save_config

log = logging.getLogger("generation")


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m generation", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cfg", required=True, help="generation YAML, e.g. exp/generation.yaml")
    parser.add_argument("--source", default=None, help="Cityscapes root (overrides source.root)")
    parser.add_argument("--out", default=None, help="output root (overrides output.root)")
    parser.add_argument("--backend", default=None, choices=backend_names(), help="overrides backend")
    parser.add_argument("--shard", default="0/1", help="i/N: this process handles shard i of N")
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
    shard = parse_shard(args.shard)
    cfg = resolve_config(args)
    make_folder(cfg.output.root, "--out (output.root)")
    items = list_source_items(cfg.source.root, cfg.source.split, cfg.source.cities, cfg.source.condition_from)
    mine = shard_items(items, *shard)
    writer = DatasetWriter(root=cfg.output.root, shard=shard, save_condition=cfg.output.save_condition)
    save_config(cfg, writer.root / "generation_config.yaml")
    finished = writer.finished()
    todo = [it for it in mine if (it.split, it.stem) not in finished]
    counts: Counter = Counter(already_done=len(mine) - len(todo))
    if todo:
        generator = build_generator(cfg)
        start = time.perf_counter()
        for item in tqdm(todo, desc=f"CG-Aug {cfg.backend} shard {args.shard}", unit="img"):
            result = generator.generate(item)
            counts.update({f"rejected_by_{k}": v for k, v in result.rejections.items()})
            if result.status == "generated":
                writer.write(
                    item,
                    result.domain,
                    image=result.image,
                    label=result.label,
                    condition=result.condition,
                    record=result.record,
                )
                counts["generated"] += 1
            else:
                writer.append_record(result.record)
                counts["skipped"] += 1
                log.warning("skipped %s: %s", item.stem, result.record["reason"])
        elapsed = time.perf_counter() - start
        counts["images_per_hour"] = round(3600.0 * counts["generated"] / max(elapsed, 1e-9), 1)
    counts["metadata_lines"] = writer.merge_metadata()
    keys = ("generated", "already_done", "skipped", "rejected_by_sam", "rejected_by_score")
    summary = {k: counts[k] for k in keys} | {"images_per_hour": counts["images_per_hour"]}
    summary["metadata_lines"] = counts["metadata_lines"]
    print(
        f"shard {args.shard}: {len(mine)} items | generated {counts['generated']} | already done "
        f"{counts['already_done']} | skipped {counts['skipped']} | rejected attempts: SAM "
        f"{counts['rejected_by_sam']}, score {counts['rejected_by_score']} | "
        f"{counts['images_per_hour']} images/hour | output {writer.root}"
    )
    return summary


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    run_cli(main, get_args_parser())
