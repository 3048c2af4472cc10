"""The demo table and the paper's claim in miniature, from each method's results entries."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from demo.evaluation import ANOMALY_SET, COVARIATE_COLUMN, COVARIATE_SET, OOD_COLUMNS, ROWS, SHIFT_SET, Row
from lib.results import THRESHOLD_COLUMN, markdown_table, percent


def result_rows(results: Mapping[str, Mapping[str, Mapping]], rows: Sequence[Row] = ROWS) -> list[dict]:
    """The demo's rows from each method's results: its metrics on each set, fractions in ``[0, 1]``."""
    out = []
    for row in rows:
        entries = results[row.method]
        out.append(
            {
                "method": row.method,
                ANOMALY_SET: {c: entries[ANOMALY_SET][c] for c in OOD_COLUMNS},
                SHIFT_SET: {c: entries[SHIFT_SET][c] for c in (*OOD_COLUMNS, "mIoU")},
                COVARIATE_SET: {COVARIATE_COLUMN: entries[COVARIATE_SET][THRESHOLD_COLUMN]},
            }
        )
    return out


def demo_table(rows: Sequence[Mapping]) -> str:
    """The results rows as a Markdown table in percent; the best value of each column in bold."""
    columns = [
        *((ANOMALY_SET, c) for c in OOD_COLUMNS),
        *((SHIFT_SET, c) for c in (*OOD_COLUMNS, "mIoU")),
        (COVARIATE_SET, COVARIATE_COLUMN),
    ]
    lower_is_better = {"FPR95", COVARIATE_COLUMN}
    best = {}
    for s, c in columns:
        values = [r[s][c] for r in rows]
        best[(s, c)] = min(values) if c in lower_is_better else max(values)
    header = ["method", *(f"{s.removeprefix('toy_')} {c}" for s, c in columns)]
    header[-1] = "covariate FPR@shift-TPR95"
    cells = [
        [
            r["method"],
            *(f"**{percent(r[s][c])}**" if r[s][c] == best[(s, c)] else percent(r[s][c]) for s, c in columns),
        ]
        for r in rows
    ]
    return markdown_table(header, cells)


CLEARLY_LOWER_RATIO = 0.9
"""'Clearly lower' covariate false-positive rate: at most this fraction of the baseline's..."""
CLEARLY_LOWER_GAP = 0.05
"""... and at least this much lower in absolute terms (5 points), so two near-zero rates do not pass."""


def claim_checks(rows: Sequence[Mapping]) -> dict[str, bool]:
    """The paper's claim in miniature, checked on the results rows (what the slow test and CI assert):
    MultiShift has the best AP and the best FPR95 on ``toy_shift`` (ties allowed), a clearly lower
    ``toy_covariate`` false-positive rate than ``oe_only``, and a ``toy_shift`` mIoU not below the
    closed-world model's."""
    by_method = {r["method"]: r for r in rows}
    ms, oe, closed = by_method["multishift"], by_method["oe_only"], by_method["closed_energy"]
    ms_cov, oe_cov = ms[COVARIATE_SET][COVARIATE_COLUMN], oe[COVARIATE_SET][COVARIATE_COLUMN]
    return {
        "best_shift_AP": ms[SHIFT_SET]["AP"] >= max(r[SHIFT_SET]["AP"] for r in rows),
        "best_shift_FPR95": ms[SHIFT_SET]["FPR95"] <= min(r[SHIFT_SET]["FPR95"] for r in rows),
        "covariate_FPR_clearly_below_oe_only": ms_cov <= CLEARLY_LOWER_RATIO * oe_cov
        and ms_cov <= oe_cov - CLEARLY_LOWER_GAP,
        "shift_mIoU_not_below_closed_world": ms[SHIFT_SET]["mIoU"] >= closed[SHIFT_SET]["mIoU"],
    }
