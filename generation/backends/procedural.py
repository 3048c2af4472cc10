"""The ``procedural`` backend: CG-Aug on a CPU in milliseconds with the ToyShift renderer.

It reads the condition map back into a ToyShift label: ADE20K colours of the correspondence table ->
Cityscapes trainIds (where two classes share an ADE20K category, the one of the same name: rider ->
person, train -> bus, motorcycle -> bicycle), the colour of a ToyShift training anomaly family ->
``ANOMALY`` drawn as that family, anything else -> ``IGNORE``. The prompt selects the ToyShift domain
(weather, time, place) and ``seed`` the texture noise. Its object bank, :class:`ToyFamilyBank`, is
ToyShift's training anomaly families, so it needs no ADE20K download.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from generation.ade20k import ade150
from generation.backends import register_backend
from generation.condition import CITYSCAPES_TO_ADE, ade_color_of
from generation.config import GenerationConfig
from generation.object_bank import AnomalyObject
from lib.labels import ANOMALY, IGNORE, NUM_CLASSES, TRAIN_LABELS, pack_rgb
from lib.toy.anomalies import FAMILY_ADE_INDEX, TRAIN_FAMILIES, sample_anomaly_mask
from lib.toy.domains import domain_from_prompt
from lib.toy.render import render as render_toy

FAMILY_MASK_SIZE = 256


def family_colors() -> dict[str, np.ndarray]:
    """Training anomaly family -> ``[3]`` uint8 ADE20K colour it is pasted in."""
    return {f: ade150().color(FAMILY_ADE_INDEX[f]) for f in TRAIN_FAMILIES}


def condition_to_toy_label(condition: np.ndarray) -> tuple[np.ndarray, str | None]:
    """``[H, W, 3]`` uint8 condition -> (``[H, W]`` uint8 trainIds with ``ANOMALY``, family or None)."""
    keys = pack_rgb(condition)
    uniq, inverse = np.unique(keys.ravel(), return_inverse=True)
    values = np.full(uniq.shape, IGNORE, dtype=np.uint8)
    names = [lb.name for lb in TRAIN_LABELS]
    for train_id in sorted(range(NUM_CLASSES), key=lambda t: CITYSCAPES_TO_ADE[names[t]] == names[t]):
        values[uniq == pack_rgb(ade_color_of(names[train_id]))] = train_id
    counts = np.bincount(inverse, minlength=len(uniq))
    family, best = None, 0
    for name, color in family_colors().items():
        hit = uniq == pack_rgb(color)
        values[hit] = ANOMALY
        if hit.any() and counts[hit].sum() > best:
            family, best = name, int(counts[hit].sum())
    return values[inverse].reshape(keys.shape), family


class ProceduralBackend:
    """ToyShift rendering of a condition map under the domain its prompt describes."""

    name = "procedural"

    def render(self, condition_rgb: np.ndarray, prompt: str, negative_prompt: str, seed: int) -> np.ndarray:
        """``[H, W, 3]`` uint8 image; ``negative_prompt`` has no meaning for ToyShift and is unused."""
        label, family = condition_to_toy_label(condition_rgb)
        return render_toy(label, domain_from_prompt(prompt), seed, anomaly_family=family)

    def render_batch(
        self,
        conditions: Sequence[np.ndarray],
        prompts: Sequence[str],
        negative_prompts: Sequence[str],
        seeds: Sequence[int],
    ) -> list[np.ndarray]:
        """:meth:`render` of each item (the renderer has nothing to gain from batching)."""
        return [self.render(*args) for args in zip(conditions, prompts, negative_prompts, seeds, strict=True)]


class ToyFamilyBank:
    """Object bank of ToyShift's training anomaly families, painted in their ADE20K colours."""

    def sample(self, rng: np.random.Generator) -> AnomalyObject:
        family = TRAIN_FAMILIES[rng.integers(len(TRAIN_FAMILIES))]
        index = FAMILY_ADE_INDEX[family]
        return AnomalyObject(
            mask=sample_anomaly_mask(rng, family, FAMILY_MASK_SIZE, FAMILY_MASK_SIZE),
            ade_index=index,
            color=ade150().color(index),
            name=family,
            source="toyshift",
        )


@register_backend("procedural")
def build_procedural_backend(cfg: GenerationConfig) -> ProceduralBackend:
    """The procedural backend has no settings; ``cfg`` is accepted for the common builder signature."""
    return ProceduralBackend()
