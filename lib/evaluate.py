"""Evaluate anomaly score maps made by any method, under this project's protocols.

    python -m lib.evaluate --benchmark NAME --scores DIR [--protocol published|exact|smiyc]
        [--root DATASETS] [--out results.json] [--method LABEL] [--per_image]

``DIR`` holds one file per image of the benchmark, named by the image's file stem: ``<stem>.npy``
(a float ``[H, W]`` array) or ``<stem>.hdf5`` (the SMIYC layout that ``--export smiyc`` writes:
dataset ``value``), higher = more anomalous. Every labelled image needs its file; a file that
matches no image of the benchmark, a missing file, a map of another size or with NaN/inf values is
an error naming the files. Files of unlabelled frames (the SMIYC test frames) are accepted and
ignored. The maps go through the same loop, sinks and protocols as ``test_*.py`` (files instead of
a model), so the printed table and the ``results.json`` entry (merged into ``--out``) are the
ones a model tested here gets: the fair way to compare another method's maps with ours.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from lib.cli_errors import run_cli
from lib.data.benchmarks import BENCHMARKS, DEFAULT_ROOT, AnomalyBenchmark, build_benchmark
from lib.engine.evaluator import MetricSink, ScoredImage, benchmark_result, stream
from lib.errors import UserError
from lib.protocols import SMIYC_TRACK_OF_BENCHMARK, get_protocol, protocol_names, smiyc_track
from lib.results import provenance, results_header, results_table, write_results
from lib.submission import SMIYC_DATASET

SCORE_SUFFIXES = (".npy", ".hdf5")
SCORE_KEY = "file"
"""The score name the loop's sinks read the file maps under."""
_LISTED = 10


def _listing(paths: Sequence[object]) -> str:
    shown = ", ".join(str(p) for p in paths[:_LISTED])
    return shown + (f" and {len(paths) - _LISTED} more" if len(paths) > _LISTED else "")


def match_score_files(folder: Path, dataset: AnomalyBenchmark) -> dict[int, Path]:
    """``{image index: score file}`` for the labelled images of ``dataset``; missing, extra or
    doubled files are a :class:`~lib.errors.UserError` naming them."""
    if not folder.is_dir():
        raise UserError(f"--scores {folder}: not a folder (expected one score file per image)")
    files: dict[str, Path] = {}
    doubled = []
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix in SCORE_SUFFIXES:
            if path.stem in files:
                doubled.append(path)
            files[path.stem] = path
    if doubled:
        raise UserError(f"{folder}: two score files for one image: {_listing(doubled)}")
    names = {name: i for i, (name, _, _) in enumerate(dataset.samples)}
    extra = sorted(str(files[stem]) for stem in files if stem not in names)
    if extra:
        raise UserError(
            f"{folder}: {len(extra)} score files match no image of {dataset.root}: {_listing(extra)} "
            f"(files are named by image stem, e.g. {next(iter(names), '?')}.npy)"
        )
    labelled = [(name, i) for name, i in names.items() if dataset.samples[i][2] is not None]
    missing = [f"{name}{{{','.join(SCORE_SUFFIXES)}}}" for name, _ in labelled if name not in files]
    if missing:
        raise UserError(f"{folder}: {len(missing)} labelled images have no score file: {_listing(missing)}")
    return {i: files[name] for name, i in labelled}


def read_score_file(path: Path) -> np.ndarray:
    """The ``[H, W]`` map of one ``.npy`` or SMIYC ``.hdf5`` file as float32; a wrong file is a
    :class:`~lib.errors.UserError` naming it."""
    try:
        if path.suffix == ".npy":
            scores = np.load(path, allow_pickle=False)
        else:
            try:
                import h5py
            except ImportError as err:
                raise UserError(f"{path}: reading .hdf5 score files needs h5py (pip install h5py)") from err
            with h5py.File(path, "r") as f:
                if SMIYC_DATASET not in f:
                    raise UserError(
                        f"{path}: no dataset {SMIYC_DATASET!r} (the SMIYC layout); found {list(f)}"
                    )
                scores = f[SMIYC_DATASET][()]
    except (OSError, ValueError) as err:
        raise UserError(f"{path}: cannot read a score map ({err})") from None
    if scores.ndim != 2 or scores.dtype.kind not in "fiu":
        raise UserError(
            f"{path}: expected a real [H, W] score map, got {scores.dtype} of shape {scores.shape}"
        )
    scores = scores.astype(np.float32)
    if not np.isfinite(scores).all():
        raise UserError(f"{path}: {np.count_nonzero(~np.isfinite(scores))} score values are NaN or inf")
    return scores


