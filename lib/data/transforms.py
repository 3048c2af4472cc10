"""Joint image + label transforms (numpy / OpenCV / torch, no torchvision).

Every transform takes and returns ``(images, labels)``:

- ``images``: float32 ``[N, 3, H, W]`` (values in ``0..1`` until :class:`Normalize`);
- ``labels``: int64 ``[M, H, W]`` (trainIds, ``ANOMALY``, ``IGNORE``, or anomaly maps).

All ``N`` images and ``M`` labels share one draw of the random parameters, so an original and its
generated twin (``N = M = 2``), or an image with its anomaly and semantic maps (``N = 1, M = 2``),
receive identical geometry and colour changes. Labels are always resampled nearest-neighbour and
padded with ``IGNORE``. :class:`ToTensor` turns lists of numpy arrays into that pair.

:class:`Compose` applies each transform with its own probability, as the published Mask2Former
training recipe does (:func:`mask2former_train_transform`). Every random transform draws its
parameters from the frame size alone (``draw``) and returns deterministic steps (``Resize``,
``Crop``, ``Rotate``, flips; colour steps as :class:`PixelStep`), so a whole recipe can be drawn
before any pixel is touched (:meth:`Compose.draw`, used by :mod:`lib.data.crop_early`). Calling a
transform draws from Python's ``random`` module; :meth:`Compose.draw` takes any ``random.Random``.
"""

from __future__ import annotations

import math
import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from functools import partial

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from lib.config import IMAGENET_MEAN, IMAGENET_STD
from lib.data.levels import level_counts
from lib.data.pixels import (
    blend,
    blend_with_grey,
    channel_affine,
    from_interleaved,
    grey,
    interleaved,
    per_image,
)
from lib.image_tensor import normalize, rgb_to_unit
from lib.labels import IGNORE

Pair = tuple[Tensor, Tensor]
JointTransform = Callable[..., Pair]
Size = tuple[int, int]
Rng = random.Random
"""A source of draws: a ``random.Random``, or the ``random`` module itself."""
Step = Callable[[Tensor, Tensor], Pair]
"""A drawn, deterministic step; it also has ``out_size(size) -> size``."""
Edges = tuple[bool, bool, bool, bool]
"""Which sides (top, bottom, left, right) of a window are borders of the frame."""
ALL_EDGES: Edges = (True, True, True, True)

_PIXELS_PER_ROW = 256
_OPENCV_BLOCK = 16  # pixels per vector block of OpenCV's row loops (8 with AVX2; 16 covers AVX-512)
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
    """Apply ``(transform, probability)`` steps in order; a bare transform has probability 1.

    :meth:`draw` draws every random parameter of the whole recipe first (the coin of each step,
    then the step's own draws, in the same order as calling it) and returns the deterministic
    steps to run, so that a pipeline can plan which part of the frame it needs before touching a
    pixel (:mod:`lib.data.crop_early`).
    """

    def __init__(self, steps: Sequence[JointTransform | tuple[JointTransform, float]]) -> None:
        self.steps = [s if isinstance(s, tuple) else (s, 1.0) for s in steps]

    def __call__(self, images, labels) -> Pair:
        for transform, prob in self.steps:
            if prob >= 1.0 or random.random() < prob:
                images, labels = transform(images, labels)
        return images, labels

    def can_draw(self) -> bool:
        """Whether every step draws its parameters from the frame size alone (see :meth:`draw`)."""
        return all(hasattr(t, "draw") for t, _ in self.steps)

    def draw(self, size: Size, rng: Rng = random) -> list[Step]:
        """The deterministic steps of one application to frames of ``size`` (height, width)."""
        plan: list[Step] = []
        for transform, prob in self.steps:
            if prob >= 1.0 or rng.random() < prob:
                for step in transform.draw(size, rng):
                    size = step.out_size(size)
                    plan.append(step)
        return plan


def run_steps(steps: Sequence[Step], images: Tensor, labels: Tensor) -> Pair:
    """Apply drawn steps to whole frames, one after the other."""
    for step in steps:
        images, labels = step(images, labels)
    return images, labels


