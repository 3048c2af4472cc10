"""The COCO mask bank: masks equal to pycocotools' decoding, bad annotation files named, safe temp names."""

import fnmatch
import json
import os
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as coco_mask
from scipy import ndimage

from lib.data.coco_ood import MASK_DIR, OutlierObjects
from lib.data.coco_ood.mask_bank import write_mask_bank
from lib.data.io import read_label
from lib.errors import UserError
from lib.labels import ANOMALY, IGNORE
from tests.data_fixtures import write_rgb

H, W = 37, 53


def _hand_made_annotations() -> tuple[dict, dict[int, np.ndarray]]:
    """Three instances (a slanted polygon pair, an uncompressed RLE, a compressed RLE string) and the
    masks pycocotools decodes for each of them."""
    polygons = [[4.2, 3.7, 30.9, 6.1, 18.4, 28.8], [35.0, 20.5, 50.3, 22.0, 44.6, 34.1, 36.2, 31.0]]
    blob = np.zeros((H, W), np.uint8)
    blob[10:25, 5:9] = 1
    blob[12:14, 9:30] = 1
    flat = blob.T.ravel()
    change = np.flatnonzero(np.diff(flat)) + 1
    counts = np.diff(np.concatenate([[0], change, [flat.size]])).tolist()  # starts with a zero run
    ring = np.zeros((H, W), np.uint8)
    ring[20:35, 25:45] = 1
    ring[24:31, 30:40] = 0
    compressed = coco_mask.encode(np.asfortranarray(ring))["counts"].decode("ascii")
    anns = [
        {"id": 7, "image_id": 1, "category_id": 18, "iscrowd": 0, "segmentation": polygons},
        {"id": 8, "image_id": 1, "category_id": 62, "segmentation": {"size": [H, W], "counts": counts}},
        {"id": 9, "image_id": 1, "category_id": 62, "segmentation": {"size": [H, W], "counts": compressed}},
    ]
    expected = {
        7: coco_mask.decode(coco_mask.merge(coco_mask.frPyObjects(polygons, H, W))),
        8: blob,
        9: ring,
    }
    data = {
        "images": [{"id": 1, "file_name": "000000000005.jpg", "height": H, "width": W}],
        "annotations": anns,
        "categories": [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}, {"id": 62, "name": "chair"}],
    }
    return data, expected


def _coco_root(tmp_path: Path, data: dict | str) -> Path:
    root = tmp_path / "coco"
    write_rgb(root / "train2017" / "000000000005.jpg", np.full((H, W, 3), 90, np.uint8))
    (root / "annotations").mkdir(parents=True)
    text = data if isinstance(data, str) else json.dumps(data)
    (root / "annotations" / "instances_train2017.json").write_text(text)
    return root


def test_mask_bank_matches_pycocotools_exactly(tmp_path):
    data, expected = _hand_made_annotations()
    root = _coco_root(tmp_path, data)
    assert write_mask_bank(root, exclude=["person"], min_size=0) == 3
    for ann_id, mask in expected.items():
        written = read_label(root / MASK_DIR / f"000000000005_{ann_id}.png")
        obj = mask.astype(bool)
        band = ndimage.binary_dilation(obj, np.ones((3, 3))) & ~ndimage.binary_erosion(
            obj, np.ones((3, 3)), border_value=1
        )
        want = np.where(band, IGNORE, np.where(obj, ANOMALY, 0)).astype(np.uint8)
        np.testing.assert_array_equal(written, want, err_msg=f"annotation {ann_id}")
        assert (written == ANOMALY).sum() > 0
    assert len(OutlierObjects(root)) == 3


def test_truncated_annotations_json_names_the_file(tmp_path):
    data, _ = _hand_made_annotations()
    text = json.dumps(data)
    root = _coco_root(tmp_path, text[: len(text) // 2])
    with pytest.raises(UserError, match=r"instances_train2017\.json: not valid JSON .*truncated download"):
        write_mask_bank(root, exclude=["person"], min_size=0)


def test_annotations_without_a_list_name_the_key(tmp_path):
    root = _coco_root(tmp_path, json.dumps({"images": [], "categories": []}))
    with pytest.raises(UserError, match=r"instances_train2017\.json: expected a list under 'annotations'"):
        write_mask_bank(root, exclude=[], min_size=0)


def test_annotation_without_segmentation_names_file_and_id(tmp_path):
    data, _ = _hand_made_annotations()
    del data["annotations"][1]["segmentation"]
    root = _coco_root(tmp_path, data)
    with pytest.raises(
        UserError,
        match=r"instances_train2017\.json: annotation 8 has no 'segmentation'; expected polygons .* or RLE",
    ):
        write_mask_bank(root, exclude=["person"], min_size=0)


@pytest.mark.parametrize(
    ("segmentation", "message"),
    [
        ({"size": [H, W], "counts": [5, 3]}, r"annotation 8: uncompressed RLE counts must .* summing to"),
        ({"size": [H + 1, W], "counts": [H * W]}, r"annotation 8: RLE size \[38, 53\] differs"),
        ({"size": [H, W], "counts": "not rle!"}, r"annotation 8: cannot decode its RLE"),
        ([[1.0, 2.0, 3.0, 4.0, 5.0]], r"annotation 8: a polygon has an odd number of coordinates"),
        ("a string", r"annotation 8: unreadable segmentation; expected polygons"),
    ],
)
def test_malformed_segmentation_names_the_annotation(tmp_path, segmentation, message):
    data, _ = _hand_made_annotations()
    data["annotations"][1]["segmentation"] = segmentation
    root = _coco_root(tmp_path, data)
    with pytest.raises(UserError, match=message):
        write_mask_bank(root, exclude=["person"], min_size=0)


def test_temporary_names_never_match_the_loader_pattern(tmp_path, monkeypatch):
    """Every file the tool writes goes through a temporary name that the loader's ``*.png`` skips."""
    data, _ = _hand_made_annotations()
    root = _coco_root(tmp_path, data)
    renamed = []
    real_replace = os.replace

    def recording_replace(src, dst):
        renamed.append((Path(src).name, Path(dst).name))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", recording_replace)
    write_mask_bank(root, exclude=["person"], min_size=0)
    assert sorted(dst for _, dst in renamed) == [f"000000000005_{i}.png" for i in (7, 8, 9)]
    assert not any(fnmatch.fnmatch(src, "*.png") for src, _ in renamed), renamed


def test_stray_file_in_the_mask_folder_is_named(tmp_path):
    data, _ = _hand_made_annotations()
    root = _coco_root(tmp_path, data)
    write_mask_bank(root, exclude=["person"], min_size=0)
    (root / MASK_DIR / "000000000005_7.tmp.png").write_bytes(b"left by an old interrupted run")
    with pytest.raises(UserError, match=r"000000000005_7\.tmp\.png: not a mask-bank file name"):
        OutlierObjects(root)
