"""The Cityscapes-layout input of CG-Aug and its deterministic split into shards.

Input: ``{root}/gtFine/{split}/{city}/{stem}_gtFine_labelTrainIds.png`` (and ``*_gtFine_color.png``
when the condition is built from colour maps). Items are sorted by (city, stem); shard ``i`` of ``N``
takes every ``N``-th item starting at ``i``, so ``N`` shards cover every item exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lib.config import ConfigError
from lib.errors import UserError

LABEL_SUFFIX = "_gtFine_labelTrainIds.png"
COLOR_SUFFIX = "_gtFine_color.png"
CONDITION_SOURCES = ("color", "trainIds")


@dataclass(frozen=True)
class SourceItem:
    """One Cityscapes image to augment; ``stem`` is ``{city}_{seq}_{frame}``."""

    split: str
    city: str
    stem: str
    label_path: Path
    color_path: Path | None


def list_source_items(
    root: str | Path, split: str, cities: list[str], condition_from: str
) -> list[SourceItem]:
    """All items of ``split`` (restricted to ``cities`` if given), sorted; missing files are errors."""
    if condition_from not in CONDITION_SOURCES:
        raise ConfigError(
            f"source.condition_from: unknown {condition_from!r}; expected one of {CONDITION_SOURCES}"
        )
    split_dir = Path(root) / "gtFine" / split
    if not split_dir.is_dir():
        raise FileNotFoundError(
            f"label folder not found: {split_dir}\nexpected {root}/gtFine/{split}/<city>/<stem>{LABEL_SUFFIX}"
        )
    city_dirs = (
        [split_dir / c for c in cities] if cities else sorted(p for p in split_dir.iterdir() if p.is_dir())
    )
    items = []
    for city_dir in city_dirs:
        if not city_dir.is_dir():
            raise FileNotFoundError(f"city folder not found: {city_dir}")
        for label_path in sorted(city_dir.glob(f"*{LABEL_SUFFIX}")):
            stem = label_path.name[: -len(LABEL_SUFFIX)]
            color_path = None
            if condition_from == "color":
                color_path = city_dir / f"{stem}{COLOR_SUFFIX}"
                if not color_path.is_file():
                    raise FileNotFoundError(
                        f"colour map not found: {color_path} (source.condition_from=color); use "
                        "source.condition_from=trainIds for datasets without colour maps"
                    )
            items.append(SourceItem(split, city_dir.name, stem, label_path, color_path))
    if not items:
        raise FileNotFoundError(f"no *{LABEL_SUFFIX} files under {split_dir}")
    return items


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/N"`` -> ``(i, N)`` with ``0 <= i < N``."""
    try:
        index, count = (int(v) for v in text.split("/"))
    except ValueError:
        raise UserError(f"--shard: expected i/N (e.g. 0/4), got {text!r}") from None
    if not 0 <= index < count:
        raise UserError(f"--shard: need 0 <= i < N, got {text!r}")
    return index, count


def shard_items(items: list[SourceItem], index: int, count: int) -> list[SourceItem]:
    """The items of shard ``index`` of ``count`` (every ``count``-th, starting at ``index``)."""
    return items[index::count]
