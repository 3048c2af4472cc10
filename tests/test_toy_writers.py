"""ToyShift writers: exact on-disk layouts, label values per set, manifests, resumable reruns,
and loading through the project's real dataset classes."""

import json

import cv2
import numpy as np
import pytest
from PIL import Image

import lib.toy.writers as writers
from lib.data.benchmarks import build_benchmark
from lib.data.cityscapes import CityscapesSeg
from lib.data.coco_ood import OutlierObjects
from lib.errors import UserError
from lib.labels import ANOMALY, IGNORE, NUM_CLASSES, OOD_OUT
from lib.toy.writers import MANIFEST, write_benchmark, write_outlier_bank, write_source_dataset

H, W = 48, 96


def _read(path):
    return np.array(Image.open(path))


def _files(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_source_dataset_layout_values_and_loader(tmp_path):
    out = write_source_dataset(tmp_path, n_train=4, n_val=1, height=H, width=W, seed=0)
    assert out == tmp_path / "cityscapes"
    assert _files(out) == [
        "gtFine/train/pixelheim/pixelheim_000001_000019_gtFine_labelTrainIds.png",
        "gtFine/train/shiftdorf/shiftdorf_000002_000019_gtFine_labelTrainIds.png",
        "gtFine/train/toyburg/toyburg_000000_000019_gtFine_labelTrainIds.png",
        "gtFine/train/toyburg/toyburg_000003_000019_gtFine_labelTrainIds.png",
        "gtFine/val/validstadt/validstadt_000000_000019_gtFine_labelTrainIds.png",
        "leftImg8bit/train/pixelheim/pixelheim_000001_000019_leftImg8bit.png",
        "leftImg8bit/train/shiftdorf/shiftdorf_000002_000019_leftImg8bit.png",
        "leftImg8bit/train/toyburg/toyburg_000000_000019_leftImg8bit.png",
        "leftImg8bit/train/toyburg/toyburg_000003_000019_leftImg8bit.png",
        "leftImg8bit/val/validstadt/validstadt_000000_000019_leftImg8bit.png",
        MANIFEST,
    ]
    label = _read(out / "gtFine/train/toyburg/toyburg_000000_000019_gtFine_labelTrainIds.png")
    assert label.dtype == np.uint8 and label.shape == (H, W)
    assert set(np.unique(label)) <= set(range(NUM_CLASSES)) | {IGNORE}
    assert _read(out / "leftImg8bit/train/toyburg/toyburg_000000_000019_leftImg8bit.png").shape == (H, W, 3)
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["counts"] == {"train": 4, "val": 1} and manifest["seed"] == 0
    assert (manifest["height"], manifest["width"], manifest["version"]) == (H, W, writers.VERSION)
    dataset = CityscapesSeg(out, "train")
    assert len(dataset) == 4
    item = dataset[0]
    assert item["image"].shape == (3, H, W) and item["label"].shape == (H, W)


def test_outlier_bank_layout_and_loader(tmp_path):
    out = write_outlier_bank(tmp_path, n_objects=5, seed=1)
    names = _files(out)
    assert "train2017/000000000004.png" in names and "ood_seg_train2017/000000000004_5.png" in names
    assert len(names) == 11
    for i in range(5):
        image = _read(out / f"train2017/{i:012d}.png")
        mask = _read(out / f"ood_seg_train2017/{i:012d}_{i + 1}.png")
        assert image.ndim == 3 and mask.shape == image.shape[:2] and mask.dtype == np.uint8
        assert set(np.unique(mask)) == {0, ANOMALY, IGNORE}
        near_background = cv2.dilate((mask == 0).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
        assert near_background[mask == IGNORE].all(), "the IGNORE band must lie on the object's edge"
        assert (mask == ANOMALY).sum() > (mask == IGNORE).sum() / 2
    bank = OutlierObjects(out)
    assert len(bank) == 5
    rgb, mask = bank[0]
    assert rgb.shape[:2] == mask.shape and (mask == ANOMALY).any()


@pytest.mark.parametrize("kind", ["anomaly", "shift", "covariate"])
def test_benchmark_layout_values_and_loader(tmp_path, kind):
    name = f"toy_{kind}"
    out = write_benchmark(tmp_path, name, kind=kind, n=3, height=H, width=W, seed=2)
    assert _files(out) == [
        *(f"leftImg8bit/{i:06d}.png" for i in range(3)),
        *(f"leftLabel/{i:06d}.png" for i in range(3)),
        MANIFEST,
    ]
    for i in range(3):
        label = _read(out / f"leftLabel/{i:06d}.png")
        values = set(np.unique(label).tolist())
        assert values <= set(range(NUM_CLASSES + 1)) | {IGNORE}
        assert (writers.MUAD_ANOMALY in values) == (kind != "covariate")
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["kind"] == kind and manifest["anomaly_label"] == NUM_CLASSES
    dataset = build_benchmark(name, tmp_path)
    assert len(dataset) == 3
    has_anomaly = [bool((dataset[i]["ood_label"] == OOD_OUT).any()) for i in range(3)]
    assert has_anomaly == [kind != "covariate"] * 3


def test_shift_and_covariate_sets_are_shifted(tmp_path):
    for kind in ("anomaly", "covariate"):
        write_benchmark(tmp_path, kind, kind=kind, n=4, height=H, width=W, seed=3)
    source_means = [_read(tmp_path / f"anomaly/leftImg8bit/{i:06d}.png").mean() for i in range(4)]
    shifted_means = [_read(tmp_path / f"covariate/leftImg8bit/{i:06d}.png").mean() for i in range(4)]
    assert source_means != shifted_means


def test_rerun_skips_existing_files_and_checks_parameters(tmp_path, monkeypatch):
    write_benchmark(tmp_path, "toy_shift", kind="shift", n=2, height=H, width=W, seed=4)
    first = (tmp_path / "toy_shift/leftImg8bit/000001.png").read_bytes()

    calls = []
    real_render = writers.render

    def counting_render(*args):
        calls.append(args)
        return real_render(*args)

    monkeypatch.setattr(writers, "render", counting_render)
    write_benchmark(tmp_path, "toy_shift", kind="shift", n=3, height=H, width=W, seed=4)
    assert len(calls) == 1
    assert (tmp_path / "toy_shift/leftImg8bit/000001.png").read_bytes() == first
    assert json.loads((tmp_path / "toy_shift" / MANIFEST).read_text())["counts"] == {"images": 3}
    assert not list(tmp_path.rglob("*.tmp"))
    with pytest.raises(UserError, match="other parameters.*'seed': \\(4, 5\\)"):
        write_benchmark(tmp_path, "toy_shift", kind="shift", n=3, height=H, width=W, seed=5)
    with pytest.raises(ValueError, match="unknown benchmark kind 'weird'"):
        write_benchmark(tmp_path, "x", kind="weird", n=1, height=H, width=W, seed=0)


def test_image_i_does_not_depend_on_n(tmp_path):
    write_source_dataset(tmp_path / "a", n_train=1, n_val=0, height=H, width=W, seed=9)
    write_source_dataset(tmp_path / "b", n_train=3, n_val=0, height=H, width=W, seed=9)
    rel = "cityscapes/leftImg8bit/train/toyburg/toyburg_000000_000019_leftImg8bit.png"
    assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