class _Drawn(ABC):
    """A transform that draws its parameters (:meth:`draw`) and then runs the drawn steps."""

    @abstractmethod
    def draw(self, size: Size, rng: Rng) -> list[Step]:
        """The deterministic steps of one application to frames of ``size``."""

    def __call__(self, images: Tensor, labels: Tensor) -> Pair:
        return run_steps(self.draw(tuple(images.shape[-2:]), random), images, labels)


class PixelStep(ABC):
    """A colour step: each output pixel depends on its input neighbourhood of ``radius`` pixels and,
    for some steps, on a ``statistic`` of the whole frame (None when the step needs none)."""

    radius = 0
    uses_statistic = False
    per_value = False
    """Each output value is a function of the same pixel's same channel alone (given the statistic):
    the step can run on a table of the 256 levels of an 8-bit source."""
    column_alignment = 1
    """Windows start and end on multiples of this many columns (or at the frame's edge)."""

    def out_size(self, size: Size) -> Size:
        return size

    def draw(self, size: Size, rng: Rng) -> list[Step]:
        return [self]

    def statistic(self, images: Tensor) -> object:
        """The whole-frame statistic of ``images`` (None for steps without one)."""
        return self.combine([self.statistic_part(images)])

    def statistic_part(self, images: Tensor) -> object:
        """What the statistic needs from one band of rows; :meth:`combine` joins the bands exactly."""
        return None

    def combine(self, parts: list) -> object:
        return None

    @abstractmethod
    def apply(self, images: Tensor, stat: object, edges: Edges = ALL_EDGES) -> Tensor:
        """The step on a window of the frame; ``edges`` says which sides (top, bottom, left, right)
        of the window are the frame's own borders (the whole frame has all four)."""

    def __call__(self, images: Tensor, labels: Tensor) -> Pair:
        return self.apply(images, self.statistic(images)), labels


class Resize:
    """Bilinear resize of images, nearest of labels, to ``size`` (height, width)."""

    def __init__(self, size: Size) -> None:
        self.size = (int(size[0]), int(size[1]))

    def out_size(self, size: Size) -> Size:
        return self.size

    def __call__(self, images: Tensor, labels: Tensor) -> Pair:
        images = F.interpolate(images, size=self.size, mode="bilinear", align_corners=False)
        labels = F.interpolate(labels[:, None].float(), size=self.size, mode="nearest")[:, 0].long()
        return images, labels


class RandomResize(_Drawn):
    """Rescale by a factor drawn from ``scales`` (a list: uniform choice) or ``scale_range`` (uniform)."""

    def __init__(
        self, *, scales: Sequence[float] | None = None, scale_range: tuple[float, float] | None = None
    ) -> None:
        if (scales is None) == (scale_range is None):
            raise ValueError("RandomResize needs exactly one of scales= or scale_range=")
        self.scales = list(scales) if scales is not None else None
        self.scale_range = scale_range

    def draw(self, size: Size, rng: Rng) -> list[Step]:
        s = rng.choice(self.scales) if self.scales is not None else rng.uniform(*self.scale_range)
        h, w = size
        return [Resize((max(1, int(h * s)), max(1, int(w * s))))]


class Crop:
    """Cut ``size`` (height, width) at ``(top, left)`` of the frame padded at the bottom and right
    (images with 0, labels with ``IGNORE``) to at least ``size``."""

    def __init__(self, top: int, left: int, size: Size) -> None:
        self.top, self.left, self.size = top, left, (int(size[0]), int(size[1]))

    def out_size(self, size: Size) -> Size:
        return self.size

    def __call__(self, images: Tensor, labels: Tensor) -> Pair:
        ch, cw = self.size
        h, w = images.shape[-2:]
        if h < ch or w < cw:
            ph, pw = max(ch - h, 0), max(cw - w, 0)
            images = F.pad(images, (0, pw, 0, ph), value=0.0)
            labels = F.pad(labels, (0, pw, 0, ph), value=IGNORE)
        rows, cols = slice(self.top, self.top + ch), slice(self.left, self.left + cw)
        return images[..., rows, cols], labels[..., rows, cols]


