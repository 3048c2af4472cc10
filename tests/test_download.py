"""``lib.download`` through the real ``huggingface_hub`` code path: the test lays out a Hub cache
(``<type>s--owner--name/{blobs, snapshots/<commit>, refs/main}``) in ``tmp_path`` and the library,
offline (``HF_HUB_OFFLINE=1`` from conftest), resolves the artifacts from it."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import huggingface_hub
import pytest
import torch

from generation.config import GenerationConfig
from lib.config import load_config
from lib.download import (
    ARTIFACTS,
    HUB_REPO,
    LINK,
    artifact_table,
    get_args_parser,
    get_artifact,
    main,
)
from lib.errors import UserError
from lib.models import build_model
from lib.models.checkpoints import load_weights

ROOT = Path(__file__).resolve().parents[1]
OLD_COMMIT = "a" * 40
MAIN_COMMIT = "0123456789abcdef0123456789abcdef01234567"


def add_to_cache(
    cache: Path, repo_id: str, files: dict[str, bytes], *, commit: str, repo_type: str = "model"
):
    """Store ``files`` as one commit of ``repo_id`` the way the Hub library does: content-addressed
    blobs, a snapshot folder of symlinks to them, and ``refs/main`` naming the commit."""
    repo = cache / f"{repo_type}s--{repo_id.replace('/', '--')}"
    for name, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = repo / "snapshots" / commit / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)


def checkpoint_bytes(seed: int) -> tuple[bytes, torch.nn.Module]:
    """A released-format checkpoint (``module.``-prefixed state dict) of the light DeepLab."""
    torch.manual_seed(seed)
    model = build_model("deeplab_wrn_light")
    buffer = io.BytesIO()
    torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, buffer)
    return buffer.getvalue(), model


@pytest.fixture
def hub_calls(monkeypatch):
    """Record every call of the library's download functions (and still run them)."""
    calls = []
    for name in ("hf_hub_download", "snapshot_download"):
        real = getattr(huggingface_hub, name)

        def spy(*args, _real=real, _name=name, **kwargs):
            calls.append((_name, args, kwargs))
            return _real(*args, **kwargs)

        monkeypatch.setattr(huggingface_hub, name, spy)
    return calls


def run(argv: list[str]):
    return main(get_args_parser().parse_args(argv))


def test_released_checkpoint_is_resolved_by_the_hub_library_and_placed(tmp_path, hub_calls, capsys):
    assert huggingface_hub.constants.is_offline_mode()
    cache = tmp_path / "hub"
    released, model = checkpoint_bytes(1)
    stale, _ = checkpoint_bytes(2)
    add_to_cache(cache, "Cuttle-fish-my/MultiShiftSeg", {"DeepLab_best.pth": stale}, commit=OLD_COMMIT)
    add_to_cache(cache, "Cuttle-fish-my/MultiShiftSeg", {"DeepLab_best.pth": released}, commit=MAIN_COMMIT)

    weights = tmp_path / "weights"
    [placed] = run(["multishiftseg-deeplab", "--dir", str(weights), "--cache_dir", str(cache)])

    assert [(name, args) for name, args, _ in hub_calls] == [
        ("hf_hub_download", ("Cuttle-fish-my/MultiShiftSeg", "DeepLab_best.pth"))
    ]
    assert placed == weights / "DeepLab_best.pth" and not placed.is_symlink()
    assert placed.read_bytes() == released  # refs/main's commit, not the older snapshot
    loaded = build_model("deeplab_wrn_light")
    load_weights(loaded, placed)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    out = capsys.readouterr().out
    assert (
        f"python test_deeplab.py --cfg exp/DeepLab.yaml --id released_deeplab --weight_path {placed} "
        "--test_dataset RoadAnomaly" in out
    )
    assert "96.40 / 74.60 / 16.08" in out

    [again] = run(["multishiftseg-deeplab", "--dir", str(weights), "--cache_dir", str(cache)])
    assert again == placed and again.read_bytes() == released


