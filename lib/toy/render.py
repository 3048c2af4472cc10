"""ToyShift renderer: label map + domain -> image.

The appearance of a class is never one colour: each image draws its own per-class colours
(buildings pick a facade colour, each car, person or sign instance its own paint), textures add
noise at several scales and class-specific patterns (windows, paving tiles, lane markings, fence
slats, foliage, clouds, car windows and lights, clothes), so that a segmenter has to learn shapes,
textures and context, while a small CNN still learns it in minutes. The domain then shifts the
appearance photometrically (:mod:`lib.toy.effects`): no pixel moves, the label stays aligned.

This is also the ``procedural`` backend of ``generation/``: ``render`` and its arguments are a
stable interface.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import lib.toy.scenes as S
from lib.labels import ANOMALY, CLASS_NAMES, IGNORE, NUM_CLASSES
from lib.toy.anomalies import paint_anomaly
from lib.toy.domains import Domain
from lib.toy.effects import apply_domain
from lib.toy.textures import Instances, find_instances, value_noise

THING_CLASSES = (S.POLE, S.LIGHT, S.SIGN, S.PERSON, S.RIDER, S.CAR, S.TRUCK, S.BUS, S.TRAIN)
THING_CLASSES += (S.MOTORCYCLE, S.BICYCLE)
VEHICLE_CLASSES = (S.CAR, S.TRUCK, S.BUS, S.TRAIN)

# Per class: base RGB in [0, 1], fine-noise amplitude, medium-noise amplitude.
_LOOK: dict[str, tuple[tuple[float, float, float], float, float]] = {
    "road": ((0.36, 0.36, 0.38), 0.10, 0.08),
    "sidewalk": ((0.62, 0.58, 0.56), 0.06, 0.06),
    "building": ((0.55, 0.47, 0.41), 0.04, 0.10),
    "wall": ((0.66, 0.62, 0.54), 0.05, 0.15),
    "fence": ((0.48, 0.42, 0.33), 0.05, 0.05),
    "pole": ((0.45, 0.45, 0.47), 0.03, 0.0),
    "traffic light": ((0.14, 0.14, 0.13), 0.03, 0.0),
    "traffic sign": ((0.8, 0.66, 0.16), 0.03, 0.0),
    "vegetation": ((0.24, 0.44, 0.2), 0.18, 0.2),
    "terrain": ((0.47, 0.52, 0.28), 0.12, 0.15),
    "sky": ((0.53, 0.7, 0.9), 0.01, 0.0),
    "person": ((0.6, 0.35, 0.3), 0.05, 0.0),
    "rider": ((0.65, 0.25, 0.25), 0.05, 0.0),
    "car": ((0.3, 0.35, 0.55), 0.03, 0.02),
    "truck": ((0.62, 0.62, 0.66), 0.03, 0.04),
    "bus": ((0.8, 0.7, 0.24), 0.03, 0.03),
    "train": ((0.7, 0.24, 0.24), 0.03, 0.03),
    "motorcycle": ((0.22, 0.22, 0.3), 0.05, 0.0),
    "bicycle": ((0.2, 0.28, 0.24), 0.05, 0.0),
}

_FACADES = np.array(
    [[0.55, 0.47, 0.41], [0.6, 0.33, 0.27], [0.7, 0.66, 0.58], [0.5, 0.5, 0.52], [0.78, 0.75, 0.7]]
)
_PAINT = {  # instance colours (first: main, second: secondary such as trousers or helmet)
    S.CAR: [
        [0.85, 0.85, 0.85],
        [0.1, 0.1, 0.12],
        [0.55, 0.56, 0.58],
        [0.65, 0.12, 0.1],
        [0.15, 0.25, 0.55],
        [0.35, 0.35, 0.3],
        [0.6, 0.55, 0.4],
    ],
    S.TRUCK: [[0.85, 0.85, 0.82], [0.6, 0.62, 0.66], [0.35, 0.4, 0.5], [0.75, 0.55, 0.2]],
    S.BUS: [[0.8, 0.7, 0.24], [0.85, 0.85, 0.85], [0.2, 0.45, 0.7], [0.75, 0.2, 0.2]],
    S.TRAIN: [[0.7, 0.24, 0.24], [0.85, 0.85, 0.8], [0.3, 0.5, 0.35]],
    S.PERSON: [
        [0.7, 0.2, 0.2],
        [0.2, 0.3, 0.6],
        [0.85, 0.85, 0.8],
        [0.25, 0.5, 0.3],
        [0.55, 0.45, 0.3],
        [0.15, 0.15, 0.15],
    ],
    S.RIDER: [[0.9, 0.5, 0.1], [0.2, 0.2, 0.25], [0.3, 0.6, 0.8], [0.8, 0.8, 0.2]],
    S.SIGN: [[0.85, 0.12, 0.1], [0.1, 0.3, 0.75], [0.95, 0.8, 0.1]],
    S.POLE: [[0.45, 0.45, 0.47], [0.3, 0.33, 0.3], [0.6, 0.6, 0.58]],
    S.LIGHT: [[0.14, 0.14, 0.13], [0.25, 0.25, 0.2]],
    S.MOTORCYCLE: [[0.2, 0.2, 0.28], [0.6, 0.1, 0.1], [0.1, 0.1, 0.1]],
    S.BICYCLE: [[0.2, 0.28, 0.24], [0.1, 0.1, 0.1], [0.5, 0.1, 0.1], [0.2, 0.25, 0.6]],
}
_TROUSERS = np.array([[0.15, 0.2, 0.35], [0.12, 0.12, 0.12], [0.4, 0.35, 0.28], [0.3, 0.3, 0.32]])
_GLASS = np.array([0.14, 0.17, 0.22], dtype=np.float32)


@dataclass(frozen=True)
class Painted:
    """A scene painted in the source look, plus what the domain effects need to know about it.

    ``image`` float32 ``[H, W, 3]`` in [0, 1]; ``lit_windows`` bool ``[H, W]``: window pixels that
    light up at night; ``instances``: components of the thing classes (lamps, vehicle lights, depth).
    """

    image: np.ndarray
    lit_windows: np.ndarray
    instances: Instances


def _class_lut(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    colour = np.full((256, 3), 0.08, dtype=np.float32)
    fine = np.zeros(256, dtype=np.float32)
    medium = np.zeros(256, dtype=np.float32)
    for c, name in enumerate(CLASS_NAMES):
        rgb, fine[c], medium[c] = _LOOK[name]
        colour[c] = np.asarray(rgb) * rng.uniform(0.85, 1.15, size=3)
    colour[S.BUILDING] = _FACADES[rng.integers(len(_FACADES))] * rng.uniform(0.9, 1.1, size=3)
    colour[IGNORE] = 0.05
    return colour, fine, medium


def _instance_colours(rng: np.random.Generator, inst: Instances) -> tuple[np.ndarray, np.ndarray]:
    main = np.zeros((inst.count + 1, 3), dtype=np.float32)
    for c, paints in _PAINT.items():
        sel = np.flatnonzero(inst.cls == c)
        if sel.size:
            main[sel] = np.asarray(paints)[rng.integers(len(paints), size=sel.size)]
    main *= rng.uniform(0.85, 1.15, size=main.shape)
    second = _TROUSERS[rng.integers(len(_TROUSERS), size=inst.count + 1)]
    return main, second.astype(np.float32)


def _paint_things(rng: np.random.Generator, img: np.ndarray, inst: Instances) -> None:
    """Instance-wise colours and parts: car windows and lights, clothes, signs' borders, lamps."""
    flat = img.reshape(-1, 3)
    index = np.flatnonzero(inst.ids)
    if index.size == 0:
        return
    ids = inst.ids.ravel()[index]
    cls = inst.cls[ids]
    ry, rx = inst.relative(index)
    main, second = _instance_colours(rng, inst)
    rgb = main[ids] * (flat[index] / np.maximum(flat[index].mean(axis=1, keepdims=True), 1e-3)).clip(0.7, 1.3)
    car = cls == S.CAR
    rgb[car & (ry < 0.38) & (rx > 0.18) & (rx < 0.82)] = _GLASS
    rgb[car & (ry > 0.5) & (ry < 0.62) & ((rx < 0.12) | (rx > 0.88))] = (0.8, 0.1, 0.08)
    rgb[np.isin(cls, VEHICLE_CLASSES) & (ry > 0.92)] = 0.08
    big = (cls == S.BUS) | (cls == S.TRAIN)
    rgb[big & (ry > 0.12) & (ry < 0.45) & (rx > 0.08) & (rx < 0.92)] = _GLASS
    rgb[(cls == S.TRUCK) & ((ry * 8) % 1 < 0.12) & (ry < 0.7)] *= 0.7
    people = (cls == S.PERSON) | (cls == S.RIDER)
    rgb[people & (ry > 0.55)] = second[ids[people & (ry > 0.55)]]
    rgb[(cls == S.PERSON) & (ry < 0.13)] = (0.8, 0.62, 0.5)
    rgb[(cls == S.RIDER) & (ry < 0.15)] = second[ids[(cls == S.RIDER) & (ry < 0.15)]] + 0.3
    sign_border = (cls == S.SIGN) & ((np.minimum(ry, 1 - ry) < 0.15) | (np.minimum(rx, 1 - rx) < 0.15))
    rgb[sign_border] = 0.92
    lamp_on = rng.integers(3, size=inst.count + 1)[ids]
    lamp = (cls == S.LIGHT) & (np.abs(rx - 0.5) < 0.3) & (np.abs((ry * 3) % 1 - 0.5) < 0.3)
    lamp_colour = np.array([[0.95, 0.15, 0.1], [0.95, 0.75, 0.1], [0.1, 0.85, 0.35]], dtype=np.float32)
    which = np.minimum((ry * 3).astype(int), 2)
    rgb[lamp] = np.where((which == lamp_on)[lamp, None], lamp_colour[which[lamp]], 0.25)
    rgb[cls == S.POLE] *= (0.7 + 0.5 * np.sin(np.pi * rx[cls == S.POLE]))[:, None]
    flat[index] = rgb


