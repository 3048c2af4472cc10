"""The CG-Aug generator: condition map -> paste one OOD object -> prompt -> synthesis -> filters.

:func:`build_generator` builds the heavy parts (backend, SAM, score model, object bank) once;
:meth:`CGAugGenerator.generate_batch` then handles a few source items, rendering up to ``batch_size``
images per backend call (:meth:`CGAugGenerator.generate`: one item). Every attempt has its own seed,
derived from (config seed, stem, attempt), and draws a new object, placement and noise; the prompt is
drawn once per stem. After ``max_attempts`` rejected attempts the item is skipped with the reason.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from generation.backends import SynthesisBackend, build_backend
from generation.condition import condition_from_color, condition_from_train_ids, road_color
from generation.config import GenerationConfig
from generation.filters import AnomalyScoreFilter, SamIoUFilter, build_score_model, load_sam
from generation.object_bank import ADE20KObjectBank, ObjectBank
from generation.paste import PasteResult, paste_on_road
from generation.prompts import Prompt, check_prompt_config, sample_prompt
from generation.source import SourceItem
from lib.config import ConfigError
from lib.data.io import check_same_size, read_label, read_rgb
from lib.labels import ANOMALY, check_train_label


def item_seed(base: int, stem: str, attempt: int | str) -> int:
    """Deterministic 31-bit seed of (config seed, stem, attempt) — independent of order and shard."""
    digest = hashlib.sha256(f"{base}/{stem}/{attempt}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


@dataclass
class Generated:
    """Outcome of one item. ``status`` is ``generated`` or ``skipped``; arrays are ``None`` if skipped."""

    status: str
    record: dict
    domain: str = ""
    image: np.ndarray | None = None
    label: np.ndarray | None = None
    condition: np.ndarray | None = None
    rejections: Counter = field(default_factory=Counter)


@dataclass
class _ItemState:
    """One item on its way through the attempts: what is drawn once, and the outcome when known."""

    label: np.ndarray
    base_condition: np.ndarray
    prompt: Prompt
    record: dict
    rejections: Counter = field(default_factory=Counter)
    outcome: Generated | None = None


@dataclass
class _Draft:
    """One attempt of one item, ready to render: the pasted condition, the prompt text and the seed."""

    state: _ItemState
    pasted: PasteResult
    text: str
    seed: int


class CGAugGenerator:
    """Generates one multi-shift image per Cityscapes label map; built parts are passed in."""

    def __init__(
        self,
        *,
        cfg: GenerationConfig,
        backend: SynthesisBackend,
        object_bank: ObjectBank,
        sam_filter: SamIoUFilter | None = None,
        score_filter: AnomalyScoreFilter | None = None,
    ) -> None:
        check_prompt_config(cfg.prompt)
        if cfg.max_attempts < 1:
            raise ConfigError(f"max_attempts must be >= 1, got {cfg.max_attempts}")
        if cfg.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {cfg.batch_size}")
        self.cfg = cfg
        self.backend = backend
        self.object_bank = object_bank
        self.sam_filter = sam_filter
        self.score_filter = score_filter

    def condition_of(self, item: SourceItem, label: np.ndarray) -> np.ndarray:
        """ADE20K-palette condition map ``[H, W, 3]`` of ``item`` (from its colour map or trainIds)."""
        if item.color_path is None:
            return condition_from_train_ids(label, str(item.label_path))
        color = read_rgb(item.color_path)
        check_same_size(color, item.color_path, label, item.label_path)
        return condition_from_color(color, str(item.color_path))

    def generate(self, item: SourceItem) -> Generated:
        """Run every step for ``item`` with up to ``max_attempts`` attempts."""
        return self.generate_batch([item])[0]

    def generate_batch(self, items: Sequence[SourceItem]) -> list[Generated]:
        """Run every step for each of ``items``, rendering their attempts together.

        Attempt ``k`` of every item still without an outcome is rendered in backend calls of up to
        ``batch_size`` images (same-size condition maps share a call); the filters then judge each
        image alone, and a rejected item moves on to its attempt ``k + 1``. Seeds depend on (stem,
        attempt) only, so each item gets the outcome it gets alone (up to the backend's batch rounding).
        """
        states = [self._start(item) for item in items]
        for attempt in range(self.cfg.max_attempts):
            drafts = [self._paste(s, attempt) for s in states if s.outcome is None]
            drafts = [d for d in drafts if d is not None]
            for draft, image in zip(drafts, self._render(drafts), strict=True):
                self._judge(draft, image)
        for state in states:
            if state.outcome is None:
                state.outcome = self._give_up(state)
        return [state.outcome for state in states]

    def _start(self, item: SourceItem) -> _ItemState:
        """Read ``item``'s label, paint its condition map and draw its prompt (once per stem)."""
        cfg = self.cfg
        label = check_train_label(read_label(item.label_path), str(item.label_path), allow_anomaly=False)
        prompt = sample_prompt(cfg.prompt, np.random.default_rng(item_seed(cfg.seed, item.stem, "prompt")))
        record = {
            "split": item.split,
            "city": item.city,
            "stem": item.stem,
            "backend": self.backend.name,
            "domain": prompt.domain.tag,
            "weather": prompt.domain.weather,
            "time": prompt.domain.time,
            "place": prompt.domain.place,
            "negative_prompt": prompt.negative,
        }
        return _ItemState(label, self.condition_of(item, label), prompt, record)

    def _paste(self, state: _ItemState, attempt: int) -> _Draft | None:
        """Attempt ``attempt``: draw an object and paste it; ``None`` (item skipped) without road."""
        cfg = self.cfg
        seed = item_seed(cfg.seed, state.record["stem"], attempt)
        rng = np.random.default_rng(seed)
        obj = self.object_bank.sample(rng)
        pasted = paste_on_road(
            state.base_condition,
            obj.mask,
            obj.color,
            road_color(),
            rng,
            size_range=(cfg.paste.size_range[0], cfg.paste.size_range[1]),
            margin=cfg.paste.margin,
            min_margin=cfg.paste.min_margin,
            margin_step=cfg.paste.margin_step,
            reference_short_side=cfg.paste.reference_short_side,
        )
        if pasted is None:
            state.record.update(
                status="skipped", reason="no road pixel inside the smallest margin", retries=attempt
            )
            state.outcome = Generated(status="skipped", record=state.record, rejections=state.rejections)
            return None
        text = state.prompt.text(cfg.prompt, obj.name)
        state.record.update(
            prompt=text, anomaly_class=obj.name, ade_index=obj.ade_index, seed=seed, retries=attempt
        )
        return _Draft(state, pasted, text, seed)

    def _render(self, drafts: Sequence[_Draft]) -> list[np.ndarray]:
        """Images of ``drafts`` in order, ``batch_size`` same-size conditions per backend call."""
        images: list[np.ndarray | None] = [None] * len(drafts)
        by_size: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for i, draft in enumerate(drafts):
            by_size[draft.pasted.condition.shape].append(i)
        size = self.cfg.batch_size
        for indices in by_size.values():
            for first in range(0, len(indices), size):
                chunk = [drafts[i] for i in indices[first : first + size]]
                rendered = self.backend.render_batch(
                    [d.pasted.condition for d in chunk],
                    [d.text for d in chunk],
                    [d.state.prompt.negative for d in chunk],
                    [d.seed for d in chunk],
                )
                for i, image in zip(indices[first : first + size], rendered, strict=True):
                    images[i] = image
        return images

    def _judge(self, draft: _Draft, image: np.ndarray) -> None:
        """Run the filters on one rendered attempt; an accepted image becomes the item's outcome."""
        state = draft.state
        mask, iou, score = draft.pasted.mask, None, None
        if self.sam_filter is not None:
            verdict = self.sam_filter(image, mask)
            iou = verdict.value
            if not verdict.passed:
                state.rejections["sam"] += 1
                return
            mask = verdict.mask
        if self.score_filter is not None:
            verdict = self.score_filter(image, mask)
            score = verdict.value
            if not verdict.passed:
                state.rejections["score"] += 1
                return
        out_label = state.label.copy()
        out_label[mask] = ANOMALY
        state.record.update(status="generated", iou=iou, score=score, rejections=dict(state.rejections))
        state.outcome = Generated(
            status="generated",
            record=state.record,
            domain=state.prompt.domain.tag,
            image=image,
            label=out_label,
            condition=draft.pasted.condition,
            rejections=state.rejections,
        )

    def _give_up(self, state: _ItemState) -> Generated:
        """The outcome of an item whose every attempt was rejected."""
        reason = ", ".join(f"{k} x{v}" for k, v in sorted(state.rejections.items()))
        state.record.update(
            status="skipped", reason=f"rejected in all {self.cfg.max_attempts} attempts ({reason})"
        )
        state.record.update(iou=None, score=None, rejections=dict(state.rejections))
        return Generated(status="skipped", record=state.record, rejections=state.rejections)


def resolve_object_source(cfg: GenerationConfig) -> str:
    """``ade20k`` or ``toyshift``; ``auto`` follows the backend."""
    source = cfg.objects.source
    if source == "auto":
        return "toyshift" if cfg.backend == "procedural" else "ade20k"
    if source not in ("ade20k", "toyshift"):
        raise ConfigError(f"objects.source: unknown {source!r}; expected auto, ade20k or toyshift")
    return source


def build_object_bank(cfg: GenerationConfig) -> ObjectBank:
    """The object bank named by ``cfg.objects``."""
    if resolve_object_source(cfg) == "toyshift":
        from generation.backends.procedural import ToyFamilyBank

        return ToyFamilyBank()
    return ADE20KObjectBank(
        root=cfg.objects.ade20k_root,
        ood_split=cfg.objects.ood_split,
        cache_path=cfg.objects.index_cache or None,
    )


def build_generator(cfg: GenerationConfig) -> CGAugGenerator:
    """Build every heavy part once from ``cfg`` and return the generator."""
    sam_filter = score_filter = None
    if cfg.sam.enabled:
        model, processor = load_sam(cfg.sam.path, cfg.device)
        sam_filter = SamIoUFilter(model=model, processor=processor, threshold=cfg.sam.threshold)
    if cfg.score.enabled:
        s = cfg.score
        model = build_score_model(s.model, s.model_kwargs, s.weight_path, cfg.device)
        score_filter = AnomalyScoreFilter(
            model=model, threshold=s.threshold, mean=tuple(s.mean), std=tuple(s.std)
        )
    return CGAugGenerator(
        cfg=cfg,
        backend=build_backend(cfg.backend, cfg),
        object_bank=build_object_bank(cfg),
        sam_filter=sam_filter,
        score_filter=score_filter,
    )
