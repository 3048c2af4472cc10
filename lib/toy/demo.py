"""`make demo`: the paper's claim in miniature on ToyShift, generate -> train -> test on a CPU.

    python -m lib.toy.demo --out outputs/demo [--stage NAME] [--fresh] [--seed N]

Stages, in order (each shows progress bars, is skipped when its record ``stages/<name>.json``
exists, and can be rerun alone with ``--stage NAME --fresh``):

- ``data``: ToyShift source set, training-family outlier bank and the three test sets under
  ``datasets/`` (:mod:`lib.toy.writers`);
- ``generate``: its CG-Aug twin through the generation CLI with the procedural backend
  (``exp/generation_toy.yaml``) into ``datasets/multishift_cityscapes``;
- ``pretrain``: closed-world light DeepLab, cross-entropy only (``exp/toy_pretrain.yaml``);
- ``oe_only``: outlier-exposure-only fine-tuning of it (``exp/toy_oe.yaml``);
- ``multishift``: the method, two stages, RCL + pixel selection (``exp/toy_multishift.yaml``);
- ``evaluate``: every method on ``toy_anomaly``, ``toy_shift``, ``toy_covariate``
  (:mod:`lib.toy.demo_eval`) -> ``methods/<method>/results.{json,md}`` (the project's results
  files, so ``python -m lib.report outputs/demo/methods/*`` reads them), ``plots/``, ``heatmaps/``;
- ``report``: ``results.json`` / ``results.md`` and the table on the console.

Training runs go to ``runs/<stage>/`` (log, config, ``last.pth``); an interrupted training stage
resumes from its ``last.pth``. Everything is seeded by ``--seed`` (default 0; the world's seed and
every training stage's ``train.seed``): the same seed gives the same numbers on the same machine.

The module sets ``OMP_WAIT_POLICY=PASSIVE`` (unless set already) before it imports torch, which
takes effect under ``python -m lib.toy.demo`` (torch not loaded yet): with OpenMP's default
spin-waiting, one other busy process on a 2-core machine makes every training step about 15 times
slower; passive waiting costs about 20% on an idle machine.
"""

# ruff: noqa: E402  (the OpenMP wait policy must be set before the first torch import)
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from generation.__main__ import get_args_parser as generation_parser
from generation.__main__ import main as generation_main
from lib.atomic import make_folder, write_text_atomic
from lib.cli_errors import run_cli
from lib.config import Config, load_config
from lib.engine.distributed import DistInfo
from lib.engine.logging_utils import setup_logging
from lib.engine.trainer import LAST
from lib.engine.training import run_training
from lib.errors import UnknownNameError, UserError
from lib.models.checkpoints import load_model
from lib.protocols import get_protocol
from lib.results import provenance, read_results, write_results
from lib.toy.demo_eval import (
    COVARIATE_COLUMN,
    COVARIATE_SET,
    PROTOCOL,
    ROWS,
    SHIFT_SET,
    TEST_SETS,
    claim_checks,
    demo_table,
    evaluate_rows,
    method_results,
    result_rows,
    save_heatmaps,
    save_plots,
)
from lib.toy.writers import write_benchmark, write_outlier_bank, write_source_dataset

STAGES = ("data", "generate", "pretrain", "oe_only", "multishift", "evaluate", "report")
EXP_DIR = Path(__file__).resolve().parents[2] / "exp"
TRAIN_CONFIGS = {
    "pretrain": "toy_pretrain.yaml",
    "oe_only": "toy_oe.yaml",
    "multishift": "toy_multishift.yaml",
}
GENERATION_CONFIG = "generation_toy.yaml"
MULTISHIFT_DIR = "multishift_cityscapes"
CPU = DistInfo(0, 1, torch.device("cpu"))
MODEL_STAGES = {"closed": "pretrain", "oe_only": "oe_only", "multishift": "multishift"}
"""Model of the rows (:data:`lib.toy.demo_eval.ROWS`) -> the training stage that made it."""