def _lane_markings(label: np.ndarray, scale: float) -> np.ndarray:
    """Dashed centre line of the road: per row, the mean column of its road pixels."""
    h, w = label.shape
    road = label == S.ROAD
    count = road.sum(axis=1)
    rows = np.flatnonzero(count > 4)
    if rows.size == 0:
        return np.zeros_like(road)
    cols = np.arange(w, dtype=np.float32)
    centre = (road * cols).sum(axis=1) / np.maximum(count, 1)
    depth = (np.arange(h) - rows[0] + 1) / (h - rows[0] + 1)
    dash = np.sin(6.0 * scale / np.maximum(depth, 1e-3)) > 0.2
    width = np.maximum(0.012 * w * depth, 0.5)
    marks = (np.abs(cols[None, :] - centre[:, None]) < width[:, None]) & dash[:, None]
    return marks & road


def paint_scene(label: np.ndarray, domain: Domain, rng: np.random.Generator) -> Painted:
    """Paint ``label`` (trainIds, ``IGNORE``, ``ANOMALY`` left dark) in the source look, with the
    domain's texture scale/contrast and object-level shift. Anomalies are painted by the caller."""
    h, w = label.shape
    scale, contrast = domain.texture_scale, domain.texture_contrast
    colour, amp_fine, amp_medium = _class_lut(rng)
    fine = (rng.random((h, w), dtype=np.float32) - 0.5) * 3.46  # uniform noise with unit std
    medium = value_noise(rng, h, w, 3.0 / scale)
    coarse = value_noise(rng, h, w, 14.0 / scale)
    tex = amp_fine.take(label) * fine + amp_medium.take(label) * medium + 0.05 * coarse
    img = colour.take(label, axis=0) * (1.0 + contrast * tex)[..., None]

    horizon = max(float(np.argmax((label == S.ROAD).any(axis=1))), 1.0)
    ys, xs = np.nonzero(label == S.SKY)
    if ys.size:
        glow = np.clip(ys / horizon, 0, 1)[:, None] * np.array([0.25, 0.2, 0.1], dtype=np.float32)
        cloud = np.clip(value_noise(rng, h, w, 10.0 / scale)[ys, xs] - 0.7, 0, 1)[:, None]
        sky = img[ys, xs] + glow
        img[ys, xs] = sky + cloud * (0.95 - sky)

    px, py = rng.uniform(5, 10, size=2) / scale
    ox, oy = rng.uniform(0, 10, size=2)
    ys, xs = np.nonzero(label == S.BUILDING)
    win = (((xs + ox) % px) < 0.55 * px) & (((ys + oy) % py) < 0.5 * py)
    ys, xs = ys[win], xs[win]
    img[ys, xs] = img[ys, xs] * 0.3 + _GLASS * (0.8 + 0.4 * coarse[ys, xs, None])
    cell = np.floor((xs + ox) / px) * 7919 + np.floor((ys + oy) / py)
    lit = np.sin(cell * 12.9898) * 43758.5453 % 1 < 0.35
    lit_windows = np.zeros((h, w), dtype=bool)
    lit_windows[ys[lit], xs[lit]] = True

    ys, xs = np.nonzero(label == S.SIDEWALK)
    tile = max(round(4 / scale), 2)
    joint = (xs % tile == 0) | (ys % tile == 0)
    img[ys[joint], xs[joint]] *= 0.8
    ys, xs = np.nonzero(label == S.FENCE)
    slat = xs % max(round(3 / scale), 2) == 0
    img[ys[slat], xs[slat]] *= 0.6
    img[_lane_markings(label, scale)] = 0.9

    inst = find_instances(label, THING_CLASSES)
    _paint_things(rng, img, inst)
    if domain.object_shift_classes:
        _object_shift(img, label, domain)
    img[label == ANOMALY] = 0.0
    np.clip(img, 0, 1, out=img)
    return Painted(image=img, lit_windows=lit_windows, instances=inst)