class RandomCrop(_Drawn):
    """Crop ``size = (h, w)`` at a uniform position; pad images with 0 and labels with ``IGNORE`` first."""

    def __init__(self, size: tuple[int, int]) -> None:
        self.size = (int(size[0]), int(size[1]))

    def draw(self, size: Size, rng: Rng) -> list[Step]:
        ch, cw = self.size
        h, w = max(size[0], ch), max(size[1], cw)
        top = rng.randint(0, h - ch)
        left = rng.randint(0, w - cw)
        return [Crop(top, left, self.size)]


class _Flip:
    dim = -1

    def out_size(self, size: Size) -> Size:
        return size

    def draw(self, size: Size, rng: Rng) -> list[Step]:
        return [self]

    def __call__(self, images: Tensor, labels: Tensor) -> Pair:
        return images.flip(self.dim), labels.flip(self.dim)


class HorizontalFlip(_Flip):
    """Mirror left-right (give it a probability in :class:`Compose`)."""

    dim = -1


class VerticalFlip(_Flip):
    """Mirror top-bottom (give it a probability in :class:`Compose`)."""

    dim = -2


def rotation_theta(angle: float, size: Size) -> Tensor:
    """``affine_grid``'s ``[2, 3]`` matrix for a rotation by ``angle`` radians about the centre of a
    frame of ``size``; normalised coordinates scale x and y differently, so it rotates pixel units."""
    h, w = size
    cos, sin = math.cos(angle), math.sin(angle)
    return torch.tensor([[cos, -sin * h / w, 0.0], [sin * w / h, cos, 0.0]], dtype=torch.float32)


class Rotate:
    """Rotate by ``angle`` radians about the centre (images bilinear, labels nearest; outside: 0, IGNORE)."""

    def __init__(self, angle: float) -> None:
        self.angle = angle

    def out_size(self, size: Size) -> Size:
        return size

    def __call__(self, images: Tensor, labels: Tensor) -> Pair:
        h, w = images.shape[-2:]
        grid = F.affine_grid(rotation_theta(self.angle, (h, w))[None], [1, 1, h, w], align_corners=False)
        images = F.grid_sample(
            images, grid.expand(images.shape[0], -1, -1, -1), mode="bilinear", align_corners=False
        )
        shifted = (labels + 1).float()[:, None]  # 0 marks outside the image after sampling
        out = F.grid_sample(
            shifted, grid.expand(labels.shape[0], -1, -1, -1), mode="nearest", align_corners=False
        )[:, 0].long()
        return images, torch.where(out == 0, torch.full_like(out, IGNORE), out - 1)


class RandomRotate(_Drawn):
    """Rotate about the centre by an angle uniform in ``[-degrees, degrees]``; outside labels -> IGNORE."""

    def __init__(self, degrees: float = 10.0) -> None:
        self.degrees = degrees

    def draw(self, size: Size, rng: Rng) -> list[Step]:
        return [Rotate(math.radians(rng.uniform(-self.degrees, self.degrees)))]


def _shift_hue(rgb: np.ndarray, shift: float, dst: np.ndarray | None = None) -> np.ndarray:
    """``[H, W, 3]`` float32 RGB with the hue turned by ``shift`` (OpenCV's float HSV), into ``dst``."""
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)  # float32: H in [0, 360)
    hue = cv2.extractChannel(hsv, 0)
    hue += shift * 360.0  # then modulo 360 (the same float32 values as ``%``, without its division):
    if shift >= 0.0:  # a turn forwards leaves no hue below 0, one backwards none at 360 or above
        np.subtract(hue, 360.0, out=hue, where=hue >= 360.0)
    else:
        np.add(hue, 360.0, out=hue, where=hue < 0.0)
    cv2.insertChannel(hue, hsv, 0)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB, dst=dst)


