"""ToyShift domains: validation, presets, random shifted domains and the CG-Aug prompt mapping."""

import dataclasses
import json

import numpy as np
import pytest

from lib.toy.domains import PRESETS, SOURCE_DOMAIN, Domain, domain_from_prompt, sample_shifted_domain

BASE = "An image sampled from various stereo video sequences taken by dash cam."


def _prompt(place: str, weather: str, time: str) -> str:
    return f"{BASE} in {place} in a {weather} {time}., There is a box accidentally staying on the road."


def test_domain_is_frozen_and_validated():
    with pytest.raises(dataclasses.FrozenInstanceError):
        SOURCE_DOMAIN.fog = 0.5
    with pytest.raises(ValueError, match="fog=1.5 is outside"):
        Domain(name="x", fog=1.5)
    with pytest.raises(ValueError, match="object_shift_classes \\[19\\]"):
        Domain(name="x", object_shift_classes=(19,))
    with pytest.raises(ValueError, match="object_shift_pattern='zigzag'"):
        Domain(name="x", object_shift_pattern="zigzag")
    with pytest.raises(ValueError, match="posterize=1"):
        Domain(name="x", posterize=1)


def test_presets_cover_every_kind_of_shift():
    assert {"fog", "night", "rain", "snow", "style", "tone", "blur", "object"} <= set(PRESETS)
    assert PRESETS["fog"].fog > 0 and PRESETS["night"].night > 0
    assert PRESETS["rain"].rain > 0 and PRESETS["snow"].snow > 0
    assert PRESETS["object"].object_shift_classes
    for name, domain in PRESETS.items():
        assert domain != SOURCE_DOMAIN and domain.name == name
        json.dumps(domain.as_dict())


def test_sampled_domains_are_seeded_shifted_and_varied():
    domains = [sample_shifted_domain(np.random.default_rng(s)) for s in range(40)]
    assert domains[3] == sample_shifted_domain(np.random.default_rng(3))
    assert all(d != SOURCE_DOMAIN and d.name.startswith("shift:") for d in domains)
    assert sum(d.night > 0 for d in domains) >= 3
    assert sum(d.fog > 0 for d in domains) >= 3
    assert sum(bool(d.object_shift_classes) for d in domains) >= 10
    assert len({d.name for d in domains}) >= 8
    for d in domains:
        assert all(isinstance(v, (int, float, str, tuple)) for v in d.as_dict().values())


def test_prompt_weather_and_time():
    assert domain_from_prompt(_prompt("Paris", "rainy", "day")).rain > 0
    assert domain_from_prompt(_prompt("Paris", "snowy", "day")).snow > 0
    assert domain_from_prompt(_prompt("Paris", "foggy", "day")).fog >= 0.5
    clear_day = domain_from_prompt(_prompt("Paris", "clear", "day"))
    assert (clear_day.fog, clear_day.rain, clear_day.snow, clear_day.night) == (0, 0, 0, 0)
    night = domain_from_prompt(_prompt("Paris", "clear", "night"))
    assert night.night > 0 and night.name == "prompt:paris/clear/night"
    assert domain_from_prompt(_prompt("Paris", "Cloudy", "Day")).saturation < clear_day.saturation


def test_prompt_place_gives_a_deterministic_style():
    a = domain_from_prompt(_prompt("Rio de Janeiro", "clear", "day"))
    assert a == domain_from_prompt(_prompt("rio de janeiro", "clear", "day"))
    b = domain_from_prompt(_prompt("Oslo", "clear", "day"))
    assert (a.hue_shift, a.tint, a.texture_scale) != (b.hue_shift, b.tint, b.texture_scale)
    rainy = domain_from_prompt(_prompt("Oslo", "rainy", "day"))
    assert rainy.hue_shift == b.hue_shift and rainy.rain > 0


def test_plain_prompt_and_bad_words():
    plain = domain_from_prompt(BASE + ", There is a box accidentally staying on the road.")
    assert plain.name == "plain" and plain != SOURCE_DOMAIN
    with pytest.raises(ValueError, match="prompt weather 'stormy'"):
        domain_from_prompt(_prompt("Oslo", "stormy", "day"))
    with pytest.raises(ValueError, match="prompt time 'dusk'"):
        domain_from_prompt(_prompt("Oslo", "clear", "dusk"))
