"""Testing a trained model on the benchmarks of ``eval.datasets``: what ``test_*.py`` runs.

Full-resolution inference (batch 1, no resize, float32 so the numbers match the published
evaluation) through the one loop of :mod:`lib.engine.evaluator`, one pass per benchmark feeding the
sinks: the metrics of ``eval.score`` under ``eval.protocol``, mIoU where there are semantic labels,
``curves_<benchmark>.png`` (ROC and PR), optional heat maps, and with ``eval.export``
(``--export FORMAT DIR``) the server files: ``smiyc`` covers every frame of the SMIYC tracks among
the benchmarks, labelled or not (others are only evaluated), ``fishyscapes`` every benchmark
(``DIR/<benchmark>/<index>_anomaly.npy``). An export folder that already holds score files is
refused unless ``--overwrite`` (which removes them first): a submission never mixes runs.

Each finished benchmark is merged into ``results.json`` / ``results.md`` at once (see
:mod:`lib.results`), so a later failure loses nothing and single-benchmark runs under one id add
up. A benchmark without an anomaly pixel reports its pixel metrics as not applicable.
"""

from __future__ import annotations

import argparse
from contextlib import nullcontext
from pathlib import Path

import torch

from lib.config import Config, ConfigError
from lib.data.benchmarks import build_benchmark
from lib.engine.distributed import DistInfo, barrier
from lib.engine.evaluator import (
    CurveSink,
    ExportSink,
    HeatmapSink,
    Inference,
    MetricSink,
    SemanticSink,
    Sink,
    benchmark_result,
    model_images,
    rank_share,
    stream,
)
from lib.engine.logging_utils import get_logger
from lib.engine.trainer import BEST
from lib.errors import UserError
from lib.metrics import RECALL_LEVEL
from lib.models.checkpoints import load_model
from lib.protocols import SMIYC_TRACK_OF_BENCHMARK, get_protocol, smiyc_track
from lib.results import provenance, results_header, results_table, write_results
from lib.scores import get_score, reads_ood_head
from lib.submission import EXPORT_FORMATS, Exporter, bounded_score_range, build_exporter

SCORE_FILE_SUFFIXES = (".hdf5", ".npy")
"""What counts as a stale score file in an export folder."""


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
        help="also write the anomaly maps as benchmark-server files "
        f"({' | '.join(EXPORT_FORMATS.names())}) into DIR",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="with --export: replace score files already in DIR"
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
    EXPORT_FORMATS.get(kind)
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


def stale_score_files(folder: Path) -> list[Path]:
    """The score files (``.hdf5``, ``.npy``) directly in ``folder``."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in SCORE_FILE_SUFFIXES)


def _prepare_export_folders(exporters: dict[str, Exporter], *, overwrite: bool) -> None:
    """Refuse export folders holding score files of an earlier run, or empty them with ``overwrite``."""
    for folder in {e.folder for e in exporters.values()}:
        stale = stale_score_files(folder)
        if stale and not overwrite:
            raise UserError(
                f"export folder {folder} already holds {len(stale)} score files of an earlier run; "
                "a submission must not mix runs: choose an empty folder or pass --overwrite"
            )
        for path in stale:
            path.unlink()


def resolve_weights(cfg: Config) -> Path:
    """``model.weight_path``, or the run's own ``best_AP.pth`` when it is empty."""
    path = Path(cfg.model.weight_path) if cfg.model.weight_path else Path(cfg.run_dir) / BEST
    if not path.is_file():
        hint = "" if cfg.model.weight_path else " (no --weight_path given, so the run's best checkpoint)"
        raise FileNotFoundError(f"weights not found: {path}{hint}")
    return path


def _evaluation_order(cfg: Config) -> tuple[list[str], str]:
    """``eval.datasets`` with ``eval.threshold_from`` first (its threshold applies to the others), and
    that source, or "" when it is not among the benchmarks tested (e.g. another ``--test_dataset``)."""
    source = cfg.eval.threshold_from
    if source and source not in cfg.eval.datasets:
        get_logger().warning(
            "eval.threshold_from=%s is not among the benchmarks tested (%s): no FPR_at_threshold",
            source,
            ", ".join(cfg.eval.datasets),
        )
        source = ""
    if not source:
        return list(cfg.eval.datasets), ""
    return [source, *(name for name in cfg.eval.datasets if name != source)], source


