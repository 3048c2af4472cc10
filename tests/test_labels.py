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
    np.testing.assert_array_equal(labels.ids_to_train_ids(ids), [[0, 1, 255], [13, 18, 255]])
    assert labels.ID_TO_TRAIN_ID[200] == labels.IGNORE


def test_palette_round_trip():
    train_ids = np.arange(19, dtype=np.uint8).reshape(1, 19).repeat(3, axis=0)
    train_ids[0, 0] = labels.IGNORE
    rgb = labels.colorize(train_ids)
    assert rgb.shape == (3, 19, 3)
    back = labels.decolorize(rgb)
    expected = train_ids.copy()
    np.testing.assert_array_equal(back, expected)


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
