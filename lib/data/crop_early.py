"""Crop-early execution of a drawn recipe: only the part of the source frames that the crop keeps.

A training recipe draws all its parameters first (:meth:`lib.data.transforms.Compose.draw`): colour
steps, then geometric steps ending in a crop. Walking the geometric steps backwards from the crop
gives the window of each intermediate frame that the crop depends on (a rotation needs the bounding
box of its rotated window, a resize the source rows and columns of its bilinear and nearest
taps, a flip the mirrored window). Colour steps then run on that source window grown by their
filter radius; a step that needs a whole-frame statistic (contrast's mean grey, auto-contrast's
range, equalisation's histogram) takes it from the whole frame, processed by the steps before it,
so the statistic is the full-frame pipeline's own. OpenCV's vector code rounds a row's last
pixels differently, so windows read by OpenCV steps start and end on the same column multiples
as its vector blocks (``column_alignment``) unless they end at the frame's edge. Colour values
are therefore bit-identical to running the recipe on whole frames; resampled images differ by
float rounding only, labels only where a resampled coordinate lies within rounding of a
nearest-neighbour boundary.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial, singledispatch

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from lib.data.levels import level_counts
from lib.data.pixels import GREY_WEIGHTS, from_interleaved
from lib.data.transforms import (
    AutoContrast,
    Compose,
    Contrast,
    Crop,
    Equalize,
    HorizontalFlip,
    Pair,
    PixelStep,
    Resize,
    Rotate,
    Size,
    Step,
    VerticalFlip,
    rotation_theta,
    run_steps,
    to_u8,
)
from lib.image_tensor import rgb_to_unit
from lib.labels import IGNORE

_UNIT_LEVELS = torch.arange(256, dtype=torch.uint8).float().div_(255.0)
"""Each 8-bit level in ``0..1``, computed as :class:`~lib.data.transforms.ToTensor` converts it."""


@dataclass(frozen=True)
class Box:
    """The half-open pixel window ``[top, bottom) x [left, right)`` of a frame."""

    top: int
    left: int
    bottom: int
    right: int

    @classmethod
    def whole(cls, size: Size) -> Box:
        return cls(0, 0, size[0], size[1])

    @property
    def empty(self) -> bool:
        return self.bottom <= self.top or self.right <= self.left

    def clip(self, size: Size) -> Box:
        return Box(max(self.top, 0), max(self.left, 0), min(self.bottom, size[0]), min(self.right, size[1]))

    def grow(self, radius: int, size: Size, align: int = 1) -> Box:
        """Grown by ``radius`` on every side, columns widened to multiples of ``align``, clipped."""
        r = radius
        left, right = (self.left - r) // align * align, -(-(self.right + r) // align) * align
        return Box(self.top - r, left, self.bottom + r, right).clip(size)

    def inside(self, outer: Box) -> tuple[slice, slice]:
        """Row and column slices of this window within the array that holds ``outer``."""
        return (
            slice(self.top - outer.top, self.bottom - outer.top),
            slice(self.left - outer.left, self.right - outer.left),
        )

    def edges(self, size: Size) -> tuple[bool, bool, bool, bool]:
        """Which sides (top, bottom, left, right) lie on the borders of a frame of ``size``."""
        return self.top == 0, self.bottom == size[0], self.left == 0, self.right == size[1]


class Frames:
    """The uint8 source frames of one item: images ``[H, W, 3]`` and label maps ``[H, W]``.

    ``prepare`` is a pixel-wise function of the list of images (e.g. mixup of a generated image
    with its original) applied to whichever window is read, so it costs only that window.
    """

    def __init__(
        self,
        images: Sequence[np.ndarray],
        labels: Sequence[np.ndarray],
        prepare: Callable[[list[np.ndarray]], list[np.ndarray]] | None = None,
    ) -> None:
        shapes = {im.shape[:2] for im in images} | {lb.shape[:2] for lb in labels}
        if len(shapes) != 1:
            raise ValueError(f"images and labels must share one height/width, got {sorted(shapes)}")
        self._images, self._labels, self._prepare = list(images), list(labels), prepare
        self.count = len(self._images)
        self.size: Size = next(iter(shapes))

    def images(self, box: Box, planar: bool = False) -> Tensor:
        """Float ``[N, 3, h, w]`` in ``0..1`` of ``box`` (the same values as :class:`ToTensor`),
        channels innermost in memory or, with ``planar``, contiguous."""
        crops = self._prepared(box)
        h, w = crops[0].shape[:2]
        if planar:
            out = np.empty((self.count, 3, h, w), np.float32)
            parts = [(p, d) for crop, dst in zip(crops, out) for p, d in zip(cv2.split(crop), dst)]
        else:
            out = np.empty((self.count, h, w, 3), np.float32)
            parts = list(zip(crops, out, strict=True))
        for src, dst in parts:  # each window read in place and divided by 255, as ToTensor does
            np.divide(src, np.float32(255.0), out=dst, dtype=np.float32)
        return torch.from_numpy(out) if planar else from_interleaved(out)

    def _prepared(self, box: Box) -> list[np.ndarray]:
        crops = [im[box.top : box.bottom, box.left : box.right] for im in self._images]
        return self._prepare(crops) if self._prepare is not None else crops

    def settle(self, rows: int) -> None:
        """Apply ``prepare`` to the whole frames once, ``rows`` rows at a time, so that passes over
        whole frames read prepared pixels instead of preparing them again."""
        if self._prepare is None:
            return
        settled: list[np.ndarray | None] = [None] * self.count
        for top, band in zip(range(0, self.size[0], rows), self.bands(rows)):
            for n, (source, prepared) in enumerate(zip(self._images, band)):
                if np.shares_memory(source, prepared):  # an image that ``prepare`` leaves as it is
                    continue
                if settled[n] is None:
                    settled[n] = np.empty_like(source)
                settled[n][top : top + len(prepared)] = prepared
        self._images = [im if done is None else done for im, done in zip(self._images, settled)]
        self._prepare = None

    def bands(self, rows: int) -> Iterator[list[np.ndarray]]:
        """The prepared images ``[h, W, 3]`` uint8, ``rows`` rows at a time."""
        h, w = self.size
        for top in range(0, h, rows):
            yield self._prepared(Box(top, 0, min(top + rows, h), w))

    def histograms(self, rows: int) -> np.ndarray:
        """``[N, 3, 256]`` int64 counts of each level per image and channel of the whole frames."""
        counts = np.zeros((self.count, 3, 256), np.int64)
        for band in self.bands(rows):
            for n, im in enumerate(band):
                for c in range(3):
                    counts[n, c] += level_counts(im, c)
        return counts

    def lookup(self, tables: Tensor, box: Box) -> Tensor:
        """``tables[n, c, level]`` (float32 ``[N, 3, 256]``) read at each pixel of ``box``
        (channels-last in memory, as :meth:`images`)."""
        values = tables.permute(0, 2, 1).contiguous().numpy()  # [N, 256, 3]: OpenCV's table layout
        crops = self._prepared(box)
        out = np.empty((self.count, *crops[0].shape), np.float32)
        for crop, table, dst in zip(crops, values, out, strict=True):
            cv2.LUT(crop, table[None], dst=dst)
        return from_interleaved(out)

    def labels(self, box: Box, dtype: torch.dtype = torch.int64) -> Tensor:
        """``[M, h, w]`` label maps of ``box`` (``uint8`` keeps index work small until the end)."""
        crops = [lb[box.top : box.bottom, box.left : box.right] for lb in self._labels]
        return torch.from_numpy(np.stack(crops)).to(dtype)

    def whole(self) -> Pair:
        """The whole frames as :class:`~lib.data.transforms.ToTensor` gives them (the full-frame path)."""
        box = Box.whole(self.size)
        return rgb_to_unit(np.stack(self._prepared(box))), self.labels(box)


def can_plan(transform: object) -> bool:
    """Whether ``transform`` draws its steps from the frame size alone (``draw``)."""
    if isinstance(transform, Compose):
        return transform.can_draw()
    return hasattr(transform, "draw")


def run_crop_early(steps: Sequence[Step], frames: Frames) -> Pair:
    """The drawn ``steps`` on ``frames``, computing only what the final frame keeps.

    Steps must be colour steps followed by geometric ones; any other order, or a recipe whose
    output would need no source pixel at all, runs on whole frames instead.
    """
    n_colour = next((i for i, s in enumerate(steps) if not isinstance(s, PixelStep)), len(steps))
    colour, geometric = list(steps[:n_colour]), list(steps[n_colour:])
    if any(isinstance(s, PixelStep) for s in geometric):
        return run_steps(steps, *frames.whole())
    sizes = [frames.size]
    for step in geometric:
        sizes.append(step.out_size(sizes[-1]))
    boxes = [Box.whole(sizes[-1])]
    for step, size in zip(reversed(geometric), reversed(sizes[:-1]), strict=True):
        boxes.insert(0, source_box(step, boxes[0], size))
    if any(b.empty for b in boxes):
        return run_steps(steps, *frames.whole())
    images, labels = _colour_window(colour, frames, boxes[0]), frames.labels(boxes[0], torch.uint8)
    for step, size, src, out in zip(geometric, sizes[:-1], boxes[:-1], boxes[1:], strict=True):
        images, labels = map_window(step, images, labels, src, out, size)
    return images, labels.long()


_BAND_PIXELS = 1 << 17
"""Pixels per band when a whole frame must be processed: bands keep each step's data in cache."""