def test_dataset_file_and_generation_model_snapshots(tmp_path, hub_calls, capsys):
    cache = tmp_path / "hub"
    add_to_cache(
        cache,
        "Cuttle-fish-my/DTWP_ADE",
        {"DTWP_ADE_final.zip": b"PK zip"},
        commit=MAIN_COMMIT,
        repo_type="dataset",
    )
    controlnet = {
        "config.json": b'{"_class_name": "ControlNetModel"}',
        "diffusion_pytorch_model.safetensors": b"w",
    }
    add_to_cache(cache, "lllyasviel/sd-controlnet-seg", controlnet, commit=MAIN_COMMIT)
    placed, snapshot = run(
        ["dtwp-ade", "controlnet-seg", "--dir", str(tmp_path / "w"), "--cache_dir", str(cache)]
    )
    assert placed.read_bytes() == b"PK zip"
    assert hub_calls[0][2]["repo_type"] == "dataset"
    assert hub_calls[1][0] == "snapshot_download"
    assert hub_calls[1][2]["allow_patterns"] == ["config.json", "diffusion_pytorch_model.safetensors"]
    assert snapshot.name == MAIN_COMMIT
    assert {p.name: p.read_bytes() for p in snapshot.iterdir()} == controlnet
    assert "used as: controlnet.controlnet in exp/generation.yaml" in capsys.readouterr().out


def test_offline_cache_miss_is_a_user_error_that_says_why(tmp_path, hub_calls):
    with pytest.raises(UserError, match=r"multishiftseg-m2f .*HF_HUB_OFFLINE is set"):
        run(["multishiftseg-m2f", "--dir", str(tmp_path / "w"), "--cache_dir", str(tmp_path / "empty")])
    assert hub_calls and hub_calls[0][1] == ("Cuttle-fish-my/MultiShiftSeg", "M2F_best.pth")
    assert not (tmp_path / "w" / "M2F_best.pth").exists()


def test_drive_only_checkpoints_print_link_name_and_place(tmp_path, hub_calls, capsys):
    assert run(["nvidia-wrn38-baseline", "mask2anomaly-bt-f-xl", "--dir", str(tmp_path)]) == [None, None]
    assert hub_calls == []
    out = capsys.readouterr().out
    assert "https://drive.google.com/file/d/1P4kPaMY-SmQ3yPJQTJ7xMGAB_Su-1zTl/view" in out
    assert f"save it as {tmp_path / 'DeepLabV3+_WideResNet38_baseline.pth'}" in out
    assert "https://drive.google.com/file/d/1UVms08chnBkZta_cNumjiei6GByyM9VN/view" in out
    assert f"--weight_path {tmp_path / 'bt-f-xl.pth'}" in out


@pytest.mark.parametrize(
    ("typo", "nearest"),
    [("deeplab", "multishiftseg-deeplab"), ("m2f", "multishiftseg-m2f"), ("sam", "sam-vit-huge")],
)
def test_unknown_name_names_the_nearest(typo, nearest):
    with pytest.raises(UserError, match=rf"unknown artifact '{typo}'; did you mean '{nearest}'\?"):
        get_artifact(typo)


def test_list_shows_every_artifact(capsys):
    assert run(["--list"]) == []
    out = capsys.readouterr().out
    assert out.strip() == artifact_table()
    for artifact in ARTIFACTS:
        assert artifact.name in out and artifact.source in out
    assert sum(a.kind == LINK for a in ARTIFACTS) == 2


def test_every_generation_model_id_is_a_known_hub_repository():
    """The model ids the generation configs name (defaults and exp YAMLs) are the checked Hub
    repositories of the download table, so `lib.download` can fetch each of them."""
    known = {a.source for a in ARTIFACTS if a.kind == HUB_REPO}
    configs = [GenerationConfig()] + [
        load_config(GenerationConfig, p) for p in sorted(ROOT.glob("exp/generation*.yaml"))
    ]
    ids = {
        value
        for cfg in configs
        for value in (cfg.controlnet.base_model, cfg.controlnet.controlnet, cfg.sam.path)
        if not value.startswith((".", "/", "~"))
    }
    assert ids and ids <= known, ids - known
