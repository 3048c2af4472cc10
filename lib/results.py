"""The one results file and the one Markdown table writer.

``results.json`` holds ``{"benchmarks": {name: entry}}``. An entry is one benchmark's numbers
(fractions in ``[0, 1]``; ``images``, ``unlabelled`` counts; ``per_image`` means; ``not_applicable``
with the reason where the pixel metrics are undefined) plus its own ``provenance``: weights, model,
score, postprocess, protocol and its rule, FPR95 rule, per-image option, date and git commit, and
the export folder if any. Writing merges: a new run replaces the entries of the benchmarks it
evaluated and keeps the others, so single-benchmark runs under one id add up. Both files are
written atomically; ``results.md`` is rebuilt from the whole file: per group of entries that
share a provenance, the lines saying how the numbers were computed, then their table.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path

from lib.atomic import write_text_atomic
from lib.errors import UserError
from lib.models.checkpoints import git_commit
from lib.protocols import get_protocol

RESULTS_FILE = "results.json"
OOD_COLUMNS = ("AUROC", "AP", "FPR95")
COMPONENT_COLUMNS = ("best_f1", "sIoU", "PPV", "F1_mean")
THRESHOLD_COLUMN = "FPR_at_threshold"
SEMANTIC_COLUMNS = ("mIoU", "mAcc")
METRIC_COLUMNS = (
    *OOD_COLUMNS,
    *COMPONENT_COLUMNS,
    *(f"img {c}" for c in OOD_COLUMNS),
    THRESHOLD_COLUMN,
    *SEMANTIC_COLUMNS,
)
"""Every metric column of the tables, in print order; ``img X`` is the per-image mean of ``X``."""
NOT_APPLICABLE = "n/a"


def provenance(
    *,
    weights: str,
    score: str,
    protocol: str,
    model: str = "",
    postprocess: str = "none",
    per_image: bool = False,
    export: Mapping[str, str] | None = None,
) -> dict[str, object]:
    """How an entry's numbers were computed, stamped with the date (UTC) and the code's git commit."""
    rules = get_protocol(protocol)
    return {
        "weights": weights,
        "model": model,
        "score": score,
        "postprocess": postprocess,
        "protocol": protocol,
        "protocol_rule": rules.description,
        "fpr_rule": rules.fpr_rule,
        "per_image": per_image,
        "export": dict(export) if export else None,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "commit": git_commit(),
    }


def _legacy_provenance(data: dict) -> dict[str, object]:
    """The run-wide fields of a results file written before entries carried their provenance."""
    keys = ("weights", "model", "score", "postprocess", "protocol", "protocol_rule", "fpr_rule", "per_image")
    return {k: data[k] for k in keys if k in data} | {"export": data.get("export")}


def read_results(path: str | Path) -> dict[str, dict]:
    """``{benchmark: entry}`` of a ``results.json`` (or a run folder holding one), each entry with its
    ``provenance``; a missing or malformed file is a :class:`~lib.errors.UserError` naming it."""
    path = Path(path)
    file = path / RESULTS_FILE if path.is_dir() else path
    if not file.is_file():
        raise UserError(f"{file}: no results file (expected a run folder with {RESULTS_FILE})")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{file}: not valid JSON ({err})") from None
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), dict):
        raise UserError(f"{file}: expected a JSON object with a 'benchmarks' mapping of benchmark -> entry")
    legacy = _legacy_provenance(data)
    entries = {}
    for name, entry in data["benchmarks"].items():
        if not isinstance(entry, dict):
            raise UserError(
                f"{file}: benchmark {name!r} holds {entry!r}; expected a mapping of metric -> value "
                "with its 'provenance'"
            )
        if "provenance" not in entry:
            protocol = entry.get("protocol", legacy.get("protocol"))
            if protocol is None:
                raise UserError(
                    f"{file}: benchmark {name!r} does not say how it was computed (no provenance)"
                )
            entry = {**entry, "provenance": {**legacy, "protocol": protocol}}
        elif not isinstance(entry["provenance"], dict):
            raise UserError(
                f"{file}: benchmark {name!r} has provenance {entry['provenance']!r}; expected a mapping"
            )
        entries[name] = entry
    return entries


def write_results(path: str | Path, entries: Mapping[str, Mapping[str, object]]) -> tuple[Path, Path]:
    """Merge ``entries`` (each with its ``provenance``) into ``results.json`` at ``path`` (a run folder
    or the file) and rebuild ``results.md`` beside it; returns both paths."""
    path = Path(path)
    json_path = path if path.suffix == ".json" else path / RESULTS_FILE
    md_path = json_path.with_suffix(".md")
    for name, entry in entries.items():
        if "provenance" not in entry:
            raise ValueError(f"result of {name!r} has no provenance")
    merged = read_results(json_path) if json_path.exists() else {}
    merged.update({name: dict(entry) for name, entry in entries.items()})
    write_text_atomic(json_path, json.dumps({"benchmarks": merged}, indent=2) + "\n")
    write_text_atomic(md_path, results_markdown(merged))
    return json_path, md_path


def percent(value: object) -> str:
    """A table cell: a fraction in percent with two decimals, ``NaN``, or ``-`` where there is none."""
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return "NaN" if math.isnan(float(value)) else f"{100.0 * float(value):.2f}"


LOWER_IS_BETTER = frozenset({"FPR95", "img FPR95", THRESHOLD_COLUMN})
"""The metric columns where a smaller number is better (false-positive rates)."""


def best_marks(cells: Sequence[str], *, lower_is_better: bool) -> list[bool]:
    """Which cells of one column (strings of :func:`percent`) hold its best printed value: the
    smallest with ``lower_is_better``, else the largest; ties are all marked, ``-``, ``n/a`` and
    ``NaN`` never, and nothing is marked with fewer than two numbers to compare."""
    numbers = []
    for cell in cells:
        try:
            value = float(cell)
        except ValueError:
            value = math.nan
        numbers.append(value)
    finite = [v for v in numbers if not math.isnan(v)]
    if len(finite) < 2:
        return [False] * len(cells)
    best = min(finite) if lower_is_better else max(finite)
    return [v == best for v in numbers]


def bold(cell: str) -> str:
    """A Markdown table cell in bold."""
    return f"**{cell}**"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]], *, text_columns: int = 1) -> str:
    """The one Markdown table writer: the first ``text_columns`` columns left-aligned, the rest
    right-aligned numbers; cells are strings (see :func:`percent`)."""
    for row in rows:
        if len(row) != len(header):
            raise ValueError(f"row {list(row)} has {len(row)} cells for {len(header)} columns")
    align = ["---"] * text_columns + ["---:"] * (len(header) - text_columns)
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def entry_metrics(entry: Mapping[str, object]) -> dict[str, object]:
    """The table cells' values of one entry: its metrics by :data:`METRIC_COLUMNS` name, ``n/a`` for
    the pixel metrics of a benchmark where they are undefined."""
    values: dict[str, object] = {c: entry[c] for c in METRIC_COLUMNS if c in entry}
    per_image = entry.get("per_image")
    if isinstance(per_image, Mapping):
        values |= {f"img {c}": v for c, v in per_image.items() if c in OOD_COLUMNS}
    if "not_applicable" in entry:
        values |= dict.fromkeys(OOD_COLUMNS, NOT_APPLICABLE)
    return values


def _image_count(entry: Mapping[str, object]) -> str:
    unlabelled = int(entry.get("unlabelled", 0))
    return f"{entry['images']} (+{unlabelled} unlabelled)" if unlabelled else str(entry["images"])


def results_table(entries: Mapping[str, Mapping[str, object]]) -> str:
    """One row per benchmark, metrics in percent (``-`` where not computed, ``n/a`` where undefined);
    the anomaly columns always, the others when any benchmark has them. Below the table, the reason
    of each ``n/a``."""
    values = {name: entry_metrics(entry) for name, entry in entries.items()}
    columns = [c for c in METRIC_COLUMNS if c in OOD_COLUMNS or any(c in v for v in values.values())]
    rows = [
        [name, *(percent(values[name].get(c)) for c in columns), _image_count(entry)]
        for name, entry in entries.items()
    ]
    table = markdown_table(["benchmark", *columns, "images"], rows)
    notes = [
        f"- {name}: not applicable: {e['not_applicable']}"
        for name, e in entries.items()
        if "not_applicable" in e
    ]
    thresholds = {
        json.dumps(e["threshold"], sort_keys=True): e["threshold"]
        for e in entries.values()
        if "threshold" in e
    }
    notes += [
        f"- {THRESHOLD_COLUMN}: false-positive rate at score >= {t['value']:.6g}, the highest threshold that "
        f"finds {100 * t['tpr']:.0f}% of the anomaly pixels of {t['from']}"
        for t in thresholds.values()
    ]
    return table + ("\n\n" + "\n".join(notes) if notes else "")


def results_header(prov: Mapping[str, object]) -> str:
    """Markdown lines saying how every number of a table was computed (console and results.md)."""
    model = f" (model `{prov['model']}`)" if prov.get("model") else ""
    per = (
        "yes: `img` columns are means over the images that have both classes"
        if prov.get("per_image")
        else "no (pooled over all pixels of a benchmark)"
    )
    lines = [
        f"Weights: `{prov.get('weights', '')}`{model}",
        f"Score: `{prov.get('score', '')}`, postprocess: `{prov.get('postprocess', 'none')}`",
        f"Protocol: `{prov.get('protocol', '')}` — {prov.get('protocol_rule', '')}",
        f"FPR95 rule: {prov.get('fpr_rule', '')}",
        f"Per-image means: {per}",
    ]
    if prov.get("export"):
        export = prov["export"]
        lines.append(f"Exported: `{export.get('format')}` files in `{export.get('dir')}`")
    return "  \n".join(lines) + "\n"


_STAMP_KEYS = ("date", "commit")


def results_markdown(entries: Mapping[str, Mapping[str, object]]) -> str:
    """Per group of entries that share a provenance (date and commit aside): its header, the date
    and commit of its entries, and its table."""
    groups: dict[str, list[str]] = {}
    for name, entry in entries.items():
        prov = {k: v for k, v in dict(entry["provenance"]).items() if k not in _STAMP_KEYS}
        groups.setdefault(json.dumps(prov, sort_keys=True), []).append(name)
    parts = []
    for names in groups.values():
        prov = entries[names[0]]["provenance"]
        stamps = sorted(
            {
                (str(entries[n]["provenance"].get("date")), str(entries[n]["provenance"].get("commit")))
                for n in names
            }
        )
        when = "; ".join(f"{d} (commit `{c}`)" for d, c in stamps)
        parts.append(
            results_header(prov)
            + f"Evaluated: {when}\n\n"
            + results_table({n: entries[n] for n in names})
            + "\n"
        )
    return "\n".join(parts)
