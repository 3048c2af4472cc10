"""Testing a trained model on the benchmarks of ``eval.datasets``: what ``test_*.py`` runs.

Full-resolution inference (batch 1, no resize, float32 so the numbers match the published
evaluation), one :func:`~lib.engine.evaluator.evaluate_benchmark` per benchmark, then a Markdown
table on the console and ``results.json`` / ``results.md`` (and heat maps) in the run folder.
"""

from __future__ import annotations

from pathlib import Path

import torch

from lib.config import Config
from lib.data.benchmarks import build_benchmark
from lib.engine.distributed import DistInfo
from lib.engine.evaluator import evaluate_benchmark, protocol_rule, results_table, smiyc_track, write_results
from lib.engine.logging_utils import get_logger
from lib.engine.trainer import BEST
from lib.models import build_model
from lib.models.checkpoints import load_weights
from lib.scores import get_score


def resolve_weights(cfg: Config) -> Path:
    """``model.weight_path``, or the run's own ``best_AP.pth`` when it is empty."""
    path = Path(cfg.model.weight_path) if cfg.model.weight_path else Path(cfg.run_dir) / BEST
    if not path.is_file():
        hint = "" if cfg.model.weight_path else " (no --weight_path given, so the run's best checkpoint)"
        raise FileNotFoundError(f"weights not found: {path}{hint}")
    return path


def run_benchmarks(
    cfg: Config, *, info: DistInfo, named: bool = False, progress: bool = True
) -> dict[str, dict[str, object]]:
    """Evaluate on every benchmark of ``cfg.eval.datasets``; return ``{benchmark: metrics}``.

    ``named``: the benchmarks were asked for by name (``--test_dataset``), so a missing folder is an
    error; otherwise it is skipped with a warning.
    """
    logger = get_logger()
    if not cfg.eval.datasets:
        raise ValueError("nothing to test: eval.datasets is empty and no --test_dataset was given")
    rule = protocol_rule(cfg.eval.protocol)
    score_fn = get_score(cfg.eval.score)
    weights = resolve_weights(cfg)
    model = build_model(cfg.model.name, **cfg.model.kwargs)
    load_weights(model, weights)
    model.to(info.device).eval()
    channels_last = info.device.type == "cuda"
    if channels_last:
        model.to(memory_format=torch.channels_last)
    logger.info(
        "testing %s (%s) with score %r, postprocess %r",
        weights,
        cfg.model.name,
        cfg.eval.score,
        cfg.eval.postprocess,
    )
    logger.info("protocol %s: %s", cfg.eval.protocol, rule)
    results: dict[str, dict[str, object]] = {}
    skipped: list[str] = []
    for name in cfg.eval.datasets:
        try:
            dataset = build_benchmark(name, root=cfg.data.root)
        except FileNotFoundError as err:
            if named:
                raise
            logger.warning("skipping %s: %s", name, str(err).splitlines()[0])
            skipped.append(name)
            continue
        heatmaps = cfg.eval.save_heatmaps
        results[name] = evaluate_benchmark(
            model,
            dataset,
            score_fn=score_fn,
            device=info.device,
            protocol=cfg.eval.protocol,
            per_image=cfg.eval.per_image,
            track=smiyc_track(name),
            postprocess=cfg.eval.postprocess,
            num_workers=cfg.data.num_workers,
            channels_last=channels_last,
            heatmap_dir=Path(cfg.run_dir) / "heatmaps" / name if heatmaps > 0 else None,
            num_heatmaps=heatmaps,
            mean=cfg.data.mean,
            std=cfg.data.std,
            desc=name,
            progress=progress and info.is_main,
        )
        logger.info("%s: %d images done", name, results[name]["images"])
    if not results:
        raise FileNotFoundError(
            f"no benchmark of {cfg.eval.datasets} was found under {cfg.data.root}; "
            "see the README for the dataset tree"
        )
    if info.is_main:
        json_path, md_path = write_results(
            cfg.run_dir,
            results,
            protocol=cfg.eval.protocol,
            score=cfg.eval.score,
            weights=str(weights),
            postprocess=cfg.eval.postprocess,
            skipped=skipped,
        )
        print(f"\nProtocol {cfg.eval.protocol}: {rule}\n\n{results_table(results)}\n")
        logger.info("wrote %s and %s", json_path, md_path)
    return results