def _object_shift(img: np.ndarray, label: np.ndarray, domain: Domain) -> None:
    """Repaint the shifted classes in the domain's unusual colour, keeping their texture (luminance)."""
    mask = np.isin(label, domain.object_shift_classes)
    if not mask.any():
        return
    rows, cols = np.ogrid[: label.shape[0], : label.shape[1]]
    rgb = np.asarray(domain.object_shift_rgb, dtype=np.float32) / 255.0
    other = 1.0 - rgb
    if domain.object_shift_pattern == "stripes":
        alt = (rows + cols) // 4 % 2 == 1
    elif domain.object_shift_pattern == "dots":
        alt = ((rows % 5 - 2) ** 2 + (cols % 5 - 2) ** 2) < 2.5
    else:
        alt = np.zeros((1, 1), dtype=bool)
    alt = np.broadcast_to(alt, label.shape)[mask]
    lum = img[mask].mean(axis=1, keepdims=True)
    shade = (lum / max(float(lum.mean()), 1e-3)).clip(0.5, 1.5)
    img[mask] = np.where(alt[:, None], other, rgb) * shade


def _check_label(label: np.ndarray) -> np.ndarray:
    label = np.asarray(label)
    if label.ndim != 2 or label.dtype != np.uint8:
        raise ValueError(f"render: label must be a uint8 [H, W] trainId map, got {label.dtype} {label.shape}")
    values = np.unique(label)
    bad = values[(values >= NUM_CLASSES) & (values != IGNORE) & (values != ANOMALY)]
    if bad.size:
        raise ValueError(
            f"render: label holds {bad.tolist()[:10]}; expected trainIds 0..{NUM_CLASSES - 1}, "
            f"{IGNORE} or {ANOMALY}"
        )
    return label


