"""Merge several runs' ``results.json`` into one Markdown table: ``python -m lib.report RUN... [--out F]``.

Each ``RUN`` is a run folder holding ``results.json`` (as written by
:func:`lib.engine.evaluator.write_results`) or the file itself. The table has one row per
(benchmark, run), benchmarks in order of first appearance, runs in the order given; metrics are
fractions in the files and printed as percentages with two decimals (``-`` where a run did not
compute one); a score with ``eval.postprocess`` shows it (``learned + gaussian_blur``). Below the
table every run is listed with its weights, score and protocol, and a warning is printed when the
runs do not share one protocol, as their numbers are then not comparable.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lib.atomic import write_text_atomic
from lib.cli_errors import run_cli
from lib.errors import UserError

RESULTS_FILE = "results.json"
PIXEL_METRICS = ("AUROC", "AP", "FPR95")
METRICS = (
    *PIXEL_METRICS,
    "best_f1",
    "sIoU",
    "PPV",
    "F1_mean",
    *(f"img {m}" for m in PIXEL_METRICS),
    "mIoU",
    "mAcc",
)
"""Every column the table knows, in print order; ``img X`` is the per-image mean of ``X``."""
_BENCHMARK_KEYS = ("benchmarks", "datasets")
_COUNT_KEYS = ("images", "n_images")


@dataclass(frozen=True)
class RunResults:
    """One run's results: ``benchmarks`` maps a benchmark to ``{metric: fraction}`` and ``images``."""

    path: Path
    protocol: str
    fpr_rule: str
    score: str
    postprocess: str
    weights: str
    model: str
    benchmarks: dict[str, dict[str, float]]
    images: dict[str, int]


def _metrics_of(entry: dict, where: str) -> dict[str, float]:
    values = {m: entry[m] for m in METRICS if m in entry}
    values.update({f"img {m}": v for m, v in dict(entry.get("per_image", {})).items() if m in PIXEL_METRICS})
    for metric, value in values.items():
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise UserError(f"{where}: {metric} is {value!r}, expected a number")
        if not math.isnan(value) and not 0.0 <= value <= 1.0:
            raise UserError(f"{where}: {metric} = {value} is not a fraction in [0, 1] (percent?)")
    return {m: float(v) for m, v in values.items()}


def load_run(path: str | Path) -> RunResults:
    """Read a run folder's ``results.json`` (or that file); a missing or malformed file is an error."""
    path = Path(path)
    file = path / RESULTS_FILE if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"{file}: no results file (expected a run folder with {RESULTS_FILE})")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise UserError(f"{file}: not valid JSON ({err})") from err
    key = next((k for k in _BENCHMARK_KEYS if k in data), None) if isinstance(data, dict) else None
    if key is None or not isinstance(data[key], dict):
        raise UserError(f"{file}: expected a JSON object with a {_BENCHMARK_KEYS[0]!r} mapping")
    if "protocol" not in data:
        raise UserError(f"{file}: missing 'protocol'; results must say how they were computed")
    benchmarks, images = {}, {}
    for name, entry in data[key].items():
        benchmarks[name] = _metrics_of(entry, f"{file}: {name}")
        count = next((entry[k] for k in _COUNT_KEYS if k in entry), None)
        if count is not None:
            images[name] = int(count)
    return RunResults(
        path=path,
        protocol=str(data["protocol"]),
        fpr_rule=str(data.get("fpr_rule", "")),
        score=str(data.get("score", "")),
        postprocess=str(data.get("postprocess", "none")),
        weights=str(data.get("weights", "")),
        model=str(data.get("model", "")),
        benchmarks=benchmarks,
        images=images,
    )


def run_labels(runs: Sequence[RunResults]) -> list[str]:
    """Run folder names, or the paths as given where two folders share a name."""
    names = [r.path.parent.name if r.path.name == RESULTS_FILE else r.path.name for r in runs]
    return [str(r.path) if names.count(n) > 1 else n for r, n in zip(runs, names)]


def _score_label(run: RunResults) -> str:
    """The score name, with its post-processing when there is one (``learned + gaussian_blur``)."""
    return run.score if run.postprocess == "none" else f"{run.score} + {run.postprocess}"


def _cell(value: float | None) -> str:
    if value is None:
        return "-"
    return "NaN" if math.isnan(value) else f"{100.0 * value:.2f}"


def merge_table(runs: Sequence[RunResults], *, metrics: Sequence[str] | None = None) -> str:
    """Markdown: the (benchmark, run) table, then the run legend (module doc)."""
    if not runs:
        raise UserError("no runs to merge")
    if metrics is not None:
        unknown = [m for m in metrics if m not in METRICS]
        if unknown:
            raise UserError(f"unknown metrics {unknown}; known: {', '.join(METRICS)}")
    labels = run_labels(runs)
    present = {m for r in runs for values in r.benchmarks.values() for m in values}
    columns = list(metrics) if metrics is not None else [m for m in METRICS if m in present]
    benchmarks = list(dict.fromkeys(name for r in runs for name in r.benchmarks))
    lines = [
        "| benchmark | run | score | protocol | " + " | ".join(columns) + " | images |",
        "| --- | --- | --- | --- | " + " | ".join("---:" for _ in columns) + " | ---: |",
    ]
    for name in benchmarks:
        for run, label in zip(runs, labels):
            if name not in run.benchmarks:
                continue
            cells = [_cell(run.benchmarks[name].get(m)) for m in columns]
            count = run.images.get(name, "-")
            lines.append(
                f"| {name} | {label} | {_score_label(run)} | {run.protocol} | "
                + " | ".join(cells)
                + f" | {count} |"
            )
    lines.append("")
    for run, label in zip(runs, labels):
        model = f", model `{run.model}`" if run.model else ""
        rule = f" ({run.fpr_rule})" if run.fpr_rule else ""
        what = f"score `{_score_label(run)}`, protocol `{run.protocol}`{rule}"
        lines.append(f"- `{label}`: weights `{run.weights}`{model}, {what}")
    protocols = sorted({r.protocol for r in runs})
    if len(protocols) > 1:
        lines += ["", f"**Warning:** the runs use different protocols ({', '.join(protocols)}); compare rows "
                  "only within one protocol."]  # fmt: skip
    return "\n".join(lines) + "\n"


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Merge runs' results.json into one Markdown table.")
    parser.add_argument(
        "runs", nargs="+", metavar="RUN", help="run folder (with results.json) or results file"
    )
    parser.add_argument("--out", default=None, help="write the table to this file instead of stdout")
    parser.add_argument("--metrics", nargs="+", default=None, choices=METRICS, help="columns to show")
    return parser


def main(args: argparse.Namespace) -> None:
    table = merge_table([load_run(p) for p in args.runs], metrics=args.metrics)
    if args.out is None:
        sys.stdout.write(table)
        return
    write_text_atomic(args.out, table)


if __name__ == "__main__":
    run_cli(main, get_args_parser())