@dataclass(frozen=True)
class WorldSizes:
    """How much ToyShift the demo writes: images per set, image size and the world seed."""

    n_train: int = 400
    n_outliers: int = 96
    n_test: int = 60
    height: int = 128
    width: int = 256
    seed: int = 0


def available_threads() -> int:
    """The CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class Demo:
    """The demo's stages over one output folder ``out``.

    ``overrides`` holds extra ``section.key=value`` config overrides per training stage (the tests
    shrink the schedules with it); ``progress`` toggles the progress bars.
    """

    def __init__(
        self,
        out: str | Path,
        *,
        sizes: WorldSizes = WorldSizes(),
        overrides: Mapping[str, Sequence[str]] | None = None,
        progress: bool = True,
    ) -> None:
        unknown = sorted(set(overrides or {}) - set(TRAIN_CONFIGS))
        if unknown:
            raise UnknownNameError(
                f"overrides for unknown training stage(s) {unknown}; known: {list(TRAIN_CONFIGS)}"
            )
        self.out = Path(out)
        self.sizes = sizes
        self.overrides = {k: list(v) for k, v in (overrides or {}).items()}
        self.progress = progress
        self.datasets = self.out / "datasets"
        self.runs = self.out / "runs"
        self.records = self.out / "stages"

    # bookkeeping -------------------------------------------------------------------------------
    def record_path(self, stage: str) -> Path:
        return self.records / f"{stage}.json"

    def record(self, stage: str) -> dict[str, object]:
        """The record ``stage`` left when it finished; an unreadable one is an error naming the file."""
        path = self.record_path(stage)
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            record = err
        if not isinstance(record, dict) or not {"world", "seconds"} <= record.keys():
            raise UserError(
                f"{path}: corrupt stage record ({record}); expected the JSON object the demo writes "
                f"when a stage finishes. Redo the stage: python -m lib.toy.demo --out {self.out} "
                f"--stage {stage} --fresh"
            )
        return record

    def outputs(self, stage: str) -> list[Path]:
        """The files and folders ``stage`` writes (what ``--fresh`` removes)."""
        return {
            "data": [self.datasets / n for n in ("cityscapes", "coco", *TEST_SETS)],
            "generate": [self.datasets / MULTISHIFT_DIR],
            "pretrain": [self.runs / "pretrain"],
            "oe_only": [self.runs / "oe_only"],
            "multishift": [self.runs / "multishift"],
            "evaluate": [self.out / "methods", self.out / "plots", self.out / "heatmaps"],
            "report": [self.out / "results.json", self.out / "results.md"],
        }[stage]

    def is_done(self, stage: str) -> bool:
        """Whether ``stage`` finished in this folder; one finished for another world is an error."""
        if not (self.record_path(stage).is_file() and all(p.exists() for p in self.outputs(stage))):
            return False
        world = self.record(stage)["world"]
        if world != asdict(self.sizes):
            raise UserError(
                f"stage {stage!r} in {self.out} ran for the world {world}, not {asdict(self.sizes)} "
                "(another --seed?); use another --out or --fresh"
            )
        return True

    def clear(self, stage: str) -> None:
        """Remove the outputs and the record of ``stage`` (only what the demo itself writes)."""
        for path in [*self.outputs(stage), self.record_path(stage)]:
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()

    def _write_record(self, stage: str, seconds: float) -> None:
        self.records.mkdir(parents=True, exist_ok=True)
        payload = {
            "stage": stage,
            "seconds": round(seconds, 2),
            "threads": torch.get_num_threads(),
            "world": asdict(self.sizes),
        }
        _write_json(self.record_path(stage), payload)

    def _require(self, stage: str, *needed: str) -> None:
        missing = [s for s in needed if not self.is_done(s)]
        if missing:
            raise FileNotFoundError(
                f"stage {stage!r} needs the output of {missing} in {self.out}; run them first "
                f"(python -m lib.toy.demo --out {self.out})"
            )

    def run(self, stages: Sequence[str] = STAGES) -> dict[str, str]:
        """Run ``stages`` in order, skipping finished ones; returns ``{stage: "ran" | "skipped"}``."""
        bad = [s for s in stages if s not in STAGES]
        if bad:
            raise UnknownNameError(f"unknown stage(s) {bad}; known: {', '.join(STAGES)}")
        make_folder(self.out, "--out")
        torch.set_num_threads(available_threads())
        status = {}
        for stage in STAGES:
            if stage not in stages:
                continue
            if self.is_done(stage):
                print(f"[demo] {stage}: done already ({self.record_path(stage)}), skipped")
                status[stage] = "skipped"
                continue
            print(f"[demo] {stage}: running")
            start = time.perf_counter()
            getattr(self, f"stage_{stage}")()
            seconds = time.perf_counter() - start
            self._write_record(stage, seconds)
            print(f"[demo] {stage}: done in {seconds:.1f} s")
            status[stage] = "ran"
        return status

    # stages ------------------------------------------------------------------------------------
    def stage_data(self) -> None:
        s = self.sizes
        size = dict(height=s.height, width=s.width, seed=s.seed)
        write_source_dataset(self.datasets, n_train=s.n_train, n_val=0, **size)
        write_outlier_bank(self.datasets, n_objects=s.n_outliers, seed=s.seed)
        for kind in ("anomaly", "shift", "covariate"):
            write_benchmark(self.datasets, f"toy_{kind}", kind=kind, n=s.n_test, **size)

    def stage_generate(self) -> None:
        self._require("generate", "data")
        generation_main(
            generation_parser().parse_args(
                [
                    "--cfg",
                    str(EXP_DIR / GENERATION_CONFIG),
                    "--source",
                    str(self.datasets / "cityscapes"),
                    "--out",
                    str(self.datasets / MULTISHIFT_DIR),
                    f"seed={self.sizes.seed}",
                ]
            )
        )

    def config(self, stage: str) -> Config:
        """The resolved config of a training stage."""
        weights = [] if stage == "pretrain" else [f"model.weight_path={self.runs / 'pretrain' / LAST}"]
        return load_config(
            Config,
            EXP_DIR / TRAIN_CONFIGS[stage],
            [
                f"data.root={self.datasets}",
                f"output_root={self.runs}",
                f"id={stage}",
                f"train.seed={self.sizes.seed}",
                *weights,
                *self.overrides.get(stage, []),
            ],
        )

    def _train(self, stage: str) -> None:
        cfg = self.config(stage)
        setup_logging(cfg.run_dir)
        run_training(cfg, info=CPU, resume=(cfg.run_dir / LAST).is_file(), progress=self.progress)

    def stage_pretrain(self) -> None:
        self._require("pretrain", "data")
        self._train("pretrain")

    def stage_oe_only(self) -> None:
        self._require("oe_only", "data", "pretrain")
        self._train("oe_only")

    def stage_multishift(self) -> None:
        self._require("multishift", "data", "generate", "pretrain")
        self._train("multishift")

    def trained_models(self) -> dict[str, torch.nn.Module]:
        """The three models the rows score: closed-world, outlier-exposure-only, MultiShift."""
        models = {}
        for name, stage in MODEL_STAGES.items():
            cfg = self.config(stage)
            models[name] = load_model(cfg.run_dir / LAST, name=cfg.model.name, kwargs=cfg.model.kwargs)
        return models

    def normalisation(self) -> tuple[list[float], list[float]]:
        """The ``data.mean``/``data.std`` the models were trained with (one pair for all of them)."""
        pairs = {
            stage: (self.config(stage).data.mean, self.config(stage).data.std)
            for stage in MODEL_STAGES.values()
        }
        if len({str(p) for p in pairs.values()}) > 1:
            raise ValueError(f"the demo's models were trained with different data.mean/data.std: {pairs}")
        return next(iter(pairs.values()))

    def stage_evaluate(self) -> None:
        self._require("evaluate", "data", "pretrain", "oe_only", "multishift")
        mean, std = self.normalisation()
        evaluation = evaluate_rows(
            self.trained_models(), self.datasets, mean=mean, std=std, progress=self.progress
        )
        results = method_results(evaluation)
        for row in ROWS:
            cfg = self.config(MODEL_STAGES[row.model])
            prov = provenance(
                weights=str(cfg.run_dir / LAST), model=cfg.model.name, score=row.score, protocol=PROTOCOL
            )
            write_results(
                self.out / "methods" / row.method,
                {s: {**entry, "provenance": prov} for s, entry in results[row.method].items()},
            )
        rows = result_rows(self.method_results())
        save_plots(evaluation, rows, self.out / "plots")
        save_heatmaps(evaluation, self.out / "heatmaps")

    def method_results(self) -> dict[str, dict[str, dict]]:
        """``{method: {set: entry}}`` read back from ``methods/<method>/results.json``."""
        return {row.method: read_results(self.out / "methods" / row.method) for row in ROWS}

    def stage_report(self) -> None:
        self._require("report", "evaluate")
        start = time.perf_counter()
        rows = result_rows(self.method_results())
        seconds = sum(self.record(s)["seconds"] for s in STAGES[:-1] if self.is_done(s))
        rule = (
            f"FPR95 on {', '.join(('toy_anomaly', SHIFT_SET))}: {get_protocol(PROTOCOL).description}. "
            f"{COVARIATE_SET} {COVARIATE_COLUMN}: fraction of its pixels (all in-distribution) scored at or "
            f"above the highest threshold that reaches TPR >= 0.95 on {SHIFT_SET}."
        )
        seconds += time.perf_counter() - start
        payload = {"rows": rows, "fpr_rule": rule, "seconds": round(seconds, 1)}
        table = demo_table(rows)
        claim = "\n".join(f"- {name}: {'yes' if ok else 'NO'}" for name, ok in claim_checks(rows).items())
        md = (
            f"# ToyShift demo results\n\nPercent; bold = best per column. World: {asdict(self.sizes)}. "
            f"Wall time of the stages: {seconds:.0f} s on {available_threads()} CPU thread(s).\n\n"
            f"{table}\n\n{rule}\n\nThe claim in miniature (MultiShift vs the others):\n{claim}\n"
        )
        _write_json(self.out / "results.json", payload)
        write_text_atomic(self.out / "results.md", md)
        print(f"\n{table}\n\n{rule}\n\nThe claim in miniature:\n{claim}\n")
        print(f"results: {self.out / 'results.md'}, {self.out / 'results.json'}")
        print(
            f"per method: {self.out / 'methods'}   plots: {self.out / 'plots'}   "
            f"heat maps: {self.out / 'heatmaps'}"
        )
        print(f"runs: {self.runs}")


def _write_json(path: Path, payload: dict) -> None:
    write_text_atomic(path, json.dumps(payload, indent=2) + "\n")


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lib.toy.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="outputs/demo", help="output folder (datasets, runs, results)")
    parser.add_argument("--stage", choices=STAGES, default=None, help="run only this stage")
    parser.add_argument(
        "--fresh", action="store_true", help="redo from scratch (with --stage: redo that stage only)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the world and of every training stage (default 0)"
    )
    parser.add_argument("--no_progress", action="store_true", help="no progress bars")
    return parser


def main(args: argparse.Namespace) -> dict[str, str]:
    """Run the demo's stages (all, or ``--stage``) in ``--out``; returns ``{stage: "ran" | "skipped"}``."""
    demo = Demo(args.out, sizes=WorldSizes(seed=args.seed), progress=not args.no_progress)
    stages = STAGES if args.stage is None else (args.stage,)
    if args.fresh:
        for stage in stages:
            demo.clear(stage)
    return demo.run(stages)


if __name__ == "__main__":
    run_cli(main, get_args_parser())
