"""Photometric domain effects of ToyShift: tone, texture style, night, fog, rain, snow, camera.

Every effect changes pixel values only; no pixel moves, so the label map stays aligned. Effects
that depend on the scene read it from the label map: fog needs a depth per pixel (from the row
where the pixel's object meets the ground), night needs its light sources (tops of poles, the
rear lights of vehicles, lit windows), snow settles on ground and foliage.
"""

from __future__ import annotations

import cv2
import numpy as np

import lib.toy.scenes as S
from lib.toy.domains import Domain
from lib.toy.textures import Instances, value_noise

_RGB_TO_YIQ = np.array(
    [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], dtype=np.float32
)
_YIQ_TO_RGB = np.linalg.inv(_RGB_TO_YIQ).astype(np.float32)
_VEHICLES = (S.CAR, S.TRUCK, S.BUS, S.TRAIN)
_SNOW_SURFACES = (S.ROAD, S.SIDEWALK, S.TERRAIN, S.VEGETATION, S.WALL, S.FENCE)


def _tone(img: np.ndarray, domain: Domain) -> np.ndarray:
    """Hue rotation and saturation in YIQ, then per-channel tint and brightness, then contrast."""
    theta = np.deg2rad(domain.hue_shift)
    s = domain.saturation
    rot = np.array(
        [[1, 0, 0], [0, s * np.cos(theta), -s * np.sin(theta)], [0, s * np.sin(theta), s * np.cos(theta)]],
        dtype=np.float32,
    )
    gain = np.asarray(domain.tint, dtype=np.float32) * domain.brightness
    matrix = (gain[:, None] * (_YIQ_TO_RGB @ rot @ _RGB_TO_YIQ)).astype(np.float32)
    out = cv2.transform(np.ascontiguousarray(img, dtype=np.float32), matrix)
    if domain.contrast != 1.0:
        mean = float(out.mean())
        out = (out - mean) * domain.contrast + mean
    return out


def _style(img: np.ndarray, label: np.ndarray, domain: Domain) -> np.ndarray:
    """Cartoon-like class outlines and colour posterisation."""
    if domain.outline > 0:
        edge = np.zeros(label.shape, dtype=bool)
        edge[:, 1:] |= label[:, 1:] != label[:, :-1]
        edge[1:, :] |= label[1:, :] != label[:-1, :]
        img = img * (1.0 - domain.outline * edge[..., None])
    if domain.posterize:
        levels = domain.posterize - 1
        img = np.round(np.clip(img, 0, 1) * levels) / levels
    return img


def depth_map(label: np.ndarray, instances: Instances) -> np.ndarray:
    """Relative distance ``[H, W]`` float32 (1 at the bottom row, large near the horizon, inf for sky).

    A pixel's depth is that of the row where its object meets the ground: its own row on the
    ground, the bottom row of its instance for things, and the first road/sidewalk row of its
    column for buildings, vegetation and other standing stuff.
    """
    h, w = label.shape
    walkable = (label == S.ROAD) | (label == S.SIDEWALK)
    horizon = float(np.argmax(walkable.any(axis=1))) if walkable.any() else h / 2
    rows = np.broadcast_to(np.arange(h, dtype=np.float32)[:, None], (h, w))
    column_ground = np.where(walkable.any(axis=0), walkable.argmax(axis=0), h - 1).astype(np.float32)
    foot = np.where(rows >= column_ground[None, :], rows, column_ground[None, :])
    ground = np.isin(label, (S.ROAD, S.SIDEWALK, S.TERRAIN)) & (rows > horizon)
    foot = np.where(ground, rows, foot)
    ids = instances.ids
    bottom = (instances.top + instances.height - 1).astype(np.float32)
    foot = np.where(ids > 0, bottom[ids], foot)
    t = np.clip((foot - horizon) / max(h - horizon, 1.0), 0.02, 1.0)
    dist = 1.0 / t
    dist[label == S.SKY] = np.inf
    return dist.astype(np.float32)


def _fog(img: np.ndarray, label: np.ndarray, domain: Domain, instances: Instances) -> np.ndarray:
    transmission = np.exp(-0.45 * domain.fog * (depth_map(label, instances) - 1.0))[..., None]
    haze = np.array([0.78, 0.8, 0.83], dtype=np.float32) * (1.0 - 0.85 * domain.night)
    return img * transmission + haze * (1.0 - transmission)