class Brightness(PixelStep):
    """Multiply by ``factor``, clip to ``0..1``."""

    per_value = True

    def __init__(self, factor: float) -> None:
        self.factor = factor

    def apply(self, images: Tensor, stat: object, edges: Edges = ALL_EDGES) -> Tensor:
        return (images * self.factor).clamp_(0.0, 1.0)


class Contrast(PixelStep):
    """Blend with the image's mean grey level (a whole-frame statistic) by ``factor``."""

    per_value = True

    uses_statistic = True

    def __init__(self, factor: float) -> None:
        self.factor = factor

    def statistic_part(self, images: Tensor) -> Tensor:
        return grey(images)

    def combine(self, parts: list) -> Tensor:
        levels = parts[0] if len(parts) == 1 else torch.cat(parts, dim=2)  # the grey of each band
        return levels.mean(dim=(1, 2, 3), keepdim=True)

    def apply(self, images: Tensor, stat: object, edges: Edges = ALL_EDGES) -> Tensor:
        return blend(images, stat, self.factor)


class Saturation(PixelStep):
    """Blend with the pixel's own grey level by ``factor``."""

    def __init__(self, factor: float) -> None:
        self.factor = factor

    def apply(self, images: Tensor, stat: object, edges: Edges = ALL_EDGES) -> Tensor:
        return blend_with_grey(images, self.factor)


class Hue(PixelStep):
    """Rotate the hue by ``shift`` turns (OpenCV's float HSV)."""

    column_alignment = _OPENCV_BLOCK

    def __init__(self, shift: float) -> None:
        self.shift = shift

    def apply(self, images: Tensor, stat: object, edges: Edges = ALL_EDGES) -> Tensor:
        return per_image(images, partial(_shift_hue, shift=self.shift)).clamp_(0.0, 1.0)


class ColorJitter(_Drawn):
    """Brightness, contrast, saturation and hue jitter in random order (torchvision's semantics).

    Factors are drawn from ``[max(0, 1 - x), 1 + x]`` and the hue shift from ``[-hue, hue]``;
    defaults are the published recipe's ``(0.8, 0.8, 0.8, 0.2)``.
    """

    def __init__(
        self, brightness: float = 0.8, contrast: float = 0.8, saturation: float = 0.8, hue: float = 0.2
    ) -> None:
        self.brightness, self.contrast, self.saturation, self.hue = brightness, contrast, saturation, hue

    def draw(self, size: Size, rng: Rng) -> list[Step]:
        ops = [0, 1, 2, 3]
        rng.shuffle(ops)
        steps: list[Step] = []
        for op in ops:
            if op == 0 and self.brightness > 0:
                steps.append(Brightness(rng.uniform(max(0.0, 1 - self.brightness), 1 + self.brightness)))
            elif op == 1 and self.contrast > 0:
                steps.append(Contrast(rng.uniform(max(0.0, 1 - self.contrast), 1 + self.contrast)))
            elif op == 2 and self.saturation > 0:
                steps.append(Saturation(rng.uniform(max(0.0, 1 - self.saturation), 1 + self.saturation)))
            elif op == 3 and self.hue > 0:
                steps.append(Hue(rng.uniform(-self.hue, self.hue)))
        return steps


class Blur(PixelStep):
    """Gaussian blur with an odd ``kernel_size`` and ``sigma`` (reflect-101 frame borders)."""

    column_alignment = _OPENCV_BLOCK

    def __init__(self, kernel_size: int, sigma: float) -> None:
        self.kernel_size, self.sigma = kernel_size, sigma
        self.radius = kernel_size // 2

    def apply(self, images: Tensor, stat: object, edges: Edges = ALL_EDGES) -> Tensor:
        k = self.kernel_size
        blur = partial(
            cv2.GaussianBlur,
            ksize=(k, k),
            sigmaX=self.sigma,
            sigmaY=self.sigma,
            borderType=cv2.BORDER_REFLECT_101,
        )
        return per_image(images, blur)