def file_images(dataset: AnomalyBenchmark, files: Mapping[int, Path]) -> Iterator[ScoredImage]:
    """The loop's items from score files: each labelled image's labels with its file's map."""
    for index, path in files.items():
        item = dataset[index]
        scores = read_score_file(path)
        label = item["ood_label"]
        if scores.shape != tuple(label.shape):
            raise UserError(
                f"{path}: score map of size {scores.shape[0]}x{scores.shape[1]}, but image "
                f"{item['name']} is {label.shape[0]}x{label.shape[1]}"
            )
        yield ScoredImage(
            index=index,
            name=str(item["name"]),
            scores={SCORE_KEY: torch.from_numpy(scores)},
            ood_label=label,
            sem_label=item.get("sem_label"),
        )


def evaluate_score_files(
    benchmark: str,
    scores: str | Path,
    *,
    protocol: str = "published",
    root: str | Path = DEFAULT_ROOT,
    per_image: bool = False,
    progress: bool = True,
) -> dict[str, object]:
    """The result of the score maps in ``scores`` on ``benchmark`` (what ``test_*.py`` reports)."""
    get_protocol(protocol)
    BENCHMARKS.get(benchmark)
    dataset = build_benchmark(benchmark, root=root, include_unlabelled=benchmark in SMIYC_TRACK_OF_BENCHMARK)
    files = match_score_files(Path(scores), dataset)
    metric = MetricSink(SCORE_KEY, protocol, per_image=per_image, track=smiyc_track(benchmark))
    stream(file_images(dataset, files), [metric], desc=benchmark, total=len(files), progress=progress)
    return benchmark_result(metric)


def method_label(folder: Path) -> str:
    """The maps' default label: the folder name, or ``<method>`` for the SMIYC layout
    ``anomaly_p/<method>/<track>-all``."""
    folder = folder.resolve()
    return folder.parent.name if folder.name.endswith("-all") else folder.name


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lib.evaluate", description="Evaluate score maps of any method on a benchmark."
    )
    parser.add_argument("--benchmark", required=True, choices=BENCHMARKS.names(), help="benchmark name")
    parser.add_argument("--scores", required=True, help="folder with <image stem>.npy or .hdf5 per image")
    parser.add_argument("--protocol", default="published", choices=protocol_names(), help="metric protocol")
    parser.add_argument("--root", default=DEFAULT_ROOT, help="datasets root (default ./datasets)")
    parser.add_argument("--out", default="results.json", help="results file to merge the entry into")
    parser.add_argument(
        "--method", default=None, help="label of the maps in the results (default: from the folder)"
    )
    parser.add_argument("--per_image", action="store_true", help="also the means of per-image metrics")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    return parser


def main(args: argparse.Namespace) -> dict[str, object]:
    folder = Path(args.scores)
    result = evaluate_score_files(
        args.benchmark,
        folder,
        protocol=args.protocol,
        root=args.root,
        per_image=args.per_image,
        progress=not args.no_progress,
    )
    prov = provenance(
        weights=str(folder),
        model="score files",
        score=args.method or method_label(folder),
        protocol=args.protocol,
        per_image=args.per_image,
    )
    json_path, md_path = write_results(args.out, {args.benchmark: {**result, "provenance": prov}})
    print(f"\n{results_header(prov)}\n{results_table({args.benchmark: result})}\n")
    print(f"results: {json_path}, {md_path}")
    return result


if __name__ == "__main__":
    run_cli(main, get_args_parser())
