"""Texture building blocks shared by the ToyShift renderer: smooth noise and object instances.

Everything here is vectorised over the image; per-object work is a lookup into small per-instance
arrays, never a Python loop over pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


def value_noise(rng: np.random.Generator, height: int, width: int, cell: float) -> np.ndarray:
    """Smooth Gaussian value noise ``[H, W]`` float32 (std about 1) with features about ``cell`` px wide."""
    cell = max(float(cell), 1.0)
    grid_h = int(np.ceil(height / cell)) + 2
    grid_w = int(np.ceil(width / cell)) + 2
    grid = rng.standard_normal((grid_h, grid_w), dtype=np.float32)
    big = cv2.resize(grid, (int(grid_w * cell), int(grid_h * cell)), interpolation=cv2.INTER_CUBIC)
    return np.ascontiguousarray(big[:height, :width])


@dataclass(frozen=True)
class Instances:
    """Connected components of the pixels of some classes, one id space for all of them.

    ``ids`` is int32 ``[H, W]`` with 0 for background and ``1..count`` for instances; the arrays
    ``cls, top, left, height, width`` have length ``count + 1`` (index 0 is the background).
    """

    ids: np.ndarray
    cls: np.ndarray
    top: np.ndarray
    left: np.ndarray
    height: np.ndarray
    width: np.ndarray

    @property
    def count(self) -> int:
        return len(self.cls) - 1

    def relative(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Relative (y, x) in ``[0, 1]`` of flat pixel ``index`` inside its instance's bounding box."""
        width_img = self.ids.shape[1]
        ids = self.ids.ravel()[index]
        ys = index // width_img
        xs = index % width_img
        rel_y = (ys - self.top[ids] + 0.5) / self.height[ids]
        rel_x = (xs - self.left[ids] + 0.5) / self.width[ids]
        return rel_y.astype(np.float32), rel_x.astype(np.float32)


def find_instances(label: np.ndarray, classes: tuple[int, ...]) -> Instances:
    """8-connected components of each class in ``classes`` of a label map ``[H, W]``."""
    ids = np.zeros(label.shape, dtype=np.int32)
    cls = [np.zeros(1, dtype=np.int32)]
    stats = [np.zeros((1, 5), dtype=np.int32)]
    offset = 0
    for c in classes:
        mask = (label == c).view(np.uint8)
        if not mask.any():
            continue
        n, comp, st, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        if n <= 1:
            continue
        ids += np.where(comp > 0, comp + offset, 0).astype(np.int32)
        cls.append(np.full(n - 1, c, dtype=np.int32))
        stats.append(st[1:])
        offset += n - 1
    st = np.concatenate(stats)
    return Instances(
        ids=ids,
        cls=np.concatenate(cls),
        top=st[:, cv2.CC_STAT_TOP],
        left=st[:, cv2.CC_STAT_LEFT],
        height=np.maximum(st[:, cv2.CC_STAT_HEIGHT], 1),
        width=np.maximum(st[:, cv2.CC_STAT_WIDTH], 1),
    )
