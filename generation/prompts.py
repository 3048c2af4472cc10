"""Step 4 of CG-Aug: the text prompt. With probability ``plain_prob`` the plain dash-cam sentence,
otherwise the sentence with a sampled place, weather and time of day; then the anomaly sentence and
the quality suffix, joined with ", " as the published code does. The domain tag that names the output
files (``_foggy_night_Paris``; empty for the plain sentence) comes from the same draw.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from generation.config import PromptConfig
from lib.config import ConfigError


@dataclass(frozen=True)
class Domain:
    """The sampled image-level domain; all ``None`` for the plain prompt."""

    weather: str | None = None
    time: str | None = None
    place: str | None = None

    @property
    def tag(self) -> str:
        """File-name suffix: ``_{weather}_{time}_{place}`` with every non-alphanumeric run as ``_``."""
        if self.place is None:
            return ""
        return "_" + re.sub(r"[^0-9A-Za-z]+", "_", f"{self.weather}_{self.time}_{self.place}").strip("_")


@dataclass(frozen=True)
class Prompt:
    """Positive prompt (without the anomaly sentence), negative prompt and the domain it encodes."""

    scene: str
    negative: str
    domain: Domain

    def text(self, cfg: PromptConfig, anomaly_name: str) -> str:
        """The full positive prompt for an image with a ``anomaly_name`` object pasted."""
        return f"{self.scene}, {cfg.anomaly.format(name=anomaly_name)}, {cfg.quality}"


def check_prompt_config(cfg: PromptConfig) -> None:
    """Raise ``ValueError`` naming the key if the prompt lists or probabilities are unusable."""
    for key in ("weathers", "times", "places"):
        if not getattr(cfg, key):
            raise ConfigError(f"prompt.{key} is empty")
    if len(cfg.time_probs) != len(cfg.times):
        raise ConfigError(
            f"prompt.time_probs has {len(cfg.time_probs)} entries but prompt.times has {len(cfg.times)}"
        )
    if min(cfg.time_probs) < 0 or not np.isclose(sum(cfg.time_probs), 1.0):
        raise ConfigError(f"prompt.time_probs must be non-negative and sum to 1, got {cfg.time_probs}")
    if not 0.0 <= cfg.plain_prob <= 1.0:
        raise ConfigError(f"prompt.plain_prob must be in [0, 1], got {cfg.plain_prob}")


def sample_prompt(cfg: PromptConfig, rng: np.random.Generator) -> Prompt:
    """Draw one prompt; weather and place uniform, time by ``time_probs``."""
    plain = rng.random() < cfg.plain_prob
    weather = cfg.weathers[rng.integers(len(cfg.weathers))]
    time = cfg.times[rng.choice(len(cfg.times), p=cfg.time_probs)]
    place = cfg.places[rng.integers(len(cfg.places))]
    if plain:
        return Prompt(scene=cfg.template, negative=cfg.negative, domain=Domain())
    scene = cfg.domain_template.format(PLACE=place, WEATHER=weather, TIME=time)
    return Prompt(scene=scene, negative=cfg.negative, domain=Domain(weather, time, place))
