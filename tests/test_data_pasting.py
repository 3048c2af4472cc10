"""The one outlier-pasting transform: what it touches, its probability, its draws, and who uses it."""

import random

import pytest
import torch

from lib.data.coco_ood import OutlierObjects
from lib.data.multishift import MultiShiftPairs
from lib.data.pasting import PasteOutliers
from lib.labels import ANOMALY
from lib.toy.writers import write_outlier_bank
from tests.data_fixtures import write_cityscapes, write_multishift


@pytest.fixture(scope="module")
def outliers(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    write_outlier_bank(root, n_objects=3, seed=0)
    return OutlierObjects(root / "coco")


def _blank():
    return torch.zeros(2, 3, 64, 128), torch.zeros(2, 64, 128, dtype=torch.long)


def test_pastes_into_the_first_image_only(outliers):
    images, labels = PasteOutliers(outliers, scales=[1.0])(*_blank())
    assert (labels[0] == ANOMALY).any() and not (labels[1] == ANOMALY).any()
    assert images[0].abs().sum() > 0 and images[1].abs().sum() == 0
    # the pasted object's pixels (and only those) are ANOMALY, and they are where the image changed
    changed = images[0].abs().sum(0) > 0
    assert bool((changed <= (labels[0] == ANOMALY)).all())


def test_probability_zero_never_pastes_and_bad_arguments_are_refused(outliers):
    paste = PasteOutliers(outliers, scales=[1.0], prob=0.0)
    for _ in range(5):
        images, labels = paste(*_blank())
        assert not (labels == ANOMALY).any() and images.abs().sum() == 0
    with pytest.raises(ValueError, match="at least one scale"):
        PasteOutliers(outliers, scales=[])
    with pytest.raises(ValueError, match=r"prob 1.5 is not in \[0, 1\]"):
        PasteOutliers(outliers, scales=[1.0], prob=1.5)


def test_draws_come_from_the_given_generator(outliers):
    paste = PasteOutliers(outliers, scales=[0.3, 0.6, 1.0], prob=0.5)
    runs = []
    for _ in range(2):
        rng = random.Random(7)
        random.seed(123)  # the module's generator differs between the two runs: it must not matter
        runs.append([paste(*_blank(), rng=rng)[1] for _ in range(6)])
        random.random()
    for first, second in zip(*runs, strict=True):
        assert torch.equal(first, second)
    assert len({int((labels == ANOMALY).sum()) for labels in runs[0]}) > 1  # the draws vary


def test_multishift_pairs_paste_with_the_same_transform(tmp_path, outliers):
    stems = write_cityscapes(tmp_path, per_city=1, size=(32, 48))
    write_multishift(tmp_path, stems, variants=1, size=(32, 48))
    pairs = MultiShiftPairs(
        tmp_path / "cityscapes",
        tmp_path / "multishift_cityscapes",
        outliers=outliers,
        paste_prob=0.25,
        ood_scale_array=[0.5],
        mixup_max=0.0,
    )
    assert isinstance(pairs.paste, PasteOutliers)
    assert (pairs.paste.prob, pairs.paste.scales) == (0.25, (0.5,))
    assert pairs.paste.outliers is outliers
    pairs.paste.prob = 1.0
    item = pairs[0]
    assert (item["label"] == ANOMALY).any()
    unpasted = MultiShiftPairs(tmp_path / "cityscapes", tmp_path / "multishift_cityscapes", mixup_max=0.0)
    assert unpasted.paste is None and not (unpasted[0]["label"] == ANOMALY).any()
