"""The CG-Aug generator: condition map -> paste one OOD object -> prompt -> synthesis -> filters.

:func:`build_generator` builds the heavy parts (backend, SAM, score model, object bank) once;
:meth:`CGAugGenerator.generate` then handles one source item. Every attempt has its own seed,
derived from (config seed, stem, attempt), and draws a new object, placement and noise; the prompt is
drawn once per stem. After ``max_attempts`` rejected attempts the item is skipped with the reason.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from generation.backends import SynthesisBackend, build_backend
from generation.condition import condition_from_color, condition_from_train_ids, road_color
from generation.config import GenerationConfig
from generation.filters import AnomalyScoreFilter, SamIoUFilter, build_score_model, load_sam
from generation.object_bank import ADE20KObjectBank, ObjectBank
from generation.paste import paste_on_road
from generation.prompts import check_prompt_config, sample_prompt
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
        cfg = self.cfg
        label = check_train_label(read_label(item.label_path), str(item.label_path), allow_anomaly=False)
        base_condition = self.condition_of(item, label)
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
        rejections: Counter = Counter()
        for attempt in range(cfg.max_attempts):
            seed = item_seed(cfg.seed, item.stem, attempt)
            rng = np.random.default_rng(seed)
            obj = self.object_bank.sample(rng)
            pasted = paste_on_road(
                base_condition,
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
                record.update(
                    status="skipped", reason="no road pixel inside the smallest margin", retries=attempt
                )
                return Generated(status="skipped", record=record, rejections=rejections)
            text = prompt.text(cfg.prompt, obj.name)
            record.update(
                prompt=text, anomaly_class=obj.name, ade_index=obj.ade_index, seed=seed, retries=attempt
            )
            image = self.backend.render(pasted.condition, text, prompt.negative, seed)
            mask, iou, score = pasted.mask, None, None
            if self.sam_filter is not None:
                verdict = self.sam_filter(image, mask)
                iou = verdict.value
                if not verdict.passed:
                    rejections["sam"] += 1
                    continue
                mask = verdict.mask
            if self.score_filter is not None:
                verdict = self.score_filter(image, mask)
                score = verdict.value
                if not verdict.passed:
                    rejections["score"] += 1
                    continue
            out_label = label.copy()
            out_label[mask] = ANOMALY
            record.update(status="generated", iou=iou, score=score, rejections=dict(rejections))
            return Generated(
                status="generated",
                record=record,
                domain=prompt.domain.tag,
                image=image,
                label=out_label,
                condition=pasted.condition,
                rejections=rejections,
            )
        reason = ", ".join(f"{k} x{v}" for k, v in sorted(rejections.items()))
        record.update(status="skipped", reason=f"rejected in all {cfg.max_attempts} attempts ({reason})")
        record.update(iou=None, score=None, rejections=dict(rejections))
        return Generated(status="skipped", record=record, rejections=rejections)


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
