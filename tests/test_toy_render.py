"""ToyShift renderer: shapes, determinism, label alignment under every shift, anomaly painting."""

import numpy as np
import pytest

from lib.labels import ANOMALY, IGNORE, NUM_CLASSES
from lib.toy.anomalies import TEST_FAMILIES, TRAIN_FAMILIES, place_anomaly
from lib.toy.domains import PRESETS, SOURCE_DOMAIN, sample_shifted_domain
from lib.toy.render import render
from lib.toy.scenes import sample_scene

H, W = 96, 192


def _scene(seed: int) -> np.ndarray:
    return sample_scene(np.random.default_rng(seed), H, W)


def _boundaries(label: np.ndarray) -> np.ndarray:
    edge = np.zeros(label.shape, dtype=bool)
    edge[:, 1:] |= label[:, 1:] != label[:, :-1]
    edge[1:] |= label[1:] != label[:-1]
    return edge


def _gradient(image: np.ndarray) -> np.ndarray:
    grey = image.astype(np.float64).mean(axis=2)
    grad = np.zeros_like(grey)
    grad[:, 1:] += np.abs(np.diff(grey, axis=1))
    grad[1:] += np.abs(np.diff(grey, axis=0))
    return grad


def test_render_shape_dtype_and_determinism():
    label = _scene(0)
    image = render(label, SOURCE_DOMAIN, 5)
    assert image.shape == (H, W, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(image, render(label, SOURCE_DOMAIN, 5))
    assert np.abs(image.astype(int) - render(label, SOURCE_DOMAIN, 6)).mean() > 3


def test_classes_are_learnable_but_not_separable_by_colour():
    """A nearest-class-mean colour classifier fitted on three images is far from perfect on three
    others, while the class means themselves are distinct (so the task is learnable from texture)."""
    labels = [_scene(s) for s in range(6)]
    images = [render(label, SOURCE_DOMAIN, s).astype(np.float64) for s, label in enumerate(labels)]
    classes, means = [], []
    for c in range(NUM_CLASSES):
        pixels = np.concatenate([im[lb == c] for im, lb in zip(images[:3], labels[:3])])
        if len(pixels):
            classes.append(c)
            means.append(pixels.mean(axis=0))
    classes, means = np.array(classes), np.stack(means)
    assert len(classes) >= 10
    gaps = np.linalg.norm(means[:, None] - means[None], axis=-1) + np.eye(len(classes)) * 1e9
    assert gaps.min() > 3
    for image, label in zip(images[3:], labels[3:]):
        valid = np.isin(label, classes)
        dist = ((image[valid][:, None] - means[None]) ** 2).sum(-1)
        accuracy = (classes[dist.argmin(1)] == label[valid]).mean()
        assert 0.2 < accuracy < 0.85


@pytest.mark.parametrize("k", range(12))
def test_every_shift_keeps_label_alignment(k):
    """Image edges follow the label's class boundaries, not a displaced copy of them; the label
    is not modified and the shift visibly changes the image."""
    domains = list(PRESETS.values()) + [sample_shifted_domain(np.random.default_rng(s)) for s in range(3)]
    domain = domains[k]
    label = _scene(k)
    before = label.copy()
    image = render(label, domain, k)
    np.testing.assert_array_equal(label, before)
    grad, edge = _gradient(image), _boundaries(label)
    displaced = _boundaries(np.roll(label, (5, 7), axis=(0, 1))) & ~edge
    limit = 1.05 if domain.blur_sigma > 0 else 1.3
    assert grad[edge].mean() > limit * grad[displaced].mean(), domain.name
    assert np.abs(image.astype(int) - render(label, SOURCE_DOMAIN, k)).mean() > 4, domain.name


def test_object_level_shift_changes_only_its_classes():
    domain = PRESETS["object"]
    label = _scene(1)
    shifted = np.isin(label, domain.object_shift_classes)
    assert shifted.any()
    diff = np.abs(render(label, domain, 1).astype(int) - render(label, SOURCE_DOMAIN, 1)).max(axis=2)
    assert diff[~shifted].max() <= 1
    assert (diff[shifted] > 10).mean() > 0.5


def test_anomaly_family_paints_only_anomaly_pixels():
    label = place_anomaly(np.random.default_rng(0), _scene(2), TRAIN_FAMILIES[0])
    anomaly = label == ANOMALY
    images = [render(label, SOURCE_DOMAIN, 3, family) for family in TRAIN_FAMILIES + TEST_FAMILIES]
    for other in images[1:]:
        diff = np.abs(other.astype(int) - images[0]).max(axis=2)
        assert diff[~anomaly].max() == 0
        assert diff[anomaly].mean() > 10


def test_ignore_is_dark_and_bad_inputs_are_rejected():
    label = _scene(0)
    label[-6:] = IGNORE
    assert render(label, SOURCE_DOMAIN, 0)[-6:].mean() < 40
    with_anomaly = label.copy()
    with_anomaly[50:55, 50:55] = ANOMALY
    with pytest.raises(ValueError, match="anomaly_family is None"):
        render(with_anomaly, SOURCE_DOMAIN, 0)
    with pytest.raises(ValueError, match=r"label holds \[100\]"):
        render(np.full((40, 40), 100, dtype=np.uint8), SOURCE_DOMAIN, 0)
    with pytest.raises(ValueError, match="uint8"):
        render(label.astype(np.int64), SOURCE_DOMAIN, 0)
    with pytest.raises(ValueError, match="seed"):
        render(label, SOURCE_DOMAIN, -1)