def _colour_window(steps: list[PixelStep], frames: Frames, box: Box) -> Tensor:
    """Colour steps on the source window ``box`` (grown by each filter's radius on the way).

    The leading steps that act on each value alone run on tables of the 256 source levels; their
    whole-frame statistics come from level histograms. A statistic after a filter or a
    cross-channel step needs the whole frame processed up to it: that runs in bands of rows.
    """
    if not steps:  # straight to the geometric steps: contiguous planes resample faster
        return frames.images(box, planar=True)
    size = frames.size
    if any(s.uses_statistic for s in steps):  # whole-frame passes ahead: prepare the pixels once
        frames.settle(_band_rows(size))
    n_tabled = next((i for i, s in enumerate(steps) if not s.per_value), len(steps))
    if n_tabled:
        tables = _level_tables(steps[:n_tabled], frames)

        def read(b: Box) -> Tensor:
            return frames.lookup(tables, b)
    else:
        read = frames.images
    stats: dict[int, object] = {}
    start = n_tabled
    stat_steps = [i for i in range(n_tabled, len(steps)) if steps[i].uses_statistic]
    for k, i in enumerate(stat_steps):
        keep = Box.whole(size) if k + 1 < len(stat_steps) else _needed(steps[i:], box, size)[0]
        kept = _KEPT.buffer(k % 2, (frames.count, 3, keep.bottom - keep.top, keep.right - keep.left))
        stats[i] = _in_bands(steps[start:i], steps[i], read, stats, start, size, keep, kept)
        read, start = partial(_read_window, kept, keep), i
    images = _window(steps[start:], read, stats, start, box, size)
    if stat_steps and _KEPT.holds(images):  # the next pair reuses that memory
        return images.clone()
    return images