def render(label: np.ndarray, domain: Domain, seed: int, anomaly_family: str | None = None) -> np.ndarray:
    """Render a label map under a domain: uint8 ``[H, W, 3]`` RGB.

    ``label``: uint8 ``[H, W]`` trainIds, ``IGNORE`` (rendered near-black) and ``ANOMALY`` pixels,
    which are painted in the texture of ``anomaly_family`` (required when any are present).
    ``seed`` fixes every random choice; the same seed under two domains gives the same base
    textures, so the two images differ only by the domain's shift.
    """
    label = _check_label(label)
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"render: seed must be a non-negative int, got {seed!r}")
    has_anomaly = bool((label == ANOMALY).any())
    if has_anomaly and anomaly_family is None:
        raise ValueError("render: label has ANOMALY pixels but anomaly_family is None")
    painted = paint_scene(label, domain, np.random.default_rng([int(seed), 0]))
    image = painted.image
    if has_anomaly:
        anomaly_rng = np.random.default_rng([int(seed), 1])
        index, rgb = paint_anomaly(anomaly_rng, anomaly_family, label, domain.texture_scale)
        image.reshape(-1, 3)[index] = rgb
    fx_rng = np.random.default_rng([int(seed), 2])
    image = apply_domain(
        image, label, domain, fx_rng, lit_windows=painted.lit_windows, instances=painted.instances
    )
    return (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)