class GaussianBlur(_Drawn):
    """Separable Gaussian blur, ``kernel_size`` odd, sigma uniform in ``sigma`` (reflect padding)."""

    def __init__(self, kernel_size: int = 9, sigma: tuple[float, float] = (0.1, 5.0)) -> None:
        if kernel_size % 2 != 1:
            raise ValueError(f"GaussianBlur kernel_size must be odd, got {kernel_size}")
        self.kernel_size, self.sigma = kernel_size, sigma

    def draw(self, size: Size, rng: Rng) -> list[Step]:
        return [Blur(self.kernel_size, rng.uniform(*self.sigma))]


class Sharpen(PixelStep):
    """Blend with a 3x3-smoothed copy by ``factor``; the frame's outermost pixels stay unsmoothed and
    frames of 2 pixels or less on a side are left as they are (torchvision's adjust_sharpness)."""

    radius = 1
    column_alignment = _OPENCV_BLOCK

    def __init__(self, factor: float, frame: Size) -> None:
        self.factor, self.frame = factor, frame

    def apply(self, images: Tensor, stat: object, edges: Edges = ALL_EDGES) -> Tensor:
        if self.frame[0] <= 2 or self.frame[1] <= 2:
            return images
        smooth = per_image(images, partial(cv2.filter2D, ddepth=-1, kernel=_SHARPNESS_KERNEL))
        top, bottom, left, right = edges
        if top:
            smooth[..., 0, :] = images[..., 0, :]
        if bottom:
            smooth[..., -1, :] = images[..., -1, :]
        if left:
            smooth[..., :, 0] = images[..., :, 0]
        if right:
            smooth[..., :, -1] = images[..., :, -1]
        return blend(images, smooth, self.factor, scratch_b=True)


class RandomSharpness(_Drawn):
    """Blend with a 3x3-smoothed copy by a factor uniform in ``[0, 2]`` (torchvision's adjust_sharpness)."""

    def draw(self, size: Size, rng: Rng) -> list[Step]:
        return [Sharpen(rng.uniform(0.0, 2.0), size)]


class AutoContrast(PixelStep):
    """Stretch each channel of each image to the full ``0..1`` range (of the whole frame)."""

    uses_statistic = True
    per_value = True

    def statistic_part(self, images: Tensor) -> tuple[Tensor, Tensor]:
        n, c = images.shape[:2]
        if images.stride(1) == 1:  # channels innermost in memory: reduce each image's [H * W, C] pixels
            pixels = [np.ascontiguousarray(im).reshape(1, -1, c) for im in images.permute(0, 2, 3, 1).numpy()]
            lo = np.concatenate([_extremes_per_row(px, np.min) for px in pixels])
            hi = np.concatenate([_extremes_per_row(px, np.max) for px in pixels])
            return torch.from_numpy(lo).view(n, c, 1, 1), torch.from_numpy(hi).view(n, c, 1, 1)
        return images.amin(dim=(2, 3), keepdim=True), images.amax(dim=(2, 3), keepdim=True)

    def combine(self, parts: list) -> tuple[Tensor, Tensor]:
        lo = torch.stack([p[0] for p in parts]).amin(0)
        hi = torch.stack([p[1] for p in parts]).amax(0)
        flat = hi <= lo
        scale = torch.where(flat, torch.ones_like(hi), 1.0 / (hi - lo).clamp_min(1e-12))
        return torch.where(flat, torch.zeros_like(lo), lo), scale

    def apply(self, images: Tensor, stat: object, edges: Edges = ALL_EDGES) -> Tensor:
        lo, scale = stat
        return channel_affine(images, lo, scale)


def _extremes_per_row(pixels: np.ndarray, reduce: Callable[..., np.ndarray]) -> np.ndarray:
    """``reduce`` over axis 1 of ``[N, P, C]`` pixels, 256 pixels to a row of a ``[N, P / 256, 256 C]``
    view: NumPy then reduces long contiguous rows in vector registers instead of 3-value strides."""
    n, p, c = pixels.shape
    whole = p - p % _PIXELS_PER_ROW
    parts = [pixels[:, whole:]]
    if whole:
        wide = pixels[:, :whole].reshape(n, -1, _PIXELS_PER_ROW * c)
        parts.append(reduce(wide, axis=1).reshape(n, _PIXELS_PER_ROW, c))
    return reduce(np.concatenate(parts, axis=1), axis=1)


