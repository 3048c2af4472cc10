"""Step 3 of CG-Aug: paste one anomaly object onto the road of an ADE20K-palette condition map.

The published rule, at Cityscapes resolution (2048x1024): the object's longer side is clamped to
200..500 px, it is centred on a random road pixel at least 150 px from the border, and the margin
shrinks in 10 px steps down to 10 px when no road pixel qualifies. Other resolutions scale every length
by ``min(H, W) / 1024``. The object is painted in its category colour; pixels outside the image are
cut off.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class PasteResult:
    """``condition``: ``[H, W, 3]`` uint8 map with the object; ``mask``: ``[H, W]`` bool object pixels;
    ``center``: (row, col) road pixel the object is centred on; ``margin``: border margin used (px)."""

    condition: np.ndarray
    mask: np.ndarray
    center: tuple[int, int]
    margin: int


def crop_to_box(mask: np.ndarray) -> np.ndarray:
    """Crop a bool mask ``[h, w]`` to the bounding box of its pixels (error if it is empty)."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        raise ValueError("object mask is empty")
    return mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def road_centers(road: np.ndarray, margin: int) -> np.ndarray:
    """``[N, 2]`` (row, col) of road pixels at least ``margin`` px from every border."""
    h, w = road.shape
    inner = road[margin : h - margin, margin : w - margin]
    return np.argwhere(inner) + margin


def paste_on_road(
    condition: np.ndarray,
    object_mask: np.ndarray,
    color: np.ndarray,
    road_color: np.ndarray,
    rng: np.random.Generator,
    *,
    size_range: tuple[int, int] = (200, 500),
    margin: int = 150,
    min_margin: int = 10,
    margin_step: int = 10,
    reference_short_side: int = 1024,
) -> PasteResult | None:
    """Paste ``object_mask`` (bool ``[h, w]``) painted ``color`` on a road pixel of ``condition``.

    Returns ``None`` when the map has no road pixel inside the smallest margin.
    """
    h, w = condition.shape[:2]
    scale = min(h, w) / reference_short_side
    road = np.all(condition == np.asarray(road_color, dtype=np.uint8), axis=-1)
    step = max(1, round(margin_step * scale))
    m, m_min = round(margin * scale), max(0, round(min_margin * scale))
    centers = road_centers(road, m)
    while centers.size == 0 and m > m_min:
        m = max(m - step, m_min)
        centers = road_centers(road, m)
    if centers.size == 0:
        return None
    cy, cx = (int(v) for v in centers[rng.integers(len(centers))])

    obj = crop_to_box(np.asarray(object_mask, dtype=bool))
    longer = max(obj.shape)
    target = min(max(longer, size_range[0] * scale), size_range[1] * scale)
    oh, ow = (max(1, round(s * target / longer)) for s in obj.shape)
    obj = cv2.resize(obj.astype(np.uint8), (ow, oh), interpolation=cv2.INTER_NEAREST).astype(bool)

    top, left = cy - oh // 2, cx - ow // 2
    y0, x0, y1, x1 = max(top, 0), max(left, 0), min(top + oh, h), min(left + ow, w)
    mask = np.zeros((h, w), dtype=bool)
    mask[y0:y1, x0:x1] = obj[y0 - top : y1 - top, x0 - left : x1 - left]
    out = condition.copy()
    out[mask] = color
    return PasteResult(condition=out, mask=mask, center=(cy, cx), margin=m)
