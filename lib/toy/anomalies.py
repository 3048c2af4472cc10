"""ToyShift anomalies (semantic shift): object families of no known class, each with its own
shape generator and texture.

``TRAIN_FAMILIES`` are used for outlier pasting and CG-Aug generation; ``TEST_FAMILIES`` appear
only in the benchmarks, so a model never sees a test anomaly during training. The CG-Aug paste
step paints a training family in the colour of an ADE20K-150 category (``FAMILY_ADE_INDEX``,
categories from the method's ``train`` out-of-distribution list) and the ``procedural``
generation backend recovers the family from that colour.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from lib.labels import ANOMALY
from lib.toy.scenes import ROAD
from lib.toy.textures import Instances, find_instances, value_noise

TRAIN_FAMILIES: tuple[str, ...] = ("crate", "barrel", "rock", "ball")
TEST_FAMILIES: tuple[str, ...] = ("animal", "tyre", "cone", "debris")

FAMILY_ADE_INDEX: dict[str, int] = {
    "crate": 42,  # box
    "barrel": 112,  # barrel
    "rock": 35,  # rock
    "ball": 120,  # ball
}
"""1-based ADE20K-150 category of each training family (all in the method's ``train`` OOD list)."""

FAMILIES = TRAIN_FAMILIES + TEST_FAMILIES

MIN_MASK_SIZE = 8

PLACED_SIZE_RANGE = (0.1, 0.3)
"""Size of a placed object's box side, as a fraction of the image width at the bottom row (it
shrinks linearly towards the horizon): about 2.5% of a scene's pixels per test image on average,
between the small obstacles of Lost&Found and the large objects of RoadAnomaly."""


def _canvas(height: int, width: int) -> np.ndarray:
    return np.zeros((height, width), dtype=np.uint8)


def _poly(canvas: np.ndarray, points: np.ndarray) -> None:
    h, w = canvas.shape
    pts = np.round(points * [w - 1, h - 1]).astype(np.int32)
    cv2.fillPoly(canvas, [pts], 1)


def _ellipse(canvas: np.ndarray, cx: float, cy: float, rx: float, ry: float, value: int = 1) -> None:
    h, w = canvas.shape
    axes = (max(round(rx * (w - 1)), 1), max(round(ry * (h - 1)), 1))
    cv2.ellipse(canvas, (round(cx * (w - 1)), round(cy * (h - 1))), axes, 0, 0, 360, value, -1)


def _crate(rng: np.random.Generator, c: np.ndarray) -> None:
    """A box seen slightly from above: front face plus a slanted top face."""
    top = rng.uniform(0.15, 0.35)
    shift = rng.uniform(-0.25, 0.25)
    _poly(c, np.array([[0.0, top], [1.0, top], [1.0, 1.0], [0.0, 1.0]]))
    _poly(c, np.array([[0.0, top], [1.0, top], [1.0 - max(shift, 0), 0.0], [-min(shift, 0), 0.0]]))


def _barrel(rng: np.random.Generator, c: np.ndarray) -> None:
    """An upright cylinder: a rectangle with elliptic caps."""
    cap = rng.uniform(0.06, 0.12)
    _poly(c, np.array([[0.0, cap], [1.0, cap], [1.0, 1.0 - cap], [0.0, 1.0 - cap]]))
    _ellipse(c, 0.5, cap, 0.5, cap)
    _ellipse(c, 0.5, 1.0 - cap, 0.5, cap)


def _blob(rng: np.random.Generator, c: np.ndarray, roughness: float) -> None:
    theta = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    radius = np.ones_like(theta)
    for k in range(2, 6):
        radius += roughness / k * rng.standard_normal() * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    radius = np.clip(radius / radius.max(), 0.35, 1.0)
    points = 0.5 + 0.5 * np.stack([radius * np.cos(theta), radius * np.sin(theta)], axis=1)
    _poly(c, points)


def _rock(rng: np.random.Generator, c: np.ndarray) -> None:
    """An irregular lump with a flattened base."""
    _blob(rng, c, roughness=0.6)
    c[int(c.shape[0] * 0.85) :] = c[int(c.shape[0] * 0.85) - 1]


def _ball(rng: np.random.Generator, c: np.ndarray) -> None:
    _ellipse(c, 0.5, 0.5, 0.5, 0.5)


def _animal(rng: np.random.Generator, c: np.ndarray) -> None:
    """A quadruped silhouette: body, neck and head, four legs, tail."""
    body_y, body_h = rng.uniform(0.3, 0.45), rng.uniform(0.14, 0.22)
    head_right = rng.random() < 0.5
    hx = 0.88 if head_right else 0.12
    _ellipse(c, 0.5, body_y, 0.33, body_h)
    _poly(c, np.array([[0.5 + (0.25 if head_right else -0.25), body_y], [hx, 0.12], [hx, 0.28]]))
    _ellipse(c, hx, 0.15, 0.1, 0.1)
    for lx in (0.25, 0.35, 0.62, 0.74):
        x = lx + rng.uniform(-0.03, 0.03)
        _poly(c, np.array([[x - 0.035, body_y], [x + 0.035, body_y], [x + 0.03, 1.0], [x - 0.03, 1.0]]))
    tx = 0.17 if head_right else 0.83
    tail = [[0.5 + (tx - 0.5) * 0.8, body_y - 0.05], [tx, body_y + 0.25], [tx + 0.03, body_y + 0.22]]
    _poly(c, np.array(tail))


def _tyre(rng: np.random.Generator, c: np.ndarray) -> None:
    """A tyre standing on its tread: a ring with a hole."""
    _ellipse(c, 0.5, 0.5, 0.5, 0.5)
    hole = rng.uniform(0.35, 0.55)
    _ellipse(c, 0.5, 0.5, 0.5 * hole, 0.5 * hole, value=0)


def _cone(rng: np.random.Generator, c: np.ndarray) -> None:
    """A traffic-cone-like shape: a narrow triangle on a flat base."""
    tip = rng.uniform(0.04, 0.12)
    _poly(c, np.array([[0.5 - tip, 0.0], [0.5 + tip, 0.0], [0.85, 0.9], [0.15, 0.9]]))
    _poly(c, np.array([[0.0, 0.88], [1.0, 0.88], [1.0, 1.0], [0.0, 1.0]]))


def _debris(rng: np.random.Generator, c: np.ndarray) -> None:
    """A heap of scattered shards (small polygons), one of them large so the heap has a core."""
    h, w = c.shape
    for i in range(int(rng.integers(4, 8))):
        size = 0.5 if i == 0 else rng.uniform(0.15, 0.35)
        cx, cy = (0.5, 0.6) if i == 0 else rng.uniform(size / 2, 1 - size / 2, size=2)
        angles = np.sort(rng.uniform(0, 2 * np.pi, size=int(rng.integers(3, 6))))
        pts = np.stack([cx + size / 2 * np.cos(angles), cy + size / 2 * np.sin(angles)], axis=1)
        _poly(c, np.clip(pts, 0, 1))


_SHAPES: dict[str, Callable[[np.random.Generator, np.ndarray], None]] = {
    "crate": _crate,
    "barrel": _barrel,
    "rock": _rock,
    "ball": _ball,
    "animal": _animal,
    "tyre": _tyre,
    "cone": _cone,
    "debris": _debris,
}


def _check_family(family: str) -> None:
    if family not in _SHAPES:
        raise ValueError(f"unknown anomaly family {family!r}; expected one of {FAMILIES}")


def sample_anomaly_mask(rng: np.random.Generator, family: str, height: int, width: int) -> np.ndarray:
    """One object of ``family`` filling a ``[height, width]`` box: bool mask, never empty."""
    _check_family(family)
    if height < MIN_MASK_SIZE or width < MIN_MASK_SIZE:
        raise ValueError(f"anomaly mask {height}x{width} is too small; need {MIN_MASK_SIZE} px a side")
    canvas = _canvas(height, width)
    _SHAPES[family](rng, canvas)
    return canvas.astype(bool)


def _shade(rel_y: np.ndarray, rel_x: np.ndarray) -> np.ndarray:
    """Round-object shading: brighter at the upper left."""
    d = (rel_x - 0.35) ** 2 + (rel_y - 0.3) ** 2
    return (1.15 - 0.9 * d)[:, None]


def paint_anomaly(
    rng: np.random.Generator, family: str, label: np.ndarray, texture_scale: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Colours of the ``ANOMALY`` pixels of ``label`` in the texture of ``family``.

    Returns ``(index, rgb)``: flat pixel indices and float32 ``[N, 3]`` colours in [0, 1].
    """
    _check_family(family)
    h, w = label.shape
    index = np.flatnonzero(label == ANOMALY)
    inst: Instances = find_instances(label, (ANOMALY,))
    rel_y, rel_x = inst.relative(index)
    fine = rng.standard_normal(index.size).astype(np.float32)[:, None]
    coarse = value_noise(rng, h, w, 6.0 / texture_scale).ravel()[index][:, None]
    hue = rng.uniform(0.8, 1.2, size=3).astype(np.float32)
    if family == "crate":
        plank = np.floor(rel_y * rng.integers(4, 7))
        rgb = np.array([0.6, 0.42, 0.24]) * hue * (0.85 + 0.12 * (plank % 2))[:, None]
        rgb = rgb * (1 - 0.5 * ((rel_y * 5 % 1) < 0.1))[:, None] + 0.04 * fine + 0.05 * coarse
    elif family == "barrel":
        colours = np.array([[0.15, 0.3, 0.75], [0.85, 0.35, 0.1], [0.2, 0.55, 0.25]])
        band = (np.abs(rel_y - 0.3) < 0.04) | (np.abs(rel_y - 0.7) < 0.04)
        cyl = 0.55 + 0.45 * np.cos((rel_x - 0.4) * np.pi)
        rgb = colours[rng.integers(3)] * hue * (cyl * (1 - 0.5 * band))[:, None] + 0.03 * fine
    elif family == "rock":
        rgb = np.array([0.5, 0.47, 0.42]) * hue * _shade(rel_y, rel_x) + 0.12 * fine + 0.1 * coarse
    elif family == "ball":
        colour = np.array([[0.9, 0.15, 0.15], [0.95, 0.85, 0.1], [0.1, 0.6, 0.9]])[rng.integers(3)]
        stripe = (np.abs(rel_y - 0.5) < 0.08)[:, None]
        rgb = np.where(stripe, 0.95, colour) * _shade(rel_y, rel_x) + 0.02 * fine
    elif family == "animal":
        patch = (coarse > 0.3).astype(np.float32)
        rgb = np.array([0.45, 0.3, 0.18]) * hue * (1 - patch) + np.array([0.9, 0.88, 0.85]) * patch
        rgb = rgb + 0.08 * fine
    elif family == "tyre":
        inst_c = inst.ids.ravel()[index]
        cy = inst.top[inst_c] + inst.height[inst_c] / 2
        cx = inst.left[inst_c] + inst.width[inst_c] / 2
        angle = np.arctan2(index // w - cy, index % w - cx)
        tread = (np.floor(angle * 12 / np.pi) % 2)[:, None]
        rgb = np.full((index.size, 3), 0.1) + 0.08 * tread + 0.03 * fine
    elif family == "cone":
        white = ((rel_y > 0.3) & (rel_y < 0.42)) | ((rel_y > 0.58) & (rel_y < 0.68))
        base = rel_y > 0.88
        rgb = np.where(white[:, None], 0.95, np.array([0.98, 0.42, 0.05]))
        rgb = np.where(base[:, None], 0.12, rgb) * (0.8 + 0.3 * rel_x[:, None]) + 0.02 * fine
    else:
        palette = np.array([[0.2, 0.35, 0.8], [0.55, 0.25, 0.1], [0.9, 0.9, 0.85], [0.3, 0.6, 0.3]])
        pick = np.clip(((coarse[:, 0] + 2) * 1.2).astype(int), 0, len(palette) - 1)
        rgb = palette[pick] + 0.06 * fine
    return index, np.clip(rgb, 0, 1).astype(np.float32)


def place_anomaly(
    rng: np.random.Generator, label: np.ndarray, family: str, *, min_size: int = MIN_MASK_SIZE
) -> np.ndarray:
    """Stand one ``family`` object on a random road pixel of a scene, sized by its depth.

    The object's bottom rests on the chosen pixel; its size grows linearly from the horizon (the
    first road row) to the bottom row. Returns a copy of ``label`` with the object set to ``ANOMALY``.
    """
    h, w = label.shape
    road_rows, road_cols = np.nonzero(label == ROAD)
    if road_rows.size == 0:
        raise ValueError("place_anomaly: the scene has no road pixel to stand an anomaly on")
    horizon = road_rows.min()
    depth = (road_rows - horizon) / max(h - horizon, 1)
    eligible = np.flatnonzero(depth > 0.15)
    pick = rng.choice(eligible) if eligible.size else rng.integers(road_rows.size)
    y, x = int(road_rows[pick]), int(road_cols[pick])
    t = max((y - horizon) / max(h - horizon, 1), 0.15)
    size = max(rng.uniform(*PLACED_SIZE_RANGE) * w * t, float(min_size))
    aspect = rng.uniform(0.6, 1.5)
    oh, ow = max(round(size * aspect), min_size), max(round(size / aspect), min_size)
    mask = sample_anomaly_mask(rng, family, oh, ow)
    y0, x0 = y - oh + 1, x - ow // 2
    ys, xs = np.nonzero(mask)
    ys, xs = ys + y0, xs + x0
    keep = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
    out = label.copy()
    out[ys[keep], xs[keep]] = ANOMALY
    return out