def _night(
    img: np.ndarray, label: np.ndarray, domain: Domain, lit_windows: np.ndarray, instances: Instances
) -> np.ndarray:
    """Darken towards a blue night tone, then add lit windows and glowing lamps and rear lights."""
    h, w = label.shape
    n = domain.night
    dark = 1.0 + n * (np.array([0.14, 0.16, 0.26], dtype=np.float32) - 1.0)
    img = img * dark
    img[label == S.SKY] *= 1.0 - 0.7 * n
    img[lit_windows] += n * np.array([0.85, 0.7, 0.35], dtype=np.float32)
    spots = np.zeros((h, w, 3), dtype=np.float32)
    ids = np.arange(1, instances.count + 1)
    cls = instances.cls[1:]
    top, left = instances.top[1:], instances.left[1:]
    height, width = instances.height[1:], instances.width[1:]
    lamps = ids[cls == S.POLE] - 1
    np.add.at(spots, (top[lamps], left[lamps] + width[lamps] // 2), (1.0, 0.85, 0.55))
    cars = ids[np.isin(cls, _VEHICLES)] - 1
    rear_y = np.minimum(top[cars] + (0.56 * height[cars]).astype(int), h - 1)
    for side in (0.1, 0.9):
        rear_x = np.minimum(left[cars] + (side * width[cars]).astype(int), w - 1)
        np.add.at(spots, (rear_y, rear_x), (1.0, 0.15, 0.08))
    sigma = max(w / 200.0, 0.8)
    glow = cv2.GaussianBlur(spots, (0, 0), sigma) * (2 * np.pi * sigma**2) * 0.6
    glow += cv2.GaussianBlur(spots, (0, 0), 4 * sigma) * (2 * np.pi * (4 * sigma) ** 2) * 0.12
    return img + n * glow


def _rain(img: np.ndarray, domain: Domain, rng: np.random.Generator) -> np.ndarray:
    """Slanted rain streaks (sparse drops smeared along a line kernel) over a duller image."""
    h, w = img.shape[:2]
    drops = np.zeros((h, w), dtype=np.float32)
    n = int(domain.rain * h * w / 60)
    drops[rng.integers(h, size=n), rng.integers(w, size=n)] = rng.uniform(0.4, 1.0, size=n)
    length = max(int(h / 10), 3)
    kernel = np.zeros((length, length), dtype=np.float32)
    slant = rng.uniform(-0.3, 0.3)
    ys = np.arange(length)
    xs = np.clip(np.round((length - 1) / 2 + slant * (ys - (length - 1) / 2)), 0, length - 1).astype(int)
    kernel[ys, xs] = 1.0 / length * 2.5
    streaks = np.clip(cv2.filter2D(drops, -1, kernel), 0, 1)[..., None]
    img = img * (1.0 - 0.25 * domain.rain)
    return img + streaks * 0.7 * (np.array([0.85, 0.87, 0.9], dtype=np.float32) - img)


def _snow(img: np.ndarray, label: np.ndarray, domain: Domain, rng: np.random.Generator) -> np.ndarray:
    """Snow cover on ground and foliage (noisy, denser with more snow) and falling flakes."""
    h, w = label.shape
    cover_noise = value_noise(rng, h, w, max(w / 40.0, 2.0))
    cover = np.isin(label, _SNOW_SURFACES) & (cover_noise > 1.2 - 1.6 * domain.snow)
    white = np.array([0.92, 0.93, 0.96], dtype=np.float32)
    img = np.where(cover[..., None], img + 0.75 * (white - img), img)
    flakes = np.zeros((h, w), dtype=np.float32)
    n = int(domain.snow * h * w / 60)
    flakes[rng.integers(h, size=n), rng.integers(w, size=n)] = rng.uniform(0.5, 1.0, size=n)
    flakes = np.clip(cv2.GaussianBlur(flakes, (0, 0), 0.6) * 2.5, 0, 1)[..., None]
    return img + flakes * (white - img)


def apply_domain(
    image: np.ndarray,
    label: np.ndarray,
    domain: Domain,
    rng: np.random.Generator,
    *,
    lit_windows: np.ndarray,
    instances: Instances,
) -> np.ndarray:
    """Apply every effect of ``domain`` to a painted float32 image ``[H, W, 3]`` in [0, 1].

    Order: tone, style, night, fog, rain, snow, blur, sensor noise. Returns float32 (not clipped).
    """
    img = _tone(image, domain)
    img = _style(img, label, domain)
    if domain.night > 0:
        img = _night(img, label, domain, lit_windows, instances)
    if domain.fog > 0:
        img = _fog(img, label, domain, instances)
    if domain.rain > 0:
        img = _rain(img, domain, rng)
    if domain.snow > 0:
        img = _snow(img, label, domain, rng)
    if domain.blur_sigma > 0:
        img = cv2.GaussianBlur(np.ascontiguousarray(img, dtype=np.float32), (0, 0), domain.blur_sigma)
    if domain.noise_std > 0:
        img = img + rng.normal(0.0, domain.noise_std, size=img.shape).astype(np.float32)
    return img.astype(np.float32, copy=False)