def run_benchmarks(
    cfg: Config, *, info: DistInfo, named: bool = False, progress: bool = True, overwrite: bool = False
) -> dict[str, dict[str, object]]:
    """Evaluate on every benchmark of ``cfg.eval.datasets``; return ``{benchmark: metrics}``.

    ``named``: the benchmarks were asked for by name (``--test_dataset``), so a missing folder is an
    error; otherwise it is skipped with a warning. ``overwrite``: replace score files already in the
    export folders.
    """
    logger = get_logger()
    if not cfg.eval.datasets:
        raise ConfigError("nothing to test: eval.datasets is empty and no --test_dataset was given")
    get_protocol(cfg.eval.protocol)
    order, threshold_source = _evaluation_order(cfg)
    score_fn = get_score(cfg.eval.score)
    exported = _exported_benchmarks(cfg)
    smiyc_range = bounded_score_range(cfg.eval.score)
    exporters = {
        name: build_exporter(
            cfg.eval.export, cfg.eval.export_dir, benchmark=name, method=cfg.id, score_range=smiyc_range
        )
        for name in exported
    }
    weights = resolve_weights(cfg)
    inference = Inference(
        device=info.device,
        channels_last=info.device.type == "cuda",
        num_workers=cfg.data.num_workers,
        postprocess=cfg.eval.postprocess,
    )
    if info.is_main:
        _prepare_export_folders(exporters, overwrite=overwrite)
    barrier()  # no rank writes a score file before the stale ones are gone
    model = load_model(
        weights,
        name=cfg.model.name,
        kwargs=cfg.model.kwargs,
        fill_ood_head=not reads_ood_head(cfg.eval.score),
    )
    model.to(info.device).eval()
    if inference.channels_last:
        model.to(memory_format=torch.channels_last)
    logger.info(
        "testing %s (%s) with score %r, postprocess %r",
        weights,
        cfg.model.name,
        cfg.eval.score,
        cfg.eval.postprocess,
    )
    prov = provenance(
        weights=str(weights),
        model=cfg.model.name,
        score=cfg.eval.score,
        postprocess=cfg.eval.postprocess,
        protocol=cfg.eval.protocol,
        per_image=cfg.eval.per_image,
    )
    for line in results_header(prov).splitlines():
        logger.info("%s", line.rstrip())
    results: dict[str, dict[str, object]] = {}
    threshold: dict[str, object] | None = None
    source_metric: MetricSink | None = None
    for name in order:
        try:
            dataset = build_benchmark(
                name,
                root=cfg.data.root,
                include_unlabelled=name in exporters and cfg.eval.export == "smiyc",
                mean=cfg.data.mean,
                std=cfg.data.std,
            )
        except FileNotFoundError as err:
            if named or name == threshold_source:
                raise
            logger.warning("skipping %s: %s", name, str(err).splitlines()[0])
            continue
        metric = MetricSink(
            cfg.eval.score, cfg.eval.protocol, per_image=cfg.eval.per_image, track=smiyc_track(name)
        )
        semantic = SemanticSink()
        exporter = exporters.get(name)
        references = [(name, metric)]
        if source_metric is not None:
            references.append((threshold_source, source_metric))
        sinks = [metric, semantic, *_picture_and_export_sinks(cfg, name, metric, exporter, references)]
        indices, total = rank_share(len(dataset))
        images = model_images(model, dataset, {cfg.eval.score: score_fn}, inference, indices=indices)
        with exporter if exporter is not None else nullcontext():  # closed (files written) or abandoned
            stream(images, sinks, desc=name, total=len(indices), progress=progress and info.is_main)
        if exporter is not None:
            logger.info("%s: %s files written under %s", name, cfg.eval.export, exporter.folder)
        if metric.n_labelled == 0:
            logger.warning("%s: no labelled image among %d; no metrics, only the export", name, total)
        if name == threshold_source:
            threshold = _threshold_of(metric, name)
            source_metric = metric if cfg.eval.save_heatmaps > 0 else None
        result = benchmark_result(
            metric,
            semantic,
            postprocess=cfg.eval.postprocess,
            threshold=None if threshold is None else float(threshold["value"]),
        )
        if threshold is not None and metric.n_labelled:
            result["threshold"] = threshold
        results[name] = result
        logger.info(
            "%s: %d labelled, %d unlabelled images done", name, metric.n_labelled, metric.n_unlabelled
        )
        if "not_applicable" in result:
            logger.warning("%s: pixel metrics not applicable: %s", name, result["not_applicable"])
        if info.is_main:
            export = {"format": cfg.eval.export, "dir": cfg.eval.export_dir} if exporter is not None else None
            entry = {**result, "provenance": {**prov, "export": export}}
            json_path, _ = write_results(cfg.run_dir, {name: entry})
            logger.info("%s: results merged into %s", name, json_path)
    if not results:
        raise FileNotFoundError(
            f"no benchmark of {cfg.eval.datasets} was found under {cfg.data.root}; "
            "see the README for the dataset tree"
        )
    results = {name: results[name] for name in cfg.eval.datasets if name in results}
    if info.is_main:
        print(f"\n{results_header(prov)}\n{results_table(results)}\n")
    return results


def _picture_and_export_sinks(
    cfg: Config,
    name: str,
    metric: MetricSink,
    exporter: Exporter | None,
    references: list[tuple[str, MetricSink]],
) -> list[Sink]:
    """The curves of ``metric``, heat-map panels with ``eval.save_heatmaps`` (thresholds and colour
    scale from the first of ``references`` with both classes) and the server export of benchmark
    ``name``; both pictures name the method by run id and score."""
    score = cfg.eval.score if cfg.eval.postprocess == "none" else f"{cfg.eval.score} + {cfg.eval.postprocess}"
    label = f"{cfg.id}: {score}" if cfg.id else score
    sinks: list[Sink] = [CurveSink(cfg.run_dir / f"curves_{name}.png", {label: metric}, title=name)]
    if cfg.eval.save_heatmaps > 0:
        sinks.append(
            HeatmapSink(
                cfg.run_dir / "heatmaps" / name,
                count=cfg.eval.save_heatmaps,
                score=cfg.eval.score,
                label=label,
                benchmark=name,
                mean=cfg.data.mean,
                std=cfg.data.std,
                references=references,
            )
        )
    if exporter is not None:
        sinks.append(ExportSink(exporter, cfg.eval.score))
    return sinks


def _threshold_of(metric: MetricSink, name: str) -> dict[str, object]:
    """The ``eval.threshold_from`` threshold: the highest score finding 95% of ``name``'s anomalies."""
    if not metric.has_curve:
        raise UserError(
            f"eval.threshold_from={name!r}: its pixel metrics are not applicable "
            f"({metric.evaluation.not_applicable() or 'no labelled image'}), so it cannot set a threshold"
        )
    return {"value": metric.evaluation.threshold_at_tpr(RECALL_LEVEL), "from": name, "tpr": RECALL_LEVEL}
