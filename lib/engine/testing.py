"""Testing a trained model on the benchmarks of ``eval.datasets``: what ``test_*.py`` runs.

Full-resolution inference (batch 1, no resize, float32 so the numbers match the published
evaluation), one :func:`~lib.engine.evaluator.evaluate_benchmark` per benchmark, then a Markdown
table on the console and ``results.json`` / ``results.md``, ``curves_<benchmark>.png`` (ROC and
PR) and optional heat maps in the run folder. With ``eval.export`` (``--export FORMAT DIR``) the
anomaly maps are written in a benchmark server's format while the metrics stream: ``smiyc``
covers every frame of the SMIYC tracks among the benchmarks, labelled or not (others are only
evaluated), ``fishyscapes`` every benchmark (``DIR/<benchmark>/<index>_anomaly.npy``).
"""

from __future__ import annotations

import argparse
from contextlib import nullcontext
from pathlib import Path

import torch

from lib.config import Config, ConfigError
from lib.data.benchmarks import build_benchmark
from lib.engine.distributed import DistInfo
from lib.engine.evaluator import (
    evaluate_benchmark,
    protocol_rule,
    results_header,
    results_table,
    smiyc_track,
    write_results,
)
from lib.engine.logging_utils import get_logger
from lib.engine.trainer import BEST
from lib.models import build_model
from lib.models.checkpoints import load_weights
from lib.scores import get_score
from lib.submission import EXPORT_FORMATS, SMIYC_TRACK_OF_BENCHMARK, bounded_score_range, build_exporter


def add_test_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options ``test_deeplab.py`` and ``test_m2f.py`` share (besides the experiment's)."""
    parser.add_argument(
        "--save_heatmaps", type=int, default=None, metavar="N", help="overlays of the first N"
    )
    parser.add_argument(
        "--export",
        nargs=2,
        default=None,
        metavar=("FORMAT", "DIR"),
        help=f"also write the anomaly maps as benchmark-server files ({' | '.join(EXPORT_FORMATS)}) into DIR",
    )
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--no_progress", action="store_true", help="no progress bars")
    return parser


def apply_test_args(cfg: Config, args: argparse.Namespace) -> Config:
    """Copy ``--save_heatmaps`` and ``--export`` into ``cfg.eval``."""
    if args.save_heatmaps is not None:
        cfg.eval.save_heatmaps = args.save_heatmaps
    if args.export is not None:
        cfg.eval.export, cfg.eval.export_dir = args.export
    return cfg


def _exported_benchmarks(cfg: Config) -> list[str]:
    """The benchmarks of ``cfg.eval.datasets`` that ``eval.export`` covers (settings checked up front)."""
    kind = cfg.eval.export
    if not kind:
        return []
    if kind not in EXPORT_FORMATS:
        raise ConfigError(f"unknown eval.export {kind!r}; expected one of {', '.join(EXPORT_FORMATS)}")
    if not cfg.eval.export_dir:
        raise ConfigError(f"eval.export={kind} needs eval.export_dir (--export {kind} DIR)")
    if kind == "fishyscapes":
        return list(cfg.eval.datasets)
    covered = [name for name in cfg.eval.datasets if name in SMIYC_TRACK_OF_BENCHMARK]
    if not covered:
        raise ConfigError(
            f"--export smiyc: none of the benchmarks {cfg.eval.datasets} is a SMIYC track "
            f"({', '.join(SMIYC_TRACK_OF_BENCHMARK)})"
        )
    return covered


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
        raise ConfigError("nothing to test: eval.datasets is empty and no --test_dataset was given")
    protocol_rule(cfg.eval.protocol)
    score_fn = get_score(cfg.eval.score)
    exported = _exported_benchmarks(cfg)
    smiyc_range = bounded_score_range(cfg.eval.score)
    score_label = (
        cfg.eval.score if cfg.eval.postprocess == "none" else f"{cfg.eval.score} + {cfg.eval.postprocess}"
    )
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
    header = results_header(
        protocol=cfg.eval.protocol,
        score=cfg.eval.score,
        postprocess=cfg.eval.postprocess,
        per_image=cfg.eval.per_image,
        weights=str(weights),
        model=cfg.model.name,
    )
    for line in header.splitlines():
        logger.info("%s", line.rstrip())
    results: dict[str, dict[str, object]] = {}
    skipped: list[str] = []
    for name in cfg.eval.datasets:
        exporting = name in exported
        try:
            dataset = build_benchmark(
                name, root=cfg.data.root, include_unlabelled=exporting and cfg.eval.export == "smiyc"
            )
        except FileNotFoundError as err:
            if named:
                raise
            logger.warning("skipping %s: %s", name, str(err).splitlines()[0])
            skipped.append(name)
            continue
        heatmaps = cfg.eval.save_heatmaps
        exporter = (
            build_exporter(
                cfg.eval.export,
                cfg.eval.export_dir,
                benchmark=name,
                method=cfg.id,
                score_range=smiyc_range,
            )
            if exporting
            else nullcontext()
        )
        with exporter:
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
                exporter=exporter if exporting else None,
                curves_path=Path(cfg.run_dir) / f"curves_{name}.png",
                curve_label=score_label,
                mean=cfg.data.mean,
                std=cfg.data.std,
                desc=name,
                progress=progress and info.is_main,
            )
        done = results[name]
        logger.info(
            "%s: %d labelled, %d unlabelled images done", name, done["images"], done.get("unlabelled", 0)
        )
        if exporting:
            logger.info("%s: %s files written under %s", name, cfg.eval.export, exporter.folder)
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
            per_image=cfg.eval.per_image,
            model=cfg.model.name,
            export={"format": cfg.eval.export, "dir": cfg.eval.export_dir} if cfg.eval.export else None,
            skipped=skipped,
        )
        print(f"\n{header}\n{results_table(results)}\n")
        logger.info("wrote %s and %s", json_path, md_path)
    return results
