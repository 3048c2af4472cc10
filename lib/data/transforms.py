"""Joint image + label transforms (numpy / OpenCV / torch, no torchvision).

Every transform takes and returns ``(images, labels)``:

- ``images``: float32 ``[N, 3, H, W]`` (values in ``0..1`` until :class:`Normalize`);
- ``labels``: int64 ``[M, H, W]`` (trainIds, ``ANOMALY``, ``IGNORE``, or anomaly maps).

All ``N`` images and ``M`` labels share one draw of the random parameters, so an original and its
generated twin (``N = M = 2``), or an image with its anomaly and semantic maps (``N = 1, M = 2``),
receive identical geometry and colour changes. Labels are always resampled nearest-neighbour and
padded with ``IGNORE``. :class:`ToTensor` turns lists of numpy arrays into that pair.

:class:`Compose` applies each transform with its own probability, as the published Mask2Former
training recipe does (:func:`mask2former_train_transform`). Randomness comes from Python's
``random`` module, which DataLoader workers seed individually.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from functools import partial

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from lib.config import IMAGENET_MEAN, IMAGENET_STD
from lib.image_tensor import normalize, rgb_to_unit
from lib.labels import IGNORE

Pair = tuple[Tensor, Tensor]
JointTransform = Callable[..., Pair]

_GREY = (0.299, 0.587, 0.114)
_SHARPNESS_KERNEL = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], np.float32) / 13.0


class ToTensor:
    """Lists of ``[H, W, 3]`` uint8 images and ``[H, W]`` labels -> ``([N,3,H,W] 0..1, [M,H,W] int64)``."""

    def __call__(self, images: Sequence[np.ndarray], labels: Sequence[np.ndarray]) -> Pair:
        shapes = {im.shape[:2] for im in images} | {lb.shape[:2] for lb in labels}
        if len(shapes) != 1:
            raise ValueError(f"images and labels must share one height/width, got {sorted(shapes)}")
        img = rgb_to_unit(np.stack(images))
        lab = torch.from_numpy(np.stack(labels).astype(np.int64))
        return img, lab


class Normalize:
    """``(image - mean) / std`` per channel (ImageNet statistics by default)."""

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> None:
        self.mean, self.std = tuple(mean), tuple(std)

    def __call__(self, images: Tensor, labels: Tensor) -> Pair:
        return normalize(images, self.mean, self.std), labels


class Compose:
    """Apply ``(transform, probability)`` steps in order; a bare transform has probability 1."""

    def __init__(self, steps: Sequence[JointTransform | tuple[JointTransform, float]]) -> None:
        self.steps = [s if isinstance(s, tuple) else (s, 1.0) for s in steps]

    def __call__(self, images, labels) -> Pair:
        for transform, prob in self.steps:
            if prob >= 1.0 or random.random() < prob:
                images, labels = transform(images, labels)
        return images, labels


def _resize(images: Tensor, labels: Tensor, size: tuple[int, int]) -> Pair:
    images = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
    labels = F.interpolate(labels[:, None].float(), size=size, mode="nearest")[:, 0].long()
    return images, labels


class RandomResize:
    """Rescale by a factor drawn from ``scales`` (a list: uniform choice) or ``scale_range`` (uniform)."""

    def __init__(
        self, *, scales: Sequence[float] | None = None, scale_range: tuple[float, float] | None = None
    ) -> None:
        if (scales is None) == (scale_range is None):
            raise ValueError("RandomResize needs exactly one of scales= or scale_range=")
        self.scales = list(scales) if scales is not None else None
        self.scale_range = scale_range

    def __call__(self, images: Tensor, labels: Tensor) -> Pair:
        s = random.choice(self.scales) if self.scales is not None else random.uniform(*self.scale_range)
        h, w = images.shape[-2:]
        return _resize(images, labels, (max(1, int(h * s)), max(1, int(w * s))))


class RandomCrop:
    """Crop ``size = (h, w)`` at a uniform position; pad images with 0 and labels with ``IGNORE`` first."""

    def __init__(self, size: tuple[int, int]) -> None:
        self.size = (int(size[0]), int(size[1]))

    def __call__(self, images: Tensor, labels: Tensor) -> Pair:
        ch, cw = self.size
        h, w = images.shape[-2:]
        if h < ch or w < cw:
            ph, pw = max(ch - h, 0), max(cw - w, 0)
            images = F.pad(images, (0, pw, 0, ph), value=0.0)
            labels = F.pad(labels, (0, pw, 0, ph), value=IGNORE)
            h, w = images.shape[-2:]
        top = random.randint(0, h - ch)
        left = random.randint(0, w - cw)
        return images[..., top : top + ch, left : left + cw], labels[..., top : top + ch, left : left + cw]


class HorizontalFlip:
    """Mirror left-right (give it a probability in :class:`Compose`)."""

    def __call__(self, images: Tensor, labels: Tensor) -> Pair:
        return images.flip(-1), labels.flip(-1)


class VerticalFlip:
    """Mirror top-bottom (give it a probability in :class:`Compose`)."""

    def __call__(self, images: Tensor, labels: Tensor) -> Pair:
        return images.flip(-2), labels.flip(-2)


class RandomRotate:
    """Rotate about the centre by an angle uniform in ``[-degrees, degrees]``; outside labels -> IGNORE."""

    def __init__(self, degrees: float = 10.0) -> None:
        self.degrees = degrees

    def __call__(self, images: Tensor, labels: Tensor) -> Pair:
        angle = math.radians(random.uniform(-self.degrees, self.degrees))
        h, w = images.shape[-2:]
        cos, sin = math.cos(angle), math.sin(angle)
        # Normalised coordinates scale x and y differently; rotate in pixel units.
        theta = torch.tensor([[cos, -sin * h / w, 0.0], [sin * w / h, cos, 0.0]], dtype=torch.float32)
        grid = F.affine_grid(theta[None], [1, 1, h, w], align_corners=False)
        images = F.grid_sample(
            images, grid.expand(images.shape[0], -1, -1, -1), mode="bilinear", align_corners=False
        )
        shifted = (labels + 1).float()[:, None]  # 0 marks outside the image after sampling
        out = F.grid_sample(
            shifted, grid.expand(labels.shape[0], -1, -1, -1), mode="nearest", align_corners=False
        )[:, 0].long()
        return images, torch.where(out == 0, torch.full_like(out, IGNORE), out - 1)


def _grey(images: Tensor) -> Tensor:
    r, g, b = images.unbind(1)
    return (_GREY[0] * r + _GREY[1] * g + _GREY[2] * b).unsqueeze(1)


def _blend(a: Tensor, b: Tensor, factor: float) -> Tensor:
    return (factor * a + (1.0 - factor) * b).clamp_(0.0, 1.0)


def _per_image(images: Tensor, fn: Callable[[np.ndarray], np.ndarray]) -> Tensor:
    """Apply an OpenCV function to each ``[H, W, 3]`` float32 image (much faster than torch convs on CPU)."""
    out = [torch.from_numpy(fn(np.ascontiguousarray(im.permute(1, 2, 0).numpy()))) for im in images]
    return torch.stack(out).permute(0, 3, 1, 2).contiguous()


def _shift_hue(rgb: np.ndarray, shift: float) -> np.ndarray:
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)  # float32: H in [0, 360)
    hsv[..., 0] = (hsv[..., 0] + shift * 360.0) % 360.0
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


class ColorJitter:
    """Brightness, contrast, saturation and hue jitter in random order (torchvision's semantics).

    Factors are drawn from ``[max(0, 1 - x), 1 + x]`` and the hue shift from ``[-hue, hue]``;
    defaults are the published recipe's ``(0.8, 0.8, 0.8, 0.2)``.
    """

    def __init__(
        self, brightness: float = 0.8, contrast: float = 0.8, saturation: float = 0.8, hue: float = 0.2
    ) -> None:
        self.brightness, self.contrast, self.saturation, self.hue = brightness, contrast, saturation, hue

    def __call__(self, images: Tensor, labels: Tensor) -> Pair:
        ops = [0, 1, 2, 3]
        random.shuffle(ops)
        for op in ops:
            if op == 0 and self.brightness > 0:
                f = random.uniform(max(0.0, 1 - self.brightness), 1 + self.brightness)
                images = (images * f).clamp_(0.0, 1.0)
            elif op == 1 and self.contrast > 0:
                f = random.uniform(max(0.0, 1 - self.contrast), 1 + self.contrast)
                images = _blend(images, _grey(images).mean(dim=(1, 2, 3), keepdim=True), f)
            elif op == 2 and self.saturation > 0:
                f = random.uniform(max(0.0, 1 - self.saturation), 1 + self.saturation)
                images = _blend(images, _grey(images), f)
            elif op == 3 and self.hue > 0:
                shift = random.uniform(-self.hue, self.hue)
                images = _per_image(images, lambda im, s=shift: _shift_hue(im, s)).clamp_(0.0, 1.0)
        return images, labels


class GaussianBlur:
    """Separable Gaussian blur, ``kernel_size`` odd, sigma uniform in ``sigma`` (reflect padding)."""

    def __init__(self, kernel_size: int = 9, sigma: tuple[float, float] = (0.1, 5.0)) -> None:
        if kernel_size % 2 != 1:
            raise ValueError(f"GaussianBlur kernel_size must be odd, got {kernel_size}")
        self.kernel_size, self.sigma = kernel_size, sigma

    def __call__(self, images: Tensor, labels: Tensor) -> Pair:
        sigma = random.uniform(*self.sigma)
        k = self.kernel_size
        blur = partial(
            cv2.GaussianBlur, ksize=(k, k), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT_101
        )
        return _per_image(images, blur), labels


class RandomSharpness:
    """Blend with a 3x3-smoothed copy by a factor uniform in ``[0, 2]`` (torchvision's adjust_sharpness)."""

    def __call__(self, images: Tensor, labels: Tensor) -> Pair:
        factor = random.uniform(0.0, 2.0)
        h, w = images.shape[-2:]
        if h <= 2 or w <= 2:
            return images, labels
        smooth = _per_image(images, lambda im: cv2.filter2D(im, -1, _SHARPNESS_KERNEL))
        smooth[..., 0, :], smooth[..., -1, :] = images[..., 0, :], images[..., -1, :]
        smooth[..., :, 0], smooth[..., :, -1] = images[..., :, 0], images[..., :, -1]
        return _blend(images, smooth, factor), labels


class AutoContrast:
    """Stretch each channel of each image to the full ``0..1`` range."""

    def __call__(self, images: Tensor, labels: Tensor) -> Pair:
        lo = images.amin(dim=(2, 3), keepdim=True)
        hi = images.amax(dim=(2, 3), keepdim=True)
        flat = hi <= lo
        scale = torch.where(flat, torch.ones_like(hi), 1.0 / (hi - lo).clamp_min(1e-12))
        lo = torch.where(flat, torch.zeros_like(lo), lo)
        return ((images - lo) * scale).clamp_(0.0, 1.0), labels


class Equalize:
    """Histogram-equalise each channel of each image on 8-bit values (torchvision's ``equalize``).

    Integer NumPy histograms and an OpenCV look-up table per channel: the same values as the
    torchvision algorithm, without int64 copies of the full-resolution image.
    """

    def __call__(self, images: Tensor, labels: Tensor) -> Pair:
        n, c, h, w = images.shape
        u8 = (images * 255).to(torch.uint8).reshape(n * c, h, w).numpy()
        out = np.empty_like(u8)
        for i, channel in enumerate(u8):
            hist = np.bincount(channel.ravel(), minlength=256)
            nonzero = hist[hist != 0]
            step = int(nonzero[:-1].sum()) // 255
            if step == 0:
                out[i] = channel
                continue
            lut = (np.cumsum(hist) + step // 2) // step
            lut = np.concatenate(([0], lut[:-1])).clip(0, 255).astype(np.uint8)
            out[i] = cv2.LUT(channel, lut)
        return torch.from_numpy(out).view(n, c, h, w).float() / 255.0, labels


def mask2former_train_transform(crop_size: tuple[int, int]) -> Compose:
    """The published Mask2Former fine-tuning augmentation (each step with its probability).

    Output images are in ``0..1``: the training dataset pastes outlier objects into the crop
    and normalises afterwards.
    """
    return Compose(
        [
            (ColorJitter(), 0.5),
            (GaussianBlur(), 0.5),
            (RandomSharpness(), 0.5),
            (AutoContrast(), 0.5),
            (Equalize(), 0.5),
            (RandomResize(scales=(0.7, 0.8, 0.9, 1.0)), 0.5),
            (RandomRotate(10.0), 0.5),
            (HorizontalFlip(), 0.5),
            (VerticalFlip(), 0.5),
            (RandomCrop(crop_size), 1.0),
        ]
    )
