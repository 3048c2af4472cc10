"""The demo table and the paper's claim in miniature, from each method's results entries."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from demo.evaluation import ANOMALY_SET, COVARIATE_COLUMN, COVARIATE_SET, OOD_COLUMNS, ROWS, SHIFT_SET, Row
from lib.results import THRESHOLD_COLUMN, best_marks, bold, markdown_table, percent


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
    header = ["method", *(f"{s.removeprefix('toy_')} {c}" for s, c in columns)]
    header[-1] = "covariate FPR@shift-TPR95"
    printed = {(s, c): [percent(r[s][c]) for r in rows] for s, c in columns}
    marks = {
        key: best_marks(cells, lower_is_better=key[1] in lower_is_better) for key, cells in printed.items()
    }
    cells = [
        [r["method"], *(bold(printed[k][i]) if marks[k][i] else printed[k][i] for k in columns)]
        for i, r in enumerate(rows)
    ]
    return markdown_table(header, cells)


CLEARLY_LOWER_RATIO = 0.9
"""'Clearly lower' covariate false-positive rate: at most this fraction of the baseline's..."""
CLEARLY_LOWER_GAP = 0.05
"""... and at least this much lower in absolute terms (5 points), so two near-zero rates do not pass."""


@dataclass(frozen=True)
class Claim:
    """The claim for one architecture: ``method`` (the method's row) against the other ``rows`` of
    that architecture; its covariate false-positive rate must be clearly below each of
    ``covariate_baselines`` (named ``baselines_name`` in the check), and its ``toy_shift`` mIoU not
    below that of the closed-world model behind ``closed``."""

    architecture: str
    method: str
    rows: tuple[str, ...]
    covariate_baselines: tuple[str, ...]
    baselines_name: str
    closed: str


CLAIMS = (
    Claim(
        "DeepLabv3+ (light)",
        "multishift",
        ("closed_msp", "closed_maxlogit", "closed_energy", "oe_only", "multishift"),
        ("oe_only",),
        "oe_only",
        "closed_energy",
    ),
    Claim(
        "Mask2Former (tiny Mask2Anomaly)",
        "m2f_multishift",
        ("m2f_closed_mask_confidence", "m2f_closed_rba", "m2f_multishift"),
        ("m2f_closed_mask_confidence", "m2f_closed_rba"),
        "closed_world",
        "m2f_closed_mask_confidence",
    ),
)
"""One claim per architecture of the demo, over the rows of :data:`demo.evaluation.ROWS`."""


def _clearly_lower(value: float, baseline: float) -> bool:
    return value <= CLEARLY_LOWER_RATIO * baseline and value <= baseline - CLEARLY_LOWER_GAP


def claim_checks(rows: Sequence[Mapping], claim: Claim) -> dict[str, bool]:
    """The paper's claim in miniature for one architecture, checked on the results rows (what the
    slow test and CI assert): its method has the best AP and the best FPR95 on ``toy_shift`` among
    the architecture's rows (ties allowed), a clearly lower ``toy_covariate`` false-positive rate
    than each covariate baseline, and a ``toy_shift`` mIoU not below the closed-world model's."""
    by_method = {r["method"]: r for r in rows}
    mine = [by_method[m] for m in claim.rows]
    ms, closed = by_method[claim.method], by_method[claim.closed]
    ms_cov = ms[COVARIATE_SET][COVARIATE_COLUMN]
    baselines = [by_method[m][COVARIATE_SET][COVARIATE_COLUMN] for m in claim.covariate_baselines]
    return {
        "best_shift_AP": ms[SHIFT_SET]["AP"] >= max(r[SHIFT_SET]["AP"] for r in mine),
        "best_shift_FPR95": ms[SHIFT_SET]["FPR95"] <= min(r[SHIFT_SET]["FPR95"] for r in mine),
        f"covariate_FPR_clearly_below_{claim.baselines_name}": all(
            _clearly_lower(ms_cov, b) for b in baselines
        ),
        "shift_mIoU_not_below_closed_world": ms[SHIFT_SET]["mIoU"] >= closed[SHIFT_SET]["mIoU"],
    }
