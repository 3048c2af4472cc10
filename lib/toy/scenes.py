"""ToyShift scenes: seeded street layouts as Cityscapes trainId maps.

A scene is a one-point-perspective street: a (possibly curving) road towards a vanishing point,
sidewalks on both sides, a row of lots beside them (buildings, trees with grass, fences, walls)
under the sky, and objects standing on the ground at random depths and drawn far-to-near: poles
with traffic signs and lights, trees, parked and driving cars, trucks, buses, a rare tram,
pedestrians, cyclists (rider + bicycle) and motorcyclists. Horizon height, vanishing point, road
width and curvature, lot widths and heights, and every object's count, depth, position and size
are drawn from the generator, so a segmenter has to learn the classes rather than the layout.
Object sizes follow the perspective: an object at depth ``t`` (0 at the horizon, 1 at the bottom
row) is scaled with the road's width there.
"""

from __future__ import annotations

import cv2
import numpy as np

from lib.labels import CLASS_NAMES, IGNORE

MIN_HEIGHT = 32
MIN_WIDTH = 32

_ID = {name: i for i, name in enumerate(CLASS_NAMES)}
ROAD, SIDEWALK, BUILDING, WALL, FENCE = (_ID[n] for n in ("road", "sidewalk", "building", "wall", "fence"))
POLE, LIGHT, SIGN = _ID["pole"], _ID["traffic light"], _ID["traffic sign"]
VEGETATION, TERRAIN, SKY = _ID["vegetation"], _ID["terrain"], _ID["sky"]
PERSON, RIDER, CAR, TRUCK, BUS, TRAIN = (_ID[n] for n in ("person", "rider", "car", "truck", "bus", "train"))
MOTORCYCLE, BICYCLE = _ID["motorcycle"], _ID["bicycle"]

ROAD_HALF_WIDTH_M = 5.0
"""Half the road's width in metres: the unit that converts object sizes to pixels at a depth."""


class _Street:
    """Geometry of one sampled street; maps (depth ``t``, lateral ``u``) to image coordinates."""

    def __init__(self, rng: np.random.Generator, height: int, width: int) -> None:
        self.h, self.w = height, width
        self.horizon = rng.uniform(0.3, 0.5) * height
        self.bottom_x = rng.uniform(0.3, 0.7) * width
        self.curve = rng.uniform(-0.5, 0.5) * width
        self.road_half = rng.uniform(0.35, 0.9) * width
        self.walk = (rng.uniform(0.15, 0.5), rng.uniform(0.15, 0.5))

    def row(self, t: float) -> float:
        return self.horizon + t * (self.h - self.horizon)

    def centre(self, t: np.ndarray | float) -> np.ndarray | float:
        return self.bottom_x + self.curve * (1.0 - t) ** 2

    def x(self, t: float, u: float) -> float:
        """Column of lateral position ``u`` (road edges at -1 and +1) at depth ``t``."""
        return float(self.centre(t) + u * self.road_half * t)

    def ppm(self, t: float) -> float:
        """Pixels per metre at depth ``t``."""
        return self.road_half * t / ROAD_HALF_WIDTH_M

    def outer(self, side: int) -> float:
        """Lateral position of the outer sidewalk edge on ``side`` (-1 left, +1 right)."""
        return side * (1.0 + self.walk[0 if side < 0 else 1])


def _lots(rng: np.random.Generator, label: np.ndarray, street: _Street) -> None:
    """Paint the row of lots: blocks of columns holding buildings, trees or open ground."""
    h, w = label.shape
    vanish_x = street.bottom_x + street.curve
    xs = np.arange(w, dtype=np.float32)
    edges = [0]
    while edges[-1] < w:
        edges.append(edges[-1] + int(rng.uniform(0.06, 0.3) * w) + 1)
    n_blocks = len(edges) - 1
    kinds = rng.choice(3, size=n_blocks, p=[0.6, 0.25, 0.15])  # building, trees, open ground
    heights = rng.uniform(0.25, 1.3, size=n_blocks) * np.where(kinds == 0, 1.0, 0.5)
    block = np.searchsorted(np.asarray(edges[1:]), xs, side="right")
    top = street.horizon - heights[block] * (0.12 * h + 0.8 * np.abs(xs - vanish_x) * h / w)
    kind = kinds[block]
    canopy = top + 0.04 * h * np.sin(xs * rng.uniform(0.3, 0.8) + rng.uniform(0, 6.3))
    top = np.where(kind == 1, canopy, top)
    rows = np.arange(h, dtype=np.float32)[:, None]
    below = rows >= street.horizon
    standing = rows >= top[None, :]
    lot_above = np.where(kind[None, :] == 0, BUILDING, VEGETATION)
    lot_below = np.where(kind[None, :] == 0, BUILDING, TERRAIN)
    np.copyto(label, lot_above.astype(np.uint8), where=standing & ~below)
    np.copyto(label, lot_below.astype(np.uint8), where=below)


