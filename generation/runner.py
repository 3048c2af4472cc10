"""One CG-Aug shard from a resolved config: what ``python -m generation`` (and ``torchrun``) runs.

:func:`run` generates one image per source label map of its shard, skipping items that already have
a metadata line (resume), renders ``batch_size`` items per backend call, writes them with
:class:`~generation.writer.DatasetWriter` and merges every shard's metadata into ``metadata.jsonl``.
Without an explicit shard, the shard is this process's place under ``torchrun`` (``RANK`` of
``WORLD_SIZE``; the whole set in a plain process), and rank 0 merges after every process is done.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import replace

from tqdm import tqdm

from generation.config import GenerationConfig
from generation.pipeline import Generated, build_generator
from generation.processes import join, peers_from_env, process_device
from generation.source import SourceItem, list_source_items, shard_items
from generation.writer import DatasetWriter
from lib.atomic import make_folder
from lib.config import save_config
from lib.engine.distributed import barrier, cleanup
from lib.errors import UserError

log = logging.getLogger("generation")

SUMMARY_KEYS = ("generated", "already_done", "skipped", "rejected_by_sam", "rejected_by_score")


def run(cfg: GenerationConfig, shard: tuple[int, int] | None = None, *, progress: bool = True) -> dict:
    """Generate shard ``(i, N)`` of ``cfg``'s source set (``None``: this process's ``torchrun`` share)
    and return the summary counts (also printed); ``metadata_lines`` counts the merged metadata."""
    peers = peers_from_env()
    if shard is not None and peers.world_size > 1:
        raise UserError(
            f"--shard {shard[0]}/{shard[1]} given to one of {peers.world_size} torchrun processes: "
            "under torchrun each process takes the shard RANK/WORLD_SIZE; leave --shard out"
        )
    shard = peers.shard if shard is None else shard
    make_folder(cfg.output.root, "--out (output.root)")
    writer = DatasetWriter(root=cfg.output.root, shard=shard, save_condition=cfg.output.save_condition)
    save_config(cfg, writer.root / "generation_config.yaml")
    device = process_device(cfg.device, peers)
    join(peers, device)
    try:
        summary = _generate_shard(
            replace(cfg, device=device), shard, writer, progress=progress and peers.rank == 0
        )
        barrier()
        if peers.rank == 0:
            summary["metadata_lines"] = writer.merge_metadata()
    finally:
        cleanup()
    return summary


def _generate_shard(
    cfg: GenerationConfig, shard: tuple[int, int], writer: DatasetWriter, *, progress: bool
) -> dict:
    """Generate the unfinished items of ``shard`` into ``writer``; returns the summary counts."""
    items = list_source_items(cfg.source.root, cfg.source.split, cfg.source.cities, cfg.source.condition_from)
    mine = shard_items(items, *shard)
    finished = writer.finished()
    todo = [it for it in mine if (it.split, it.stem) not in finished]
    counts: Counter = Counter(already_done=len(mine) - len(todo))
    name = f"{shard[0]}/{shard[1]}"
    if todo:
        generator = build_generator(cfg)
        start = time.perf_counter()
        desc = f"CG-Aug {cfg.backend} shard {name}"
        with tqdm(total=len(todo), desc=desc, unit="img", disable=not progress) as bar:
            for first in range(0, len(todo), cfg.batch_size):
                chunk = todo[first : first + cfg.batch_size]
                for item, result in zip(chunk, generator.generate_batch(chunk), strict=True):
                    _write(writer, item, result, counts)
                bar.update(len(chunk))
        elapsed = time.perf_counter() - start
        counts["images_per_hour"] = round(3600.0 * counts["generated"] / max(elapsed, 1e-9), 1)
    summary = {k: counts[k] for k in SUMMARY_KEYS} | {"images_per_hour": counts["images_per_hour"]}
    print(
        f"shard {name}: {len(mine)} items | generated {counts['generated']} | already done "
        f"{counts['already_done']} | skipped {counts['skipped']} | rejected attempts: SAM "
        f"{counts['rejected_by_sam']}, score {counts['rejected_by_score']} | "
        f"{counts['images_per_hour']} images/hour | output {writer.root} on {cfg.device}"
    )
    return summary


def _write(writer: DatasetWriter, item: SourceItem, result: Generated, counts: Counter) -> None:
    """Write one item's outcome (files and metadata line, or the skip record) and count it."""
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
