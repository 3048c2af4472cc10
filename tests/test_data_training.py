"""Training sources on fixture trees in their real layouts: Cityscapes, MultiShift pairs, COCO outliers."""

import random
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from lib.data import CityscapesSeg, MultiShiftPairs, OutlierObjects, collate_items
from lib.data.coco_ood import MASK_DIR, paste_outlier
from lib.data.coco_ood.mask_bank import write_mask_bank
from lib.data.multishift import mixup
from lib.data.transforms import IMAGENET_MEAN, IMAGENET_STD, RandomCrop
from lib.errors import UserError
from lib.labels import ANOMALY, IGNORE
from tests.data_fixtures import write_cityscapes, write_coco, write_gray, write_multishift


def _unnormalise(image):
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return image * std + mean


def test_cityscapes_items(tmp_path):
    stems = write_cityscapes(tmp_path)
    ds = CityscapesSeg(tmp_path / "cityscapes", "train")
    assert len(ds) == 4 and [s[1] for s in ds.samples] == stems
    item = ds[0]
    assert item["image"].dtype == torch.float32 and item["image"].shape == (3, 32, 64)
    assert item["label"].dtype == torch.int64 and item["label"].shape == (32, 64)
    assert item["name"] == stems[0]
    decoded = (_unnormalise(item["image"])[0] * 255).round().long()
    assert torch.equal(decoded, item["label"])  # image colour encodes the label
    assert IGNORE in item["label"].unique()


def test_cityscapes_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="expected layout"):
        CityscapesSeg(tmp_path / "cityscapes")
    write_cityscapes(tmp_path)
    lab = next((tmp_path / "cityscapes/gtFine/train/aachen").glob("*.png"))
    bad = np.zeros((32, 64), np.uint8)
    bad[0, 0] = ANOMALY  # originals may not hold anomaly
    write_gray(lab, bad)
    with pytest.raises(UserError, match=rf"{lab.name}.*\[{ANOMALY}\]"):
        ds = CityscapesSeg(tmp_path / "cityscapes")
        ds[[s[3] for s in ds.samples].index(lab)]
    orphan = lab.with_name("aachen_000000_000099_gtFine_labelTrainIds.png")
    write_gray(orphan, bad)
    with pytest.raises(
        FileNotFoundError, match="aachen_000000_000099_gtFine_labelTrainIds.png has no matching image"
    ):
        CityscapesSeg(tmp_path / "cityscapes")


def test_cityscapes_label_ids_only_points_to_converter(tmp_path):
    write_cityscapes(tmp_path)
    for p in (tmp_path / "cityscapes/gtFine/train").glob("*/*_labelTrainIds.png"):
        p.rename(p.with_name(p.name.replace("labelTrainIds", "labelIds")))
    with pytest.raises(FileNotFoundError, match="csCreateTrainIdLabelImgs"):
        CityscapesSeg(tmp_path / "cityscapes")


def test_multishift_pairing_and_epoch_draws(tmp_path):
    stems = write_cityscapes(tmp_path)
    variants = write_multishift(tmp_path, stems)
    ds = MultiShiftPairs(tmp_path / "cityscapes", tmp_path / "multishift_cityscapes", mixup_max=0.0)
    assert len(ds) == 3  # the last original has no variant
    assert [p[0] for p in ds.pairs] == sorted(variants)
    draws = {e: [ds.set_epoch(e) or ds.variant_index(i) for i in range(len(ds))] for e in range(8)}
    assert len({tuple(d) for d in draws.values()}) > 1  # variants change across epochs
    ds.set_epoch(3)
    assert [ds.variant_index(i) for i in range(len(ds))] == draws[3]  # reproducible
    item = ds[0]
    assert set(item) == {"image", "label", "aug_image", "aug_label", "name"}
    for key in ("image", "aug_image"):
        assert item[key].dtype == torch.float32 and item[key].shape == (3, 32, 64)
    for key in ("label", "aug_label"):
        assert item[key].dtype == torch.int64 and item[key].shape == (32, 64)
    assert ANOMALY in item["aug_label"].unique() and ANOMALY not in item["label"].unique()
    gen = variants[item["name"]][ds.variant_index(0)]
    assert gen.startswith(item["name"])
    decoded = (_unnormalise(item["aug_image"])[0] * 255).round().long()
    assert torch.equal(decoded, item["aug_label"])  # the twin's own label, no mixup


def test_multishift_joint_crop_and_collate(tmp_path):
    stems = write_cityscapes(tmp_path)
    write_multishift(tmp_path, stems)
    ds = MultiShiftPairs(
        tmp_path / "cityscapes",
        tmp_path / "multishift_cityscapes",
        transform=RandomCrop((16, 24)),
        mixup_max=0.0,
    )
    random.seed(0)
    batch = collate_items([ds[i] for i in range(3)])
    assert batch["image"].shape == (3, 3, 16, 24) and batch["aug_label"].shape == (3, 16, 24)
    assert len(batch["name"]) == 3
    for img, lab in ((batch["image"], batch["label"]), (batch["aug_image"], batch["aug_label"])):
        assert torch.equal((_unnormalise(img[:, 0:1])[:, 0] * 255).round().long(), lab)


