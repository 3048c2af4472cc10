"""``train_deeplab.py`` and ``test_deeplab.py`` as two ``torchrun`` processes on a CPU (gloo), on a
small ToyShift world with the toy MultiShift recipe (light DeepLab, RCL on (original, procedural
CG-Aug twin) pairs with pasted training-family anomalies).

Each process runs under ``tests/torchrun_probe.py``, which records the parameters after every
optimizer step, the items of every batch and every file the process writes. Training: both ranks
hold identical parameters after each step, split every epoch into disjoint shares, only rank 0
writes; a run stopped after 2 epochs and resumed equals a 3-epoch run step for step. Testing: the
two-process results.json equals the single-process one exactly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import generation
from generation.config import GenerationConfig
from lib.config import load_config
from lib.toy.writers import write_benchmark, write_outlier_bank, write_source_dataset

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
PROBE = REPO / "tests" / "torchrun_probe.py"
WORLD = dict(height=64, width=128, seed=0)
ITERS, EPOCHS, PER_RANK = 2, 3, 2
TEST_SETS = ("toy_anomaly", "toy_shift")


def toy_world(root: Path) -> None:
    """8 source scenes and their procedural CG-Aug twins, 4 outlier objects, two 5-image test sets."""
    write_source_dataset(root, n_train=8, n_val=0, **WORLD)
    write_outlier_bank(root, n_objects=4, seed=0)
    for name in TEST_SETS:
        write_benchmark(root, name, kind=name.removeprefix("toy_"), n=5, **WORLD)
    overrides = [f"source.root={root / 'cityscapes'}", f"output.root={root / 'multishift_cityscapes'}"]
    generation.run(
        load_config(GenerationConfig, REPO / "exp" / "generation_toy.yaml", overrides), progress=False
    )


def torchrun(script: str, probe: Path, watch: Path, *argv: str, processes: int = 2) -> list[dict]:
    """Run ``script`` as torchrun processes under the probe; returns each rank's record."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        str(processes),
    ]
    done = subprocess.run(
        [*command, str(PROBE), script, str(probe), str(watch), *argv],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return [json.loads((probe / f"rank{r}.json").read_text()) for r in range(processes)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    root, out, probes = (tmp_path_factory.mktemp(n) for n in ("datasets", "outputs", "probes"))
    toy_world(root)
    common = [
        "--cfg",
        "exp/toy_multishift.yaml",
        "--device",
        "cpu",
        "--no_progress",
        f"data.root={root}",
        f"output_root={out}",
        "data.crop_size=64",
        f"train.batch_size={2 * PER_RANK}",
        f"train.iters_per_epoch={ITERS}",
        "train.warmup_epoch=1",
        "train.log_interval=1",
        f"eval.datasets=[{','.join(TEST_SETS)}]",
    ]

    def train(name: str, epochs: int, *extra: str) -> list[dict]:
        argv = [*common, "--id", name.split("-")[0], f"train.epochs={epochs}", *extra]
        return torchrun("train_deeplab", probes / name, out, *argv)

    return {
        "root": root,
        "out": out,
        "probes": probes,
        "common": common,
        "full": train("full", EPOCHS),
        "first": train("split-first", EPOCHS - 1),
        "resumed": train("split-resumed", EPOCHS, "--resume"),
    }


def test_ranks_hold_identical_parameters_after_every_step(runs) -> None:
    for name, steps in (("full", EPOCHS * ITERS), ("first", (EPOCHS - 1) * ITERS), ("resumed", ITERS)):
        rank0, rank1 = runs[name]
        assert len(rank0["steps"]) == steps, name
        assert rank0["steps"] == rank1["steps"], name
        assert len(set(rank0["steps"])) == steps, f"{name}: every step changes the parameters"


def test_ranks_train_on_disjoint_shares_of_each_epoch(runs) -> None:
    rank0, rank1 = runs["full"]
    assert len(rank0["epochs"]) == len(rank1["epochs"]) == EPOCHS
    for epoch, (mine, theirs) in enumerate(zip(rank0["epochs"], rank1["epochs"], strict=True)):
        assert [len(b) for b in mine] == [len(b) for b in theirs] == [PER_RANK] * ITERS
        a, b = [n for batch in mine for n in batch], [n for batch in theirs for n in batch]
        assert len(set(a)) == len(a) and len(set(b)) == len(b)
        assert not set(a) & set(b), f"epoch {epoch}: both ranks trained on {set(a) & set(b)}"
    assert rank0["epochs"][0] != rank0["epochs"][1], "each epoch reshuffles"


def test_only_rank0_writes_checkpoints_logs_and_scalars(runs) -> None:
    for name in ("full", "first", "resumed"):
        rank0, rank1 = runs[name]
        assert rank1["writes"] == [], f"{name}: rank 1 wrote {rank1['writes']}"
        run = "full" if name == "full" else "split"
        written = set(rank0["writes"])
        assert {f"{run}/last.pth", f"{run}/log.txt", f"{run}/config.yaml"} <= written, name
        assert any(w.startswith(f"{run}/tensorboard/") for w in written), name
    log = (runs["out"] / "full" / "log.txt").read_text()
    assert log.count("epoch 0 done") == 1 and "(2 process(es))" in log


def test_resume_of_a_two_process_run_equals_an_uninterrupted_run(runs) -> None:
    full, first, resumed = (runs[n][0] for n in ("full", "first", "resumed"))
    assert first["steps"] + resumed["steps"] == full["steps"]
    assert resumed["epochs"] == full["epochs"][EPOCHS - 1 :]
    a = torch.load(runs["out"] / "full" / "last.pth", weights_only=True)
    b = torch.load(runs["out"] / "split" / "last.pth", weights_only=True)
    assert a["epoch"] == b["epoch"] == EPOCHS - 1 and len(b["extra"]["rng"]) == 2
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert "resumed from" in (runs["out"] / "split" / "log.txt").read_text()


def test_two_process_evaluation_equals_one_process(runs) -> None:
    weights = str(runs["out"] / "full" / "last.pth")
    argv = [*runs["common"], "--weight_path", weights]
    # Both in processes of one thread: a convolution's rounding may depend on the thread count.
    torchrun("test_deeplab", runs["probes"] / "eval1", runs["out"], *argv, "--id", "eval1", processes=1)
    rank0, rank1 = torchrun("test_deeplab", runs["probes"] / "eval2", runs["out"], *argv, "--id", "eval2")
    one, two = (json.loads((runs["out"] / i / "results.json").read_text()) for i in ("eval1", "eval2"))
    # toy_shift first: eval.threshold_from makes it the first benchmark evaluated and written
    assert (
        list(one["benchmarks"]) == ["toy_shift", "toy_anomaly"]
        and one["benchmarks"]["toy_shift"]["images"] == 5
    )
    assert "mIoU" in one["benchmarks"]["toy_shift"]
    for results in (one, two):  # the runs differ only in when they ran
        for entry in results["benchmarks"].values():
            del entry["provenance"]["date"]
    assert two == one
    assert rank1["writes"] == [] and {"eval2/results.json", "eval2/test_log.txt"} <= set(rank0["writes"])
