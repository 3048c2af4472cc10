"""Joint transforms: shapes/dtypes, identical geometry for every image and label, label fill values."""

import random

import cv2
import numpy as np
import pytest
import torch

from lib.data.transforms import (
    AutoContrast,
    ColorJitter,
    Compose,
    Equalize,
    GaussianBlur,
    HorizontalFlip,
    Normalize,
    RandomCrop,
    RandomResize,
    RandomRotate,
    RandomSharpness,
    ToTensor,
    VerticalFlip,
    _shift_hue,
    mask2former_train_transform,
)
from lib.labels import IGNORE
from tests.data_fixtures import colour_of, train_label


def _pair(h=32, w=48):
    a, b = train_label(h, w, seed=1), train_label(h, w, seed=2, anomaly=True)
    return ToTensor()([colour_of(a), colour_of(b)], [a, b])


def _label_from_image(images):
    return (images[:, 0] * 255).round().long()  # colour_of puts the label in the red channel


def _interior(labels):
    """Pixels whose 5x5 neighbourhood has one label: bilinear image resampling cannot blend there."""
    f = labels[:, None].float()
    hi = torch.nn.functional.max_pool2d(f, 5, 1, 2)
    lo = -torch.nn.functional.max_pool2d(-f, 5, 1, 2)
    return (hi == lo)[:, 0]


@pytest.mark.parametrize(
    "transform",
    [
        HorizontalFlip(),
        VerticalFlip(),
        RandomCrop((20, 30)),
        RandomCrop((40, 60)),
    ],
)
def test_geometry_keeps_image_label_alignment(transform):
    random.seed(3)
    images, labels = transform(*_pair())
    assert images.shape[0] == 2 and labels.shape[0] == 2 and images.shape[-2:] == labels.shape[-2:]
    decoded = _label_from_image(images)
    inside = (images.sum(1) > 0) | (labels != IGNORE)  # padding: image 0, label IGNORE
    assert torch.equal(decoded[inside], labels[inside])
    padded = images.sum(1) == 0
    assert (labels[padded] == IGNORE).all()


@pytest.mark.parametrize(
    "transform", [RandomRotate(30.0), RandomResize(scales=(2.0,)), RandomResize(scales=(0.5,))]
)
def test_resampling_keeps_alignment(transform):
    random.seed(0)
    a = np.kron(np.arange(48, dtype=np.uint8).reshape(6, 8), np.ones((16, 16), np.uint8))
    images, labels = ToTensor()([colour_of(a), colour_of(a)], [a, a])
    images, labels = transform(images, labels)
    assert torch.equal(images[0], images[1]) and torch.equal(labels[0], labels[1])
    inner = _interior(labels) & (labels != IGNORE)
    assert inner.float().mean() > 0.2
    assert (_label_from_image(images)[inner] - labels[inner]).abs().max() <= 0
    if isinstance(transform, RandomRotate):
        assert (labels == IGNORE).any()  # corners fall outside the rotated image


def test_to_tensor_dtypes_and_size_check():
    images, labels = _pair()
    assert images.dtype == torch.float32 and labels.dtype == torch.int64
    assert images.shape == (2, 3, 32, 48) and labels.shape == (2, 32, 48)
    assert 0.0 <= images.min() and images.max() <= 1.0
    with pytest.raises(ValueError, match="height/width"):
        ToTensor()([np.zeros((4, 4, 3), np.uint8)], [np.zeros((5, 4), np.uint8)])


def test_resize_labels_nearest_only_existing_values():
    random.seed(0)
    images, labels = _pair()
    _, out = RandomResize(scale_range=(0.37, 0.61))(images, labels)
    assert set(out.unique().tolist()) <= set(labels.unique().tolist())
    with pytest.raises(ValueError, match="exactly one"):
        RandomResize()


def test_colour_ops_same_parameters_for_both_images_and_labels_untouched():
    images, labels = _pair()
    twin = torch.cat([images[:1], images[:1]])
    for op in (ColorJitter(), GaussianBlur(), RandomSharpness(), AutoContrast(), Equalize()):
        random.seed(5)
        out, lab = op(twin, labels)
        assert torch.allclose(out[0], out[1]) and torch.equal(lab, labels)
        assert out.shape == twin.shape and 0.0 <= out.min() and out.max() <= 1.0 + 1e-6


def test_hue_roundtrip_and_identity_jitter():
    images, labels = _pair()
    out, _ = ColorJitter(0.0, 0.0, 0.0, 1e-9)(images, labels)
    assert torch.allclose(out, images, atol=1e-5)


