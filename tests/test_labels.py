import numpy as np
import pytest

from lib import labels
from lib.errors import UserError


def test_nineteen_train_classes_in_official_order():
    assert labels.NUM_CLASSES == 19 == len(labels.CLASS_NAMES)
    assert labels.CLASS_NAMES[0] == "road" and labels.CLASS_NAMES[18] == "bicycle"
    assert labels.PALETTE.shape == (19, 3) and labels.PALETTE.dtype == np.uint8
    assert tuple(labels.PALETTE[0]) == (128, 64, 128)


def test_id_to_train_id_table():
    ids = np.array([[7, 8, 0], [26, 33, 1]], dtype=np.uint8)
    np.testing.assert_array_equal(labels.ID_TO_TRAIN_ID[ids], [[0, 1, 255], [13, 18, 255]])
    assert labels.ID_TO_TRAIN_ID[200] == labels.IGNORE


def test_colorize_paints_the_palette_ignore_black_anomaly_magenta():
    train_ids = np.array([[0, 18, labels.IGNORE, labels.ANOMALY]], dtype=np.uint8)
    rgb = labels.colorize(train_ids)
    assert rgb.shape == (1, 4, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb[0], [labels.PALETTE[0], labels.PALETTE[18], [0, 0, 0], [255, 0, 255]])


def test_rgb_keys_are_exact_and_round_trip():
    rgb = np.array([[[0, 0, 0], [255, 255, 255]], [[1, 2, 3], [128, 64, 128]]], dtype=np.uint8)
    keys = labels.pack_rgb(rgb)
    assert keys.shape == (2, 2) and keys.dtype == np.int32
    np.testing.assert_array_equal(keys, [[0, 0xFFFFFF], [0x010203, (128 << 16) + (64 << 8) + 128]])
    np.testing.assert_array_equal(labels.unpack_rgb(keys), rgb)


def test_check_train_label_names_file_and_value():
    good = np.array([[0, 18, 255, 254]], dtype=np.uint8)
    assert labels.check_train_label(good, "a.png") is good
    with pytest.raises(UserError, match=r"b\.png.*\[120\]"):
        labels.check_train_label(np.array([[0, 120]], dtype=np.uint8), "b.png")
    with pytest.raises(UserError, match="254"):
        labels.check_train_label(good, "c.png", allow_anomaly=False)


def test_check_ood_label():
    labels.check_ood_label(np.array([0, 1, 255], dtype=np.uint8), "x")
    with pytest.raises(UserError, match=r"y\.png.*\[2\]"):
        labels.check_ood_label(np.array([0, 2], dtype=np.uint8), "y.png")
