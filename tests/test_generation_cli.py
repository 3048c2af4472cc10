"""End-to-end CG-Aug CLI with the procedural backend on a tiny Cityscapes-layout fixture in tmp_path:
layout, labels, metadata, resume after an interrupted run, sharding, and two processes under torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import generation
from generation.__main__ import get_args_parser, main
from generation.config import GenerationConfig
from generation.processes import Peers, join, peers_from_env, process_device
from lib.config import load_config
from lib.data.io import read_label, read_rgb
from lib.errors import UserError
from lib.labels import ANOMALY, TRAIN_LABELS
from tests.utils import read_jsonl

REPO = Path(__file__).resolve().parents[1]
CITIES = {"aachen": 3, "bochum": 2}
H, W = 64, 128
ROAD = next(lb.trainId for lb in TRAIN_LABELS if lb.name == "road")


def make_label(rng: np.random.Generator) -> np.ndarray:
    """Sky on top, buildings, road in the lower half, plus random classes and ignore pixels."""
    label = np.full((H, W), 10, dtype=np.uint8)
    label[16:32] = 2
    label[32:] = ROAD
    label[40:44, 5:12] = rng.integers(0, 19)
    label[0:3, 0:3] = 255
    return label


@pytest.fixture
def source(tmp_path: Path) -> Path:
    root = tmp_path / "cityscapes"
    rng = np.random.default_rng(0)
    for city, n in CITIES.items():
        d = root / "gtFine" / "train" / city
        d.mkdir(parents=True)
        for i in range(n):
            Image.fromarray(make_label(rng)).save(d / f"{city}_{i:06d}_000019_gtFine_labelTrainIds.png")
    return root


def run(source: Path, out: Path, *extra: str) -> dict:
    argv = ["--cfg", "exp/generation_toy.yaml", "--source", str(source), "--out", str(out), *extra]
    return main(get_args_parser().parse_args(argv))


def stems(source: Path) -> set[str]:
    return {p.name[: -len("_gtFine_labelTrainIds.png")] for p in source.rglob("*_labelTrainIds.png")}


def test_layout_labels_and_metadata(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    summary = run(source, out)
    assert summary["generated"] == 5 and summary["skipped"] == 0
    records = read_jsonl(out / "metadata.jsonl")
    assert {r["stem"] for r in records} == stems(source)
    for r in records:
        assert r["status"] == "generated" and r["backend"] == "procedural"
        assert (
            r["anomaly_class"] in ("crate", "barrel", "rock", "ball")
            and r["prompt"].count(r["anomaly_class"]) == 1
        )
        assert isinstance(r["seed"], int) and r["retries"] == 0 and r["iou"] is None
        img_path, lab_path = out / r["files"]["image"], out / r["files"]["label"]
        assert (
            img_path
            == out / "leftImg8bit" / "train" / r["city"] / f"{r['stem']}{r['domain']}_leftImg8bit.png"
        )
        assert lab_path.name == f"{r['stem']}{r['domain']}_gtFine_labelTrainIds.png"
        assert lab_path.name.startswith(r["stem"]) and (out / r["files"]["condition"]).is_file()
        original = read_label(
            source / "gtFine" / "train" / r["city"] / f"{r['stem']}_gtFine_labelTrainIds.png"
        )
        label = read_label(lab_path)
        image = read_rgb(img_path)
        assert image.shape == (H, W, 3) and label.shape == (H, W)
        anomaly = label == ANOMALY
        assert anomaly.any()
        np.testing.assert_array_equal(label[~anomaly], original[~anomaly])
        condition = read_rgb(out / r["files"]["condition"])
        object_pixels = np.all(condition == condition[anomaly][0], axis=-1)
        np.testing.assert_array_equal(object_pixels, anomaly)
    assert not list(out.rglob("*.tmp"))


def test_resume_after_interrupted_run(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run(source, out)
    reference = {p.relative_to(out): p.read_bytes() for p in out.rglob("*.png")}
    part = out / "metadata" / "shard-0-of-1.jsonl"
    lines = part.read_text().splitlines(keepends=True)
    # Interrupted: two items finished, the third killed while writing its metadata line.
    part.write_text("".join(lines[:2]) + lines[2][:20])
    summary = run(source, out)
    assert summary["already_done"] == 2 and summary["generated"] == 3
    assert {r["stem"] for r in read_jsonl(out / "metadata.jsonl")} == stems(source)
    assert len(read_jsonl(out / "metadata.jsonl")) == 5
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*.png")} == reference
    assert run(source, out)["already_done"] == 5


def test_shards_cover_every_image_once(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    seen = []
    for i in range(3):
        run(source, out, "--shard", f"{i}/3")
        seen += [r["stem"] for r in read_jsonl(out / "metadata" / f"shard-{i}-of-3.jsonl")]
    assert sorted(seen) == sorted(stems(source))
    assert len(read_jsonl(out / "metadata.jsonl")) == 5
    single = tmp_path / "single"
    run(source, single)
    a = {json.dumps(r, sort_keys=True) for r in read_jsonl(out / "metadata.jsonl")}
    b = {json.dumps(r, sort_keys=True) for r in read_jsonl(single / "metadata.jsonl")}
    assert a == b


def test_bad_shard_and_missing_source(source: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="0 <= i < N"):
        run(source, tmp_path / "o", "--shard", "3/3")
    with pytest.raises(FileNotFoundError, match="gtFine"):
        run(tmp_path / "nowhere", tmp_path / "o")


def test_torchrun_processes_share_the_work_of_one_process(source: Path, tmp_path: Path) -> None:
    """Two torchrun processes (no --shard) write exactly the files of a single-process run
    (``generation.run`` in this process)."""
    single, pair = tmp_path / "single", tmp_path / "pair"
    overrides = [f"source.root={source}", f"output.root={single}"]
    summary = generation.run(load_config(GenerationConfig, REPO / "exp" / "generation_toy.yaml", overrides))
    assert summary["generated"] == summary["metadata_lines"] == 5
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    command += ["-m", "generation", "--cfg", "exp/generation_toy.yaml", "--source", str(source)]
    done = subprocess.run(
        [*command, "--out", str(pair)], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    parts = sorted(p.name for p in (pair / "metadata").iterdir())
    assert parts == ["shard-0-of-2.jsonl", "shard-1-of-2.jsonl"]
    lines = [r["stem"] for part in parts for r in read_jsonl(pair / "metadata" / part)]
    assert sorted(lines) == sorted(stems(source))
    files = {p.relative_to(single): p.read_bytes() for p in single.rglob("*") if p.is_file()}
    shared = {k: v for k, v in files.items() if k.parts[0] != "metadata"}
    config = Path("generation_config.yaml")  # it names its output root
    shared[config] = shared[config].replace(str(single).encode(), str(pair).encode())
    assert {p.relative_to(pair): p.read_bytes() for p in pair.rglob("*") if p.is_file()} == shared | {
        Path("metadata", part): (pair / "metadata" / part).read_bytes() for part in parts
    }
    assert "metadata.jsonl" in {str(k) for k in shared} and "shard 1/2: " in done.stdout


def test_shard_flag_is_refused_under_torchrun(source: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(UserError, match="leave --shard out"):
        run(source, tmp_path / "o", "--shard", "1/2")
    assert not (tmp_path / "o").exists()


def test_each_torchrun_process_takes_its_rank_and_local_gpu(monkeypatch) -> None:
    assert peers_from_env() == Peers() and Peers().shard == (0, 1)
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("RANK", "5")
    monkeypatch.setenv("LOCAL_RANK", "1")
    peers = peers_from_env()
    assert peers == Peers(rank=5, world_size=8, local_rank=1) and peers.shard == (5, 8)
    assert process_device("cuda", peers) == "cuda:1"
    assert process_device("cuda:3", peers) == "cuda:3" and process_device("cpu", peers) == "cpu"
    assert process_device("cuda", Peers()) == "cuda"


def test_join_selects_only_a_gpu_named_by_index(monkeypatch) -> None:
    selected = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", selected.append)
    for device in ("cuda", "cpu", "cuda:1"):
        join(Peers(), device)
    assert selected == [torch.device("cuda", 1)]