def _read_window(images: Tensor, holds: Box, box: Box) -> Tensor:
    rows, cols = box.inside(holds)
    return images[..., rows, cols]


def _needed(steps: Sequence[PixelStep], box: Box, size: Size) -> list[Box]:
    """The input window of each of ``steps`` for the output window ``box``, then ``box`` itself."""
    needed = [box]
    for step in reversed(steps):
        needed.insert(0, needed[0].grow(step.radius, size, step.column_alignment))
    return needed


def _window(
    steps: list[PixelStep],
    read: Callable[[Box], Tensor],
    stats: dict[int, object],
    first: int,
    box: Box,
    size: Size,
) -> Tensor:
    """``steps`` (the recipe's steps ``first...``) on the window ``box`` of the frame, reading their
    input window (grown by each filter's radius) with ``read``."""
    needed = _needed(steps, box, size)
    images = read(needed[0])
    for i, step in enumerate(steps):
        images = step.apply(images, stats.get(first + i), needed[i].edges(size))
        rows, cols = needed[i + 1].inside(needed[i])
        images = images[..., rows, cols]
    return images


def _band_rows(size: Size) -> int:
    return max(8, _BAND_PIXELS // max(size[1], 1))


class _Buffers(threading.local):
    """Float32 images kept from one pair to the next (one set per thread): a whole-frame result is
    large, and memory handed back to the system would be paid again in page faults."""

    def __init__(self) -> None:
        self._flat: dict[int, Tensor] = {}

    def buffer(self, slot: int, shape: tuple[int, int, int, int]) -> Tensor:
        """An uninitialised ``[N, C, H, W]`` tensor, channels innermost, in the memory of ``slot``
        (which the previous buffer of that slot gives up)."""
        n, c, h, w = shape
        flat = self._flat.get(slot)
        if flat is None or flat.numel() < n * c * h * w:
            flat = self._flat[slot] = torch.empty(n * c * h * w)
        return flat[: n * c * h * w].view(n, h, w, c).permute(0, 3, 1, 2)

    def holds(self, images: Tensor) -> bool:
        """Whether ``images`` lie in one of the buffers."""
        ptr = images.untyped_storage().data_ptr()
        return any(flat.untyped_storage().data_ptr() == ptr for flat in self._flat.values())


_KEPT = _Buffers()
"""Where the whole-frame passes keep their results; consecutive passes alternate two slots (one
reads what the one before kept)."""


def _in_bands(
    steps: list[PixelStep],
    stat_step: PixelStep,
    read: Callable[[Box], Tensor],
    stats: dict[int, object],
    first: int,
    size: Size,
    keep: Box,
    out: Tensor,
) -> object:
    """``steps`` on the whole frame, band by band of rows: ``stat_step``'s statistic of the result
    (joined over the bands, exactly); the result's window ``keep`` is written into ``out``."""
    h, w = size
    rows = _band_rows(size)
    parts = []
    for top in range(0, h, rows):
        band = Box(top, 0, min(top + rows, h), w)
        images = _window(steps, read, stats, first, band, size)
        parts.append(stat_step.statistic_part(images))
        common = Box(max(band.top, keep.top), keep.left, min(band.bottom, keep.bottom), keep.right)
        if not common.empty:
            rows_out, cols_out = common.inside(keep)
            rows_in, cols_in = common.inside(band)
            out[..., rows_out, cols_out] = images[..., rows_in, cols_in]
    return stat_step.combine(parts)


def _level_tables(steps: list[PixelStep], frames: Frames) -> Tensor:
    """``[N, 3, 256]``: what ``steps`` (each acting on values alone) make of each 8-bit level.

    Each step runs on the table as if it were a one-row image, so the values are the ones it
    computes on pixels; whole-frame statistics come from the level histograms of the frames.
    """
    tables = _UNIT_LEVELS.expand(frames.count, 3, 1, 256).contiguous()
    rows = _band_rows(frames.size)
    counts = frames.histograms(rows) if any(s.uses_statistic for s in steps) else None
    for step in steps:
        stat = _statistic_from_levels(step, tables, counts, frames) if step.uses_statistic else None
        tables = step.apply(tables, stat)
    return tables[:, :, 0]


def _statistic_from_levels(step: PixelStep, tables: Tensor, counts: np.ndarray, frames: Frames) -> object:
    if isinstance(step, Equalize):
        levels = to_u8(tables)[:, 0]  # [N * 3, 256]: the 8-bit value each source level becomes
        flat = counts.reshape(-1, 256)
        return Equalize.tables_from_histograms(
            [
                np.bincount(q, weights=c, minlength=256).astype(np.int64)
                for q, c in zip(levels, flat, strict=True)
            ]
        )
    if isinstance(step, AutoContrast):
        present = torch.from_numpy(counts > 0)[:, :, None]  # [N, 3, 1, 256]
        first = tables.gather(3, present.byte().argmax(3, keepdim=True))  # a level each frame holds
        return step.statistic(torch.where(present, tables, first))
    if isinstance(step, Contrast):
        weighted = [(w * tables[:, c, 0]).numpy() for c, w in enumerate(GREY_WEIGHTS)]
        grey = [
            torch.from_numpy(
                np.stack(
                    [
                        (np.take(weighted[0][n], im[..., 0]) + np.take(weighted[1][n], im[..., 1]))
                        + np.take(weighted[2][n], im[..., 2])
                        for n, im in enumerate(band)
                    ]
                )
            )[:, None]
            for band in frames.bands(_band_rows(frames.size))
        ]
        return step.combine(grey)
    raise TypeError(f"no level-table statistic for {type(step).__name__}")


@singledispatch
def source_box(step: object, box: Box, size: Size) -> Box:
    """The window of the step's input frame (``size``) that its output window ``box`` reads."""
    raise TypeError(f"no crop-early geometry for {type(step).__name__}")


@singledispatch
def map_window(step: object, images: Tensor, labels: Tensor, src: Box, box: Box, size: Size) -> Pair:
    """The step's output window ``box`` from its input window ``src`` of a frame of ``size``."""
    raise TypeError(f"no crop-early geometry for {type(step).__name__}")


@source_box.register
def _(step: Crop, box: Box, size: Size) -> Box:
    return Box(box.top + step.top, box.left + step.left, box.bottom + step.top, box.right + step.left).clip(
        size
    )


@map_window.register
def _(step: Crop, images: Tensor, labels: Tensor, src: Box, box: Box, size: Size) -> Pair:
    h, w = box.bottom - box.top, box.right - box.left
    if images.shape[-2:] == (h, w):  # no padding: the window is the crop
        return images, labels
    out_images = images.new_zeros((*images.shape[:2], h, w))
    out_labels = labels.new_full((labels.shape[0], h, w), IGNORE)
    rows, cols = Box(
        src.top - step.top, src.left - step.left, src.bottom - step.top, src.right - step.left
    ).inside(box)
    out_images[..., rows, cols] = images
    out_labels[..., rows, cols] = labels
    return out_images, out_labels


@source_box.register(HorizontalFlip)
@source_box.register(VerticalFlip)
def _(step: HorizontalFlip | VerticalFlip, box: Box, size: Size) -> Box:
    if isinstance(step, HorizontalFlip):
        return Box(box.top, size[1] - box.right, box.bottom, size[1] - box.left)
    return Box(size[0] - box.bottom, box.left, size[0] - box.top, box.right)


@map_window.register(HorizontalFlip)
@map_window.register(VerticalFlip)
def _(
    step: HorizontalFlip | VerticalFlip, images: Tensor, labels: Tensor, src: Box, box: Box, size: Size
) -> Pair:
    return step(images, labels)


def _linear_taps(n_in: int, n_out: int, start: int, stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``F.interpolate(mode="bilinear", align_corners=False)`` along one axis, outputs ``start..stop``:
    first tap, second tap and the second tap's weight, in its float32 arithmetic."""
    scale = np.float32(n_in) / np.float32(n_out)
    real = scale * (np.arange(start, stop).astype(np.float32) + np.float32(0.5)) - np.float32(0.5)
    real = np.maximum(real, np.float32(0.0))
    first = np.minimum(np.floor(real).astype(np.int64), n_in - 1)
    weight = np.clip(real - first.astype(np.float32), np.float32(0.0), np.float32(1.0))
    return first, first + (first < n_in - 1), weight


def _nearest_taps(n_in: int, n_out: int, start: int, stop: int) -> np.ndarray:
    """``F.interpolate(mode="nearest")`` source indices along one axis, outputs ``start..stop``."""
    index = np.arange(start, stop)
    if n_out == n_in:
        return index
    if n_out == 2 * n_in:
        return index >> 1
    scale = np.float32(n_in) / np.float32(n_out)
    return np.minimum(np.floor(index.astype(np.float32) * scale).astype(np.int64), n_in - 1)


def _tap_span(n_in: int, n_out: int, start: int, stop: int) -> tuple[int, int]:
    first, second, _ = _linear_taps(n_in, n_out, start, stop)
    nearest = _nearest_taps(n_in, n_out, start, stop)
    return int(min(first.min(), nearest.min())), int(max(second.max(), nearest.max())) + 1


@source_box.register
def _(step: Resize, box: Box, size: Size) -> Box:
    (h, w), (oh, ow) = size, step.size
    top, bottom = _tap_span(h, oh, box.top, box.bottom)
    left, right = _tap_span(w, ow, box.left, box.right)
    return Box(top, left, bottom, right)


Coords = tuple[np.ndarray, np.ndarray]
"""Frame coordinates of an output window as ``(per column [w], per row [h])`` parts: the coordinate
of output pixel ``(i, j)`` is ``part[0][j] + part[1][i]`` (resizes and rotations are affine)."""


def _sample(images: Tensor, x: Coords, y: Coords, src: Box, padding: str) -> Tensor:
    """Bilinear ``images`` (the window ``src`` of a frame) at frame pixel coordinates ``x, y``, as
    ``grid_sample`` with ``align_corners=False`` reads them."""
    wh, ww = src.bottom - src.top, src.right - src.left
    grid = np.empty((len(x[1]), len(x[0]), 2), np.float32)  # sums in float64, rounded once as stored:
    add = partial(np.add, casting="same_kind")  # no float64 grid in between
    add(((2.0 * (x[0] - src.left) + 1.0) / ww - 1.0)[None, :], (2.0 * x[1] / ww)[:, None], out=grid[..., 0])
    add(((2.0 * (y[0] - src.top) + 1.0) / wh - 1.0)[None, :], (2.0 * y[1] / wh)[:, None], out=grid[..., 1])
    sample = partial(F.grid_sample, mode="bilinear", padding_mode=padding, align_corners=False)
    n, c = images.shape[:2]
    if images.is_contiguous():  # one image of n * c planes: the images share each grid point's taps
        return sample(images.view(1, n * c, wh, ww), torch.from_numpy(grid)[None]).view(n, c, *grid.shape[:2])
    return sample(images, torch.from_numpy(grid)[None].expand(n, -1, -1, -1))


@map_window.register
def _(step: Resize, images: Tensor, labels: Tensor, src: Box, box: Box, size: Size) -> Pair:
    (h, w), (oh, ow) = size, step.size
    y_first, _, y_weight = _linear_taps(h, oh, box.top, box.bottom)
    x_first, _, x_weight = _linear_taps(w, ow, box.left, box.right)
    x = (x_first + x_weight.astype(np.float64), np.zeros(len(y_first)))
    y = (np.zeros(len(x_first)), y_first + y_weight.astype(np.float64))
    images = _sample(images, x, y, src, "border")  # the window holds every tap; border: the frame's edge
    rows = _nearest_taps(h, oh, box.top, box.bottom) - src.top
    cols = _nearest_taps(w, ow, box.left, box.right) - src.left
    return images, torch.from_numpy(labels.numpy().take(rows, axis=1).take(cols, axis=2))


def _rotation_source(step: Rotate, box: Box, size: Size) -> tuple[Coords, Coords]:
    """Source pixel coordinates ``(x, y)`` that ``grid_sample`` reads for the output window ``box``:
    ``affine_grid``'s normalised coordinates of each pixel, rotated, then unnormalised."""
    h, w = size
    theta = rotation_theta(step.angle, size).double().numpy()
    xn = (2.0 * np.arange(box.left, box.right) + 1.0) / w - 1.0
    yn = (2.0 * np.arange(box.top, box.bottom) + 1.0) / h - 1.0
    # x = ((gx + 1) * w - 1) / 2 with gx = t00 xn + t01 yn + t02, split into column and row parts
    x = ((theta[0, 0] * xn + theta[0, 2] + 1.0) * w - 1.0) / 2.0, theta[0, 1] * yn * w / 2.0
    y = ((theta[1, 0] * xn + theta[1, 2] + 1.0) * h - 1.0) / 2.0, theta[1, 1] * yn * h / 2.0
    return x, y


@source_box.register
def _(step: Rotate, box: Box, size: Size) -> Box:
    (x0, xi), (y0, yi) = _rotation_source(step, box, size)
    x = x0[[0, -1]][None, :] + xi[[0, -1]][:, None]  # affine: the extremes lie at the corners
    y = y0[[0, -1]][None, :] + yi[[0, -1]][:, None]
    margin = 1  # bilinear's second tap, plus a pixel against rounding
    return Box(
        math.floor(y.min()) - margin,
        math.floor(x.min()) - margin,
        math.floor(y.max()) + 2 + margin,
        math.floor(x.max()) + 2 + margin,
    ).clip(size)


@map_window.register
def _(step: Rotate, images: Tensor, labels: Tensor, src: Box, box: Box, size: Size) -> Pair:
    h, w = size
    x, y = _rotation_source(step, box, size)
    images = _sample(images, x, y, src, "zeros")
    xr = np.rint(x[0][None, :] + x[1][:, None]).astype(np.int64)
    yr = np.rint(y[0][None, :] + y[1][:, None]).astype(np.int64)
    inside = torch.from_numpy((xr >= 0) & (xr < w) & (yr >= 0) & (yr < h))
    wh, ww = src.bottom - src.top, src.right - src.left
    index = torch.from_numpy(np.clip(yr - src.top, 0, wh - 1) * ww + np.clip(xr - src.left, 0, ww - 1))
    picked = labels.reshape(labels.shape[0], -1)[:, index]
    return images, picked.masked_fill_(~inside, IGNORE)
