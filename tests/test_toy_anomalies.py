"""ToyShift anomaly families: disjoint train/test families, shapes, placement, ADE20K categories.

The ADE20K-150 names and the method's ``train`` OOD category list in ``fixtures/toy_ade_ood.npz``
were copied from ``reference/cgaug/ade150_classes_palette.json`` and ``ade150_ood_classes.json``.
"""

import numpy as np
import pytest

from lib.labels import ANOMALY
from lib.toy.anomalies import (
    FAMILY_ADE_INDEX,
    TEST_FAMILIES,
    TRAIN_FAMILIES,
    place_anomaly,
    sample_anomaly_mask,
)
from lib.toy.scenes import ROAD, sample_scene
from tests.utils import load_fixture


def test_families_are_disjoint_and_large_enough():
    assert len(TRAIN_FAMILIES) >= 3 and len(TEST_FAMILIES) >= 3
    assert not set(TRAIN_FAMILIES) & set(TEST_FAMILIES)
    assert len(set(TRAIN_FAMILIES + TEST_FAMILIES)) == len(TRAIN_FAMILIES + TEST_FAMILIES)


def test_ade_indices_are_distinct_train_ood_categories():
    ref = load_fixture("toy_ade_ood")
    assert set(FAMILY_ADE_INDEX) == set(TRAIN_FAMILIES)
    indices = list(FAMILY_ADE_INDEX.values())
    assert len(set(indices)) == len(indices)
    assert set(indices) <= set(ref["ood_train"].tolist())
    names = {f: str(ref["names"][i - 1]) for f, i in FAMILY_ADE_INDEX.items()}
    assert names == {"crate": "box", "barrel": "barrel", "rock": "rock", "ball": "ball"}


@pytest.mark.parametrize("family", TRAIN_FAMILIES + TEST_FAMILIES)
def test_masks_are_non_empty_and_deterministic(family):
    for h, w in ((8, 8), (24, 40), (60, 30)):
        mask = sample_anomaly_mask(np.random.default_rng(3), family, h, w)
        assert mask.dtype == bool and mask.shape == (h, w)
        assert mask.sum() >= 0.1 * h * w
        np.testing.assert_array_equal(mask, sample_anomaly_mask(np.random.default_rng(3), family, h, w))


def test_family_shapes_differ():
    masks = [sample_anomaly_mask(np.random.default_rng(0), f, 48, 48) for f in TRAIN_FAMILIES + TEST_FAMILIES]
    for i in range(len(masks)):
        for j in range(i + 1, len(masks)):
            assert (masks[i] != masks[j]).mean() > 0.03


def test_bad_family_and_size_are_rejected():
    with pytest.raises(ValueError, match="unknown anomaly family 'unicorn'"):
        sample_anomaly_mask(np.random.default_rng(0), "unicorn", 20, 20)
    with pytest.raises(ValueError, match="too small"):
        sample_anomaly_mask(np.random.default_rng(0), "ball", 4, 20)


@pytest.mark.parametrize("seed", range(4))
def test_place_anomaly_stands_on_the_road(seed):
    label = sample_scene(np.random.default_rng(seed), 96, 192)
    out = place_anomaly(np.random.default_rng(seed), label, TEST_FAMILIES[seed % len(TEST_FAMILIES)])
    changed = out != label
    assert changed.any()
    assert (out[changed] == ANOMALY).all()
    assert not (label == ANOMALY).any()
    rows, cols = np.nonzero(out == ANOMALY)
    bottom = rows.max()
    assert (label[bottom, cols[rows == bottom]] == ROAD).any()


def test_place_anomaly_needs_a_road():
    label = np.zeros((40, 40), dtype=np.uint8) + 10
    with pytest.raises(ValueError, match="no road pixel"):
        place_anomaly(np.random.default_rng(0), label, "ball")
