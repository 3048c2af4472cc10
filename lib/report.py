"""Merge several runs' ``results.json`` into one Markdown table: ``python -m lib.report RUN... [--out F]``.

Each ``RUN`` is a run folder holding ``results.json`` (as :func:`lib.results.write_results` writes
it: one entry per benchmark with its own provenance) or the file itself. The table has one row per
(benchmark, run), benchmarks in order of first appearance, runs in the order given, with the score
and protocol of that entry; metrics are fractions in the files and printed as percentages with two
decimals (``-`` where a run did not compute one, ``n/a`` where it is undefined); a score with
``eval.postprocess`` shows it (``learned + gaussian_blur``). Below the table every run is listed
with its weights, scores and protocols, and a warning is printed when the rows do not share one
protocol, as their numbers are then not comparable. In each benchmark the best value of every
column is bold among the rows of one protocol (lower is better for the FPR columns; nothing is bold
with a single row). ``--plot FILE`` also draws AP and FPR95 per benchmark and run as a bar chart.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure

from lib.atomic import write_text_atomic
from lib.cli_errors import run_cli
from lib.errors import UserError
from lib.panels import save_figure
from lib.plots import grouped_bars
from lib.results import (
    LOWER_IS_BETTER,
    METRIC_COLUMNS,
    NOT_APPLICABLE,
    RESULTS_FILE,
    best_marks,
    bold,
    entry_metrics,
    markdown_table,
    percent,
    read_results,
)

METRICS = METRIC_COLUMNS
"""Every column the table knows, in print order; ``img X`` is the per-image mean of ``X``."""
PLOT_METRICS = ("AP", "FPR95")


@dataclass(frozen=True)
class RunResults:
    """One run's results: per benchmark its ``{metric: fraction}``, image count and provenance."""

    path: Path
    benchmarks: dict[str, dict[str, float | str]]
    images: dict[str, int]
    provenance: dict[str, dict[str, object]]


def _metrics_of(entry: Mapping[str, object], where: str) -> dict[str, float | str]:
    values = entry_metrics(entry)
    for metric, value in values.items():
        if value == NOT_APPLICABLE:
            continue
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise UserError(f"{where}: {metric} is {value!r}, expected a number")
        if not math.isnan(value) and not 0.0 <= value <= 1.0:
            raise UserError(f"{where}: {metric} = {value} is not a fraction in [0, 1] (percent?)")
    return {m: v if v == NOT_APPLICABLE else float(v) for m, v in values.items()}


def load_run(path: str | Path) -> RunResults:
    """Read a run folder's ``results.json`` (or that file); a missing or malformed file is a
    :class:`~lib.errors.UserError` naming it."""
    path = Path(path)
    file = path / RESULTS_FILE if path.is_dir() else path
    entries = read_results(file)
    benchmarks, images, provenance = {}, {}, {}
    for name, entry in entries.items():
        benchmarks[name] = _metrics_of(entry, f"{file}: {name}")
        provenance[name] = dict(entry["provenance"])
        if "images" in entry:
            images[name] = int(entry["images"])
    return RunResults(path=path, benchmarks=benchmarks, images=images, provenance=provenance)


def run_labels(runs: Sequence[RunResults]) -> list[str]:
    """Run folder names, or the paths as given where two folders share a name."""
    names = [r.path.parent.name if r.path.name == RESULTS_FILE else r.path.name for r in runs]
    return [str(r.path) if names.count(n) > 1 else n for r, n in zip(runs, names)]