def test_equalize_matches_reference_algorithm():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 100, (1, 3, 64, 64)).astype(np.float32) / 255.0
    out, _ = Equalize()(torch.from_numpy(img), torch.zeros(1, 64, 64, dtype=torch.long))
    ch = (img[0, 0] * 255).astype(np.uint8).ravel()
    hist = np.bincount(ch, minlength=256)
    step = hist[hist > 0][:-1].sum() // 255
    assert step > 0
    lut = np.concatenate([[0], (np.cumsum(hist) + step // 2) // step])[:256].clip(0, 255)
    np.testing.assert_allclose(out[0, 0].numpy().ravel() * 255, lut[ch], atol=1e-3)


def test_normalize_and_compose_probabilities():
    images, labels = _pair()
    out, _ = Normalize((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))(images, labels)
    assert torch.allclose(out, (images - 0.5) / 0.25)
    never = Compose([(HorizontalFlip(), 0.0)])
    assert torch.equal(never(images, labels)[0], images)
    always = Compose([HorizontalFlip()])
    assert torch.equal(always(images, labels)[0], images.flip(-1))


def test_mask2former_recipe_outputs_crop():
    random.seed(1)
    images, labels = mask2former_train_transform((16, 24))(*_pair())
    assert images.shape == (2, 3, 16, 24) and labels.shape == (2, 16, 24)


def _torch_equalize(images):
    """The former int64 torch implementation of torchvision's equalize, kept as the reference."""
    n, c, h, w = images.shape
    u8 = (images * 255).to(torch.uint8).reshape(n * c, h * w).long()
    out = torch.empty_like(u8)
    for i in range(n * c):
        hist = torch.bincount(u8[i], minlength=256)
        nonzero = hist[hist != 0]
        step = torch.div(nonzero[:-1].sum(), 255, rounding_mode="floor") if nonzero.numel() else 0
        if step == 0:
            out[i] = u8[i]
            continue
        lut = torch.div(
            torch.cumsum(hist, 0) + torch.div(step, 2, rounding_mode="floor"), step, rounding_mode="floor"
        )
        out[i] = torch.cat((lut.new_zeros(1), lut[:-1])).clamp_(0, 255)[u8[i]]
    return out.view(n, c, h, w).float() / 255.0


def test_equalize_equals_the_torch_algorithm_exactly():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 37, 53, generator=g)
    images[0, 1] = 0.5  # one value: step 0, unchanged
    images[1, 2] = (torch.rand(37, 53, generator=g) > 0.5).float() * 0.8  # two values
    images[1, 0] = images[1, 0] * 0.3  # narrow range
    out, _ = Equalize()(images, torch.zeros(2, 37, 53, dtype=torch.long))
    assert out.dtype == torch.float32 and torch.equal(out, _torch_equalize(images))
    assert not torch.equal(out[1, 0], images[1, 0])


@pytest.mark.parametrize("size", [(37, 53), (64, 256), (1, 300)])
def test_statistic_parts_equal_plain_reductions_in_either_memory_layout(size):
    """AutoContrast's channel range, Equalize's level counts and its tables (read on channels-last
    pixels where they lie) equal torch's amin/amax, NumPy's bincount and the torch algorithm, also
    on a window of the frame."""
    g = torch.Generator().manual_seed(3)
    images = torch.rand(2, 3, *size, generator=g)
    images[1, 2] = 0.25  # a flat channel
    last = images.contiguous(memory_format=torch.channels_last)
    for x in (images, last, last[..., :, 1:]):
        lo, hi = AutoContrast().statistic_part(x)
        assert torch.equal(lo, x.amin(dim=(2, 3), keepdim=True))
        assert torch.equal(hi, x.amax(dim=(2, 3), keepdim=True))
        u8 = (x * 255).to(torch.uint8).reshape(6, *x.shape[2:]).numpy()
        counts = np.stack([np.bincount(c.ravel(), minlength=256) for c in u8])
        assert np.array_equal(Equalize().statistic_part(x), counts)
        tables = Equalize().statistic(x)  # the flat channel has no table: it stays as it is
        assert torch.equal(Equalize().apply(x, tables), _torch_equalize(x))


def test_hue_shift_equals_the_modulo_of_opencv_hsv():
    """The hue wraps by one subtraction or addition of 360: the same float32 values as ``% 360``."""
    rng = np.random.default_rng(4)
    rgb = rng.random((40, 67, 3), dtype=np.float32)
    rgb[:4] = 0.5  # grey: hue 0
    rgb[4:8, :, 0], rgb[4:8, :, 2] = 1.0, 0.999999  # hue just below 360
    for shift in [*rng.uniform(-0.2, 0.2, 20).tolist(), 0.0, -0.2, 0.2, 1e-9, -1e-9]:
        hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
        hsv[..., 0] = (hsv[..., 0] + shift * 360.0) % 360.0
        assert np.array_equal(_shift_hue(rgb, shift), cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB))