def _ground(label: np.ndarray, street: _Street) -> None:
    """Paint sidewalks and the road (rows below the horizon)."""
    h, w = label.shape
    rows = np.arange(h, dtype=np.float32)[:, None]
    cols = np.arange(w, dtype=np.float32)[None, :]
    t = np.clip((rows - street.horizon) / (h - street.horizon), 0.0, None)
    offset = (cols - street.centre(t)) / np.maximum(street.road_half * t, 1e-6)
    below = rows > street.horizon
    walk = below & (offset > street.outer(-1)) & (offset < street.outer(1))
    label[walk] = SIDEWALK
    label[below & (np.abs(offset) < 1.0)] = ROAD


def _boundary_structures(rng: np.random.Generator, label: np.ndarray) -> None:
    """Fences or walls along the outer sidewalk edge of open-ground lots (perspective height)."""
    h, w = label.shape
    walkable = (label == ROAD) | (label == SIDEWALK)
    has_ground = walkable.any(axis=0)
    ground_row = np.where(has_ground, walkable.argmax(axis=0), h)
    horizon = int(np.argmax(walkable.any(axis=1)))
    rows = np.arange(h)[:, None]
    height = rng.uniform(0.1, 0.35) * np.maximum(ground_row - horizon, 0)
    band = (rows < ground_row[None, :]) & (rows >= ground_row[None, :] - height[None, :])
    band &= label == TERRAIN
    label[band] = FENCE if rng.random() < 0.6 else WALL


def _rect(label: np.ndarray, x0: float, y0: float, x1: float, y1: float, value: int) -> None:
    cv2.rectangle(label, (round(x0), round(y0)), (round(x1), round(y1)), int(value), -1)


def _ellipse(label: np.ndarray, cx: float, cy: float, rx: float, ry: float, value: int) -> None:
    axes = (max(round(rx), 1), max(round(ry), 1))
    cv2.ellipse(label, (round(cx), round(cy)), axes, 0, 0, 360, int(value), -1)


def _ring(label: np.ndarray, cx: float, cy: float, r: float, value: int) -> None:
    thickness = max(round(r * 0.35), 1)
    cv2.circle(label, (round(cx), round(cy)), max(round(r - thickness / 2), 1), int(value), thickness)


def _person(label: np.ndarray, x: float, foot: float, s: float, value: int) -> None:
    """A standing figure ``1.75 * s`` px tall with its feet at (x, foot)."""
    height = 1.75 * s
    _rect(label, x - 0.12 * s, foot - 0.5 * height, x - 0.02 * s, foot, value)
    _rect(label, x + 0.02 * s, foot - 0.5 * height, x + 0.12 * s, foot, value)
    _ellipse(label, x, foot - 0.68 * height, 0.22 * s, 0.2 * height, value)
    _ellipse(label, x, foot - 0.92 * height, 0.11 * s, 0.08 * height, value)


def _car(label: np.ndarray, x: float, foot: float, s: float, value: int, size: float) -> None:
    """A vehicle seen from behind, ``1.8 * size`` metres wide, standing on row ``foot``."""
    width, height = 1.8 * size * s, 1.5 * size * s
    _rect(label, x - width / 2, foot - 0.6 * height, x + width / 2, foot, value)
    _rect(label, x - 0.38 * width, foot - height, x + 0.38 * width, foot - 0.55 * height, value)


def _box_vehicle(
    label: np.ndarray, x: float, foot: float, s: float, value: int, w_m: float, h_m: float
) -> None:
    """A tall box vehicle (truck, bus, tram) seen from behind."""
    _rect(label, x - w_m * s / 2, foot - h_m * s, x + w_m * s / 2, foot, value)


def _cycle(label: np.ndarray, x: float, foot: float, s: float, cycle: int, rider: bool, motor: bool) -> None:
    """A bicycle or motorcycle in side view, optionally with its rider."""
    r = (0.38 if motor else 0.33) * s
    for dx in (-0.55 * s, 0.55 * s):
        _ring(label, x + dx, foot - r, r, cycle)
    thickness = max(round(0.08 * s), 1)
    frame = [(x - 0.55 * s, foot - r), (x, foot - 2 * r), (x + 0.55 * s, foot - r)]
    pts = np.round(np.asarray(frame)).astype(np.int32)
    cv2.polylines(label, [pts], False, int(cycle), thickness)
    if motor:
        _ellipse(label, x, foot - 1.6 * r, 0.5 * s, 0.5 * r, cycle)
    if rider:
        seat = foot - 2.1 * r
        _ellipse(label, x - 0.05 * s, seat - 0.35 * s, 0.2 * s, 0.38 * s, RIDER)
        _ellipse(label, x - 0.05 * s, seat - 0.85 * s, 0.12 * s, 0.14 * s, RIDER)
        _rect(label, x - 0.15 * s, seat - 0.1 * s, x + 0.2 * s, seat + 0.6 * r, RIDER)