def _score_label(prov: Mapping[str, object]) -> str:
    """The score name, with its post-processing when there is one (``learned + gaussian_blur``)."""
    postprocess = prov.get("postprocess", "none")
    return str(prov.get("score", "")) if postprocess == "none" else f"{prov.get('score', '')} + {postprocess}"


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
    rows = []
    for name in benchmarks:
        group = []
        for run, label in zip(runs, labels):
            if name not in run.benchmarks:
                continue
            prov = run.provenance[name]
            cells = [percent(run.benchmarks[name].get(m)) for m in columns]
            count = str(run.images.get(name, "-"))
            group.append([name, label, _score_label(prov), str(prov.get("protocol", "")), *cells, count])
        rows += _bold_best(group, columns)
    lines = [
        markdown_table(["benchmark", "run", "score", "protocol", *columns, "images"], rows, text_columns=4),
        "",
    ]
    for run, label in zip(runs, labels):
        described = []
        for prov in {_legend_key(p): p for p in run.provenance.values()}.values():
            model = f", model `{prov['model']}`" if prov.get("model") else ""
            rule = f" ({prov['fpr_rule']})" if prov.get("fpr_rule") else ""
            described.append(
                f"weights `{prov.get('weights', '')}`{model}, score `{_score_label(prov)}`, "
                f"protocol `{prov.get('protocol', '')}`{rule}"
            )
        lines.append(f"- `{label}`: " + "; ".join(described))
    protocols = sorted({str(p.get("protocol", "")) for r in runs for p in r.provenance.values()})
    if len(protocols) > 1:
        lines += ["", f"**Warning:** the runs use different protocols ({', '.join(protocols)}); compare rows "
                  "only within one protocol."]  # fmt: skip
    return "\n".join(lines) + "\n"


def _bold_best(group: list[list[str]], columns: Sequence[str]) -> list[list[str]]:
    """The rows of one benchmark with the best value of each metric column in bold, among the rows
    of the same protocol (the only comparable ones); lower is better for the FPR columns."""
    protocols = [row[3] for row in group]
    for protocol in set(protocols):
        members = [i for i, p in enumerate(protocols) if p == protocol]
        for j, metric in enumerate(columns, start=4):
            marks = best_marks([group[i][j] for i in members], lower_is_better=metric in LOWER_IS_BETTER)
            for i, marked in zip(members, marks):
                if marked:
                    group[i][j] = bold(group[i][j])
    return group


def metric_bars(runs: Sequence[RunResults], *, metrics: Sequence[str] = PLOT_METRICS) -> Figure:
    """Bar chart of ``metrics`` (one panel each) per benchmark (groups) and run (bars, named by run
    and score, as in the table), in percent; a run without the number leaves a gap, a benchmark
    without any (``n/a`` everywhere) is left out."""
    labels = run_labels(runs)
    benchmarks = list(dict.fromkeys(name for r in runs for name in r.benchmarks))
    series = {}
    for run, label in zip(runs, labels):
        for name, values in run.benchmarks.items():
            key = f"{label} ({_score_label(run.provenance[name])})"
            for metric in metrics:
                value = values.get(metric)
                if isinstance(value, float) and not math.isnan(value):
                    series.setdefault(key, {}).setdefault(metric, {})[name] = 100.0 * value
    drawn = [name for name in benchmarks if any(name in m for s in series.values() for m in s.values())]
    if not drawn:
        raise UserError(f"--plot: no run has a number for {' or '.join(metrics)}")
    return grouped_bars(
        {m: {key: s.get(m, {}) for key, s in series.items()} for m in metrics},
        groups=drawn,
        ylabel={m: f"{m} (%, {'lower' if m in LOWER_IS_BETTER else 'higher'} is better)" for m in metrics},
    )


def _legend_key(prov: Mapping[str, object]) -> tuple:
    return tuple(
        str(prov.get(k, "")) for k in ("weights", "model", "score", "postprocess", "protocol", "fpr_rule")
    )


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Merge runs' results.json into one Markdown table.")
    parser.add_argument(
        "runs", nargs="+", metavar="RUN", help="run folder (with results.json) or results file"
    )
    parser.add_argument("--out", default=None, help="write the table to this file instead of stdout")
    parser.add_argument("--metrics", nargs="+", default=None, choices=METRICS, help="columns to show")
    parser.add_argument(
        "--plot",
        default=None,
        metavar="FILE",
        help="also draw a PNG bar chart of AP and FPR95 per benchmark and run",
    )
    return parser


def main(args: argparse.Namespace) -> None:
    runs = [load_run(p) for p in args.runs]
    table = merge_table(runs, metrics=args.metrics)
    if args.plot is not None:
        save_figure(args.plot, metric_bars(runs))
    if args.out is None:
        sys.stdout.write(table)
        return
    write_text_atomic(args.out, table)


if __name__ == "__main__":
    run_cli(main, get_args_parser())
