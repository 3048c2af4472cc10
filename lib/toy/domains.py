"""ToyShift domains: the parameters of the covariate shift applied when a label map is rendered.

A :class:`Domain` is a frozen bundle of photometric parameters. None of them moves a pixel, so
the label map stays aligned with the image under every domain:

- weather and time: ``fog`` (depth-dependent haze), ``night`` (darkness plus light sources:
  street lamps on poles, head/tail lights on vehicles, lit windows), ``rain`` (streaks, a darker
  and duller image), ``snow`` (flakes and white cover on the ground);
- tone: ``brightness``, ``contrast``, ``saturation``, ``hue_shift`` (degrees), per-channel ``tint``;
- texture style: ``texture_scale`` (pattern and noise frequency), ``texture_contrast``,
  ``posterize`` (colour levels, 0 = off) and ``outline`` (dark class boundaries, cartoon-like);
- camera: ``blur_sigma`` (px) and ``noise_std`` (in [0, 1] intensity units);
- object-level shift: the classes in ``object_shift_classes`` are painted in the unusual colour
  ``object_shift_rgb`` with ``object_shift_pattern`` — still the same class, so in-distribution.

:func:`domain_from_prompt` turns a CG-Aug prompt into a domain; it is what the ``procedural``
generation backend calls, so its mapping is part of the public contract (see its docstring).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, fields

import numpy as np

from lib.labels import CLASS_NAMES, NUM_CLASSES

PATTERNS = ("plain", "stripes", "dots")

_UNIT = ("fog", "night", "rain", "snow", "outline")
_POSITIVE = ("brightness", "contrast", "saturation", "texture_scale", "texture_contrast")


@dataclass(frozen=True)
class Domain:
    """Rendering parameters of one domain; the defaults are the source domain."""

    name: str
    fog: float = 0.0
    night: float = 0.0
    rain: float = 0.0
    snow: float = 0.0
    brightness: float = 1.0
    contrast: float = 1.0
    saturation: float = 1.0
    hue_shift: float = 0.0
    tint: tuple[float, float, float] = (1.0, 1.0, 1.0)
    texture_scale: float = 1.0
    texture_contrast: float = 1.0
    posterize: int = 0
    outline: float = 0.0
    blur_sigma: float = 0.0
    noise_std: float = 0.0
    object_shift_classes: tuple[int, ...] = ()
    object_shift_rgb: tuple[int, int, int] = (0, 0, 0)
    object_shift_pattern: str = "plain"

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("Domain.name must be a non-empty string")
        for key in _UNIT:
            value = getattr(self, key)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"Domain {self.name!r}: {key}={value} is outside [0, 1]")
        for key in _POSITIVE:
            value = getattr(self, key)
            if not value > 0.0:
                raise ValueError(f"Domain {self.name!r}: {key}={value} must be > 0")
        if len(self.tint) != 3 or min(self.tint) <= 0:
            raise ValueError(f"Domain {self.name!r}: tint={self.tint} must be 3 positive gains")
        if self.posterize != 0 and not 2 <= self.posterize <= 64:
            raise ValueError(f"Domain {self.name!r}: posterize={self.posterize} must be 0 (off) or 2..64")
        if self.blur_sigma < 0 or self.noise_std < 0:
            raise ValueError(f"Domain {self.name!r}: blur_sigma and noise_std must be >= 0")
        bad = [c for c in self.object_shift_classes if not 0 <= c < NUM_CLASSES]
        if bad:
            raise ValueError(f"Domain {self.name!r}: object_shift_classes {bad} are not trainIds")
        if len(self.object_shift_rgb) != 3 or not all(0 <= v <= 255 for v in self.object_shift_rgb):
            raise ValueError(f"Domain {self.name!r}: object_shift_rgb={self.object_shift_rgb} is not RGB")
        if self.object_shift_pattern not in PATTERNS:
            raise ValueError(
                f"Domain {self.name!r}: object_shift_pattern={self.object_shift_pattern!r}; "
                f"expected one of {PATTERNS}"
            )

    def as_dict(self) -> dict:
        """Plain JSON-serialisable form (for manifests and generation metadata)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


SOURCE_DOMAIN = Domain(name="source")

_CLASS = {name: i for i, name in enumerate(CLASS_NAMES)}

PRESETS: dict[str, Domain] = {
    "fog": Domain(name="fog", fog=0.75, contrast=0.9, saturation=0.85),
    "night": Domain(name="night", night=0.85),
    "rain": Domain(name="rain", rain=0.75, fog=0.15, brightness=0.85, saturation=0.8),
    "snow": Domain(name="snow", snow=0.7, brightness=1.05, saturation=0.85),
    "cloudy": Domain(name="cloudy", fog=0.1, brightness=0.85, saturation=0.75, tint=(0.95, 0.97, 1.05)),
    "style": Domain(name="style", texture_scale=2.0, texture_contrast=1.8, posterize=5, outline=0.7),
    "tone": Domain(name="tone", hue_shift=-25.0, tint=(1.15, 0.95, 0.8), saturation=1.3, contrast=1.15),
    "blur": Domain(name="blur", blur_sigma=1.2, noise_std=0.06),
    "object": Domain(
        name="object",
        object_shift_classes=(_CLASS["car"], _CLASS["building"]),
        object_shift_rgb=(230, 40, 200),
        object_shift_pattern="stripes",
    ),
}
"""Named single-factor shifts, one per kind of covariate shift."""