def _pole(label: np.ndarray, rng: np.random.Generator, x: float, foot: float, s: float) -> None:
    """A pole, half of them carrying a traffic sign or a traffic light near the top."""
    height = rng.uniform(4.0, 8.0) * s
    half = max(0.08 * s, 0.5)
    _rect(label, x - half, foot - height, x + half, foot, POLE)
    kind = rng.choice(3, p=[0.4, 0.35, 0.25])  # bare, sign, light
    top = foot - height
    if kind == 1:
        r = rng.uniform(0.3, 0.45) * s
        if rng.random() < 0.5:
            _ellipse(label, x, top + 1.5 * r, r, r, SIGN)
        else:
            _rect(label, x - r, top + 0.5 * r, x + r, top + 2.2 * r, SIGN)
    elif kind == 2:
        _rect(label, x - 0.2 * s, top, x + 0.2 * s, top + 0.9 * s, LIGHT)


def _tree(label: np.ndarray, rng: np.random.Generator, x: float, foot: float, s: float) -> None:
    height = rng.uniform(4.0, 9.0) * s
    _rect(label, x - 0.12 * s, foot - 0.5 * height, x + 0.12 * s, foot, VEGETATION)
    _ellipse(label, x, foot - 0.7 * height, rng.uniform(0.2, 0.35) * height, 0.3 * height, VEGETATION)


def _objects(rng: np.random.Generator, label: np.ndarray, street: _Street) -> None:
    """Draw every standing object far-to-near so that nearer ones occlude farther ones."""
    todo: list[tuple[float, int, float, tuple]] = []

    def add(kind: str, t: float, u: float, *extra) -> None:
        todo.append((t, len(todo), street.x(t, u), (kind, *extra)))

    for _ in range(rng.integers(2, 7)):
        s_ = -1 if rng.random() < 0.5 else 1
        add("pole", rng.uniform(0.1, 1.0), street.outer(s_) - s_ * 0.2 * street.walk[int(s_ > 0)])
    for _ in range(rng.integers(0, 4)):
        s_ = -1 if rng.random() < 0.5 else 1
        add("tree", rng.uniform(0.1, 1.0), street.outer(s_) - s_ * 0.1)
    for _ in range(rng.integers(0, 7)):
        add("car", rng.uniform(0.08, 1.0), rng.uniform(-0.85, 0.85), rng.uniform(0.9, 1.15))
    for _ in range(rng.integers(0, 7)):
        s_ = -1 if rng.random() < 0.5 else 1
        add("person", rng.uniform(0.1, 1.0), s_ * (1.0 + rng.uniform(0.15, 0.9) * street.walk[int(s_ > 0)]))
    for _ in range(rng.integers(0, 3)):
        add("cycle", rng.uniform(0.15, 1.0), rng.uniform(-0.9, 0.9), rng.random() < 0.8, rng.random() < 0.3)
    if rng.random() < 0.3:
        add("truck", rng.uniform(0.1, 0.8), rng.uniform(-0.6, 0.6))
    if rng.random() < 0.25:
        add("bus", rng.uniform(0.1, 0.8), rng.uniform(-0.6, 0.6))
    if rng.random() < 0.05:
        add("train", rng.uniform(0.1, 0.6), rng.uniform(-0.3, 0.3))
    for t, _, x, (kind, *extra) in sorted(todo):
        foot, s = street.row(t), street.ppm(t)
        if kind == "pole":
            _pole(label, rng, x, foot, s)
        elif kind == "tree":
            _tree(label, rng, x, foot, s)
        elif kind == "car":
            _car(label, x, foot, s, CAR, extra[0])
        elif kind == "person":
            _person(label, x, foot, s * rng.uniform(0.9, 1.1), PERSON)
        elif kind == "cycle":
            _cycle(label, x, foot, s, MOTORCYCLE if extra[1] else BICYCLE, extra[0], extra[1])
        elif kind == "truck":
            _box_vehicle(label, x, foot, s, TRUCK, 2.5, 3.6)
        elif kind == "bus":
            _box_vehicle(label, x, foot, s, BUS, 2.6, 3.2)
        else:
            _box_vehicle(label, x, foot, s, TRAIN, 2.6, 3.6)


def sample_scene(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Sample one street layout: uint8 ``[height, width]`` of Cityscapes trainIds.

    Deterministic given the generator's state. A third of the scenes have an ego-vehicle bonnet
    at the bottom, labelled ``IGNORE`` as in Cityscapes.
    """
    if height < MIN_HEIGHT or width < MIN_WIDTH:
        raise ValueError(f"scene size {height}x{width} is too small; need at least {MIN_HEIGHT}x{MIN_WIDTH}")
    label = np.full((height, width), SKY, dtype=np.uint8)
    street = _Street(rng, height, width)
    _lots(rng, label, street)
    _ground(label, street)
    _boundary_structures(rng, label)
    _objects(rng, label, street)
    if rng.random() < 0.33:
        bonnet = rng.uniform(0.04, 0.1) * height
        _ellipse(label, street.bottom_x, height + 0.4 * bonnet, 0.8 * width, 1.4 * bonnet, IGNORE)
    return label