def test_multishift_orphan_generated_image(tmp_path):
    stems = write_cityscapes(tmp_path)
    write_multishift(tmp_path, stems)
    lonely = (
        tmp_path / "multishift_cityscapes/leftImg8bit/train/aachen/aachen_000009_000009_x_leftImg8bit.png"
    )
    cv2.imwrite(str(lonely), np.zeros((32, 64, 3), np.uint8))
    cv2.imwrite(
        str(lonely)
        .replace("leftImg8bit", "gtFine", 1)
        .replace("_leftImg8bit.png", "_gtFine_labelTrainIds.png"),
        np.zeros((32, 64), np.uint8),
    )
    with pytest.raises(
        FileNotFoundError, match="aachen_000009_000009_x_leftImg8bit.png has no Cityscapes original"
    ):
        MultiShiftPairs(tmp_path / "cityscapes", tmp_path / "multishift_cityscapes")


def test_mixup_formula():
    a = np.full((2, 2, 3), 200, np.uint8)
    b = np.full((2, 2, 3), 100, np.uint8)
    assert (mixup(a, b, 0.3) == 130).all()
    assert (mixup(a, b, 0.0) == 100).all()


def test_coco_mask_bank_and_outlier_objects(tmp_path):
    data = write_coco(tmp_path)
    coco = tmp_path / "coco"
    assert write_mask_bank(coco, min_size=0) == 2
    names = sorted(p.name for p in (coco / MASK_DIR).glob("*.png"))
    # crowd (12) dropped; image 3 holds a person so it is skipped
    assert names == ["000000000001_11.png", "000000000002_21.png"]
    poly = cv2.imread(str(coco / MASK_DIR / names[0]), cv2.IMREAD_UNCHANGED)
    assert set(np.unique(poly).tolist()) == {0, ANOMALY, IGNORE}
    assert (poly[8:23, 13:28] == ANOMALY).all() and (poly[:3] == 0).all()
    rle = cv2.imread(str(coco / MASK_DIR / names[1]), cv2.IMREAD_UNCHANGED)
    assert ((rle == ANOMALY) | (rle == IGNORE))[2:12, 3:9].all() and (rle[3:11, 4:8] == ANOMALY).all()
    assert write_mask_bank(coco, min_size=0) == 2  # resumable
    objs = OutlierObjects(coco)
    assert len(objs) == 2
    rgb, mask = objs[0]
    assert (
        rgb.dtype == np.uint8 and rgb.shape == (*mask.shape, 3) and mask.shape == (18, 18)
    )  # the polygon's 20x20 pixels (pycocotools) minus its edge band
    assert (mask == ANOMALY).any() and data["images"][0]["height"] == 40
    with pytest.raises(UserError, match="not COCO category names"):
        write_mask_bank(coco, exclude=["spaceship"])
    assert write_mask_bank(tmp_path / "coco", min_size=41) == 0  # images below min_size skipped


def test_outlier_objects_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="expected layout"):
        OutlierObjects(tmp_path / "coco")
    write_coco(tmp_path)
    coco = tmp_path / "coco"
    write_mask_bank(coco, min_size=0)
    write_gray(coco / MASK_DIR / "000000000077_5.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(FileNotFoundError, match="000000000077_5.png: no image"):
        OutlierObjects(coco)
    (coco / MASK_DIR / "000000000077_5.png").unlink()
    bad = np.zeros((40, 48), np.uint8)
    bad[0, 0] = 7
    write_gray(coco / MASK_DIR / "000000000001_11.png", bad)
    with pytest.raises(UserError, match=r"000000000001_11.png: invalid mask value\(s\) \[7\]"):
        OutlierObjects(coco)[0]


def test_paste_outlier_labels_object_pixels():
    random.seed(0)
    image, label = torch.zeros(3, 20, 30), torch.zeros(20, 30, dtype=torch.long)
    mask = np.zeros((8, 6), np.uint8)
    mask[1:7, 1:5] = ANOMALY
    mask[0] = IGNORE
    rgb = np.full((8, 6, 3), 255, np.uint8)
    paste_outlier(image, label, rgb, mask, 1.0)
    assert (label == ANOMALY).sum() == 24 and ((image[0] == 1.0) == (label == ANOMALY)).all()
    big = np.full((100, 50), ANOMALY, np.uint8)
    paste_outlier(image, label, np.zeros((100, 50, 3), np.uint8), big, 1.0)  # shrunk to fit
    assert (label == ANOMALY).sum() >= 200


def test_multishift_with_pasting(tmp_path):
    stems = write_cityscapes(tmp_path)
    write_multishift(tmp_path, stems)
    write_coco(tmp_path)
    write_mask_bank(tmp_path / "coco", min_size=0)
    ds = MultiShiftPairs(
        tmp_path / "cityscapes",
        tmp_path / "multishift_cityscapes",
        outliers=OutlierObjects(tmp_path / "coco"),
    )
    random.seed(1)
    item = ds[1]
    assert ANOMALY in item["label"].unique()


def test_coco_ood_command_line(tmp_path):
    write_coco(tmp_path)
    coco = tmp_path / "coco"
    done = subprocess.run(
        [sys.executable, "-m", "lib.data.coco_ood", "--coco", str(coco), "--min-size", "0"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "RuntimeWarning" not in done.stderr and "2 object masks" in done.stderr
    assert len(list((coco / MASK_DIR).glob("*.png"))) == 2