def _object_shift(rng: np.random.Generator) -> dict:
    candidates = [i for i, name in enumerate(CLASS_NAMES) if name != "sky"]
    k = int(rng.integers(1, 3))
    classes = tuple(sorted(int(c) for c in rng.choice(candidates, size=k, replace=False)))
    hsv_hue = rng.uniform(0, 1)
    rgb = tuple(int(v) for v in 255 * np.clip(np.abs((hsv_hue * 6 + np.array([0, 4, 2])) % 6 - 3) - 1, 0, 1))
    return {
        "object_shift_classes": classes,
        "object_shift_rgb": rgb,
        "object_shift_pattern": str(rng.choice(PATTERNS)),
    }


def sample_shifted_domain(rng: np.random.Generator) -> Domain:
    """Draw a random shifted domain: a weather/time factor, a tone shift, and (each at random) a
    texture-style change, camera blur/noise and an object-level shift; its name lists the parts."""
    parts = []
    params: dict = {}
    weathers = ["fog", "night", "rain", "snow", "cloudy", "clear"]
    weather = str(rng.choice(weathers, p=[0.2, 0.2, 0.2, 0.15, 0.1, 0.15]))
    if weather == "fog":
        params["fog"] = rng.uniform(0.4, 0.9)
    elif weather == "night":
        params["night"] = rng.uniform(0.6, 0.95)
    elif weather == "rain":
        params.update(rain=rng.uniform(0.4, 1.0), fog=rng.uniform(0.0, 0.25))
        params["brightness"] = rng.uniform(0.7, 0.9)
    elif weather == "snow":
        params["snow"] = rng.uniform(0.4, 1.0)
    elif weather == "cloudy":
        params.update(fog=rng.uniform(0.05, 0.2), saturation=rng.uniform(0.6, 0.85))
    parts.append(weather)
    params.update(
        hue_shift=rng.uniform(-40, 40),
        tint=tuple(float(v) for v in rng.uniform(0.8, 1.2, size=3)),
        contrast=rng.uniform(0.8, 1.25),
        brightness=params.get("brightness", 1.0) * rng.uniform(0.8, 1.2),
    )
    if rng.random() < 0.4:
        params.update(
            texture_scale=rng.uniform(0.5, 2.5),
            texture_contrast=rng.uniform(0.5, 2.0),
            posterize=int(rng.choice([0, 4, 6, 8])),
            outline=rng.uniform(0.0, 0.8),
        )
        parts.append("style")
    if rng.random() < 0.3:
        params.update(blur_sigma=rng.uniform(0.3, 1.5), noise_std=rng.uniform(0.01, 0.08))
        parts.append("camera")
    if rng.random() < 0.5:
        params.update(_object_shift(rng))
        parts.append("object")
    return Domain(name="shift:" + "+".join(parts), **{k: _plain(v) for k, v in params.items()})


def _plain(value):
    return float(value) if isinstance(value, np.floating) else value


_WEATHER = {
    "clear": {},
    "cloudy": {"fog": 0.1, "brightness": 0.85, "saturation": 0.75},
    "rainy": {"rain": 0.7, "fog": 0.15, "brightness": 0.8, "saturation": 0.8},
    "snowy": {"snow": 0.7, "brightness": 1.05, "saturation": 0.85},
    "foggy": {"fog": 0.7, "contrast": 0.9, "saturation": 0.85},
}
_MULTIPLICATIVE = ("brightness", "saturation", "contrast")
_PLACE = re.compile(r"\bin (?P<place>[^.,]+?) in an? (?P<weather>\w+) (?P<time>\w+)\b", re.IGNORECASE)


def _place_style(place: str) -> dict:
    """A deterministic tone/texture style of a place name (stable across runs and machines)."""
    digest = hashlib.sha256(place.strip().lower().encode("utf-8")).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
    style = {
        "hue_shift": rng.uniform(-30, 30),
        "tint": tuple(float(v) for v in rng.uniform(0.85, 1.15, size=3)),
        "saturation": rng.uniform(0.75, 1.3),
        "contrast": rng.uniform(0.85, 1.2),
        "texture_scale": rng.uniform(0.6, 1.8),
        "texture_contrast": rng.uniform(0.7, 1.5),
    }
    if rng.random() < 0.3:
        style.update(_object_shift(rng))
    return style


def domain_from_prompt(prompt: str) -> Domain:
    """Map a CG-Aug prompt to a domain (the ``procedural`` generation backend's reading of it).

    - ``"... in {PLACE} in a {WEATHER} {TIME}."``: WEATHER ``clear`` (nothing), ``cloudy`` (haze,
      duller), ``rainy`` (rain streaks), ``snowy`` (snow), ``foggy`` (fog); TIME ``night`` adds
      darkness with light sources, ``day`` nothing; PLACE selects a deterministic tone and texture
      style from a hash of its name (and for some places an object-level shift).
    - A prompt without that clause (the plain template) maps to a fixed mild generator style
      (``name="plain"``), since a generator never reproduces the source look exactly.
    Matching is case-insensitive; the result depends on the prompt only.
    """
    match = _PLACE.search(prompt)
    if match is None:
        return Domain(name="plain", texture_scale=1.3, texture_contrast=1.2, saturation=1.1)
    place, weather, time = match["place"].strip(), match["weather"].lower(), match["time"].lower()
    if weather not in _WEATHER:
        raise ValueError(f"prompt weather {weather!r} is not one of {sorted(_WEATHER)}: {prompt!r}")
    if time not in ("day", "night"):
        raise ValueError(f"prompt time {time!r} is unknown; expected 'day' or 'night': {prompt!r}")
    params = _place_style(place)
    for key, value in _WEATHER[weather].items():
        params[key] = params.get(key, 1.0) * value if key in _MULTIPLICATIVE else value
    if time == "night":
        params["night"] = 0.85
    name = f"prompt:{place.lower()}/{weather}/{time}"
    return Domain(name=name, **{k: _plain(v) for k, v in params.items()})