def to_u8(images: Tensor) -> np.ndarray:
    """``[N, C, H, W]`` 0..1 -> ``[N * C, H, W]`` uint8, truncating (torchvision's equalize)."""
    n, c, h, w = images.shape
    return _u8(images).reshape(n * c, h, w).numpy()


def _u8(images: Tensor) -> Tensor:
    """``to_u8``'s values as ``[N, C, H, W]``, in the memory layout of ``images``."""
    pixels = interleaved(images)
    if pixels is None:
        return (images * 255).to(torch.uint8)
    scaled = pixels * np.float32(255.0)  # channels innermost: NumPy's cast truncates as torch's, faster
    return torch.from_numpy(scaled.astype(np.uint8)).permute(0, 3, 1, 2)


class Equalize(PixelStep):
    """Histogram-equalise each channel of each image on 8-bit values (torchvision's ``equalize``).

    Integer NumPy histograms of the whole frame give one OpenCV look-up table per channel: the
    same values as the torchvision algorithm, without int64 copies of the full-resolution image.
    """

    uses_statistic = True
    per_value = True

    def statistic_part(self, images: Tensor) -> np.ndarray:
        u8 = _u8(images)
        if u8.stride(1) != 1:
            return self._histograms(to_u8(images))
        pixels = u8.permute(0, 2, 3, 1).numpy()  # channels innermost: count them where they lie
        return np.stack([level_counts(im, c) for im in pixels for c in range(im.shape[-1])])

    def combine(self, parts: list) -> list[np.ndarray | None]:
        return self.tables_from_histograms(sum(parts[1:], parts[0]))

    @staticmethod
    def _histograms(u8: np.ndarray) -> np.ndarray:
        return np.stack([level_counts(c) for c in u8])

    @staticmethod
    def _tables(u8: np.ndarray) -> list[np.ndarray | None]:
        return Equalize.tables_from_histograms(Equalize._histograms(u8))

    @staticmethod
    def tables_from_histograms(histograms: Sequence[np.ndarray]) -> list[np.ndarray | None]:
        """One uint8 table per channel's 256-bin histogram, None where the channel stays as it is."""
        tables: list[np.ndarray | None] = []
        for hist in histograms:
            nonzero = hist[hist != 0]
            step = int(nonzero[:-1].sum()) // 255
            if step == 0:
                tables.append(None)
                continue
            lut = (np.cumsum(hist) + step // 2) // step
            tables.append(np.concatenate(([0], lut[:-1])).clip(0, 255).astype(np.uint8))
        return tables

    @staticmethod
    def _lookup(u8: np.ndarray, tables: list[np.ndarray | None], shape: torch.Size) -> Tensor:
        out = np.empty_like(u8)
        for i, (channel, lut) in enumerate(zip(u8, tables, strict=True)):
            out[i] = channel if lut is None else cv2.LUT(channel, lut)
        return torch.from_numpy(out).view(shape).float() / 255.0

    def apply(self, images: Tensor, stat: object, edges: Edges = ALL_EDGES) -> Tensor:
        u8 = _u8(images)
        if u8.stride(1) != 1:
            return self._lookup(to_u8(images), stat, images.shape)
        n, c = images.shape[:2]  # channels innermost: one 3-channel table per image, read in place
        identity = np.arange(256, dtype=np.uint8)
        levels = np.stack([identity if t is None else t for t in stat]).reshape(n, c, 256)
        tables = levels.transpose(0, 2, 1).astype(np.float32) / 255.0  # [N, 256, C]: the output values
        pixels = u8.permute(0, 2, 3, 1).numpy()
        out = np.empty(pixels.shape, np.float32)
        for im, table, dst in zip(pixels, tables, out, strict=True):
            cv2.LUT(im, table[None], dst=dst)
        return from_interleaved(out)

    def __call__(self, images: Tensor, labels: Tensor) -> Pair:
        u8 = to_u8(images)
        return self._lookup(u8, self._tables(u8), images.shape), labels


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
