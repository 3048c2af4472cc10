"""Step 7 of CG-Aug: write the generated dataset in Cityscapes layout, atomically and resumably.

Under the output root::

    leftImg8bit/{split}/{city}/{stem}{domain}_leftImg8bit.png          generated image
    gtFine/{split}/{city}/{stem}{domain}_gtFine_labelTrainIds.png      original trainIds, object = ANOMALY
    condition/{split}/{city}/{stem}{domain}_condition.png              ADE20K-palette map with the object
    metadata/shard-{i}-of-{N}.jsonl                                    one JSON line per finished item
    metadata.jsonl                                                     all shards' lines, sorted by stem

Every file is written to a temporary name in its folder and renamed, so a killed run never leaves a
half-written PNG. An item's metadata line is appended only after its files are in place; an item is
finished when its stem has a line in any shard file, and reruns skip it (skipped items included: the
seeds are deterministic, so a retry would give the same result). Each shard appends to its own file,
so shards may run at the same time on one output root.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np

from generation.source import SourceItem
from lib.atomic import write_bytes_atomic


def encode_png(array: np.ndarray, source: str) -> bytes:
    """PNG bytes of a ``[H, W]`` uint8 map or an ``[H, W, 3]`` uint8 RGB image."""
    if array.dtype != np.uint8 or array.ndim not in (2, 3):
        raise ValueError(f"{source}: expected uint8 [H, W] or [H, W, 3], got {array.dtype} {array.shape}")
    pixels = cv2.cvtColor(array, cv2.COLOR_RGB2BGR) if array.ndim == 3 else array
    ok, buf = cv2.imencode(".png", pixels)
    if not ok:
        raise OSError(f"{source}: PNG encoding failed")
    return buf.tobytes()


def read_jsonl(path: Path) -> list[dict]:
    """Records of a JSON-lines file; a torn last line (killed mid-write) is ignored."""
    lines = path.read_text(encoding="utf-8").splitlines()
    records = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if i != len(lines) - 1:
                raise ValueError(f"{path}:{i + 1}: not a JSON line") from None
    return records


class DatasetWriter:
    """Writes items of one shard under ``root``; see the module docstring for the layout."""

    def __init__(
        self, *, root: str | Path, shard: tuple[int, int] = (0, 1), save_condition: bool = True
    ) -> None:
        self.root = Path(root)
        self.save_condition = save_condition
        self.part = self.root / "metadata" / f"shard-{shard[0]}-of-{shard[1]}.jsonl"
        self.drop_torn_line()

    def paths(self, item: SourceItem, domain: str) -> dict[str, Path]:
        """Output files of ``item`` with domain tag ``domain``."""
        name = f"{item.stem}{domain}"
        rel = Path(item.split) / item.city
        return {
            "image": self.root / "leftImg8bit" / rel / f"{name}_leftImg8bit.png",
            "label": self.root / "gtFine" / rel / f"{name}_gtFine_labelTrainIds.png",
            "condition": self.root / "condition" / rel / f"{name}_condition.png",
        }

    def records(self) -> list[dict]:
        """Every metadata record of every shard file."""
        parts = sorted((self.root / "metadata").glob("shard-*.jsonl"))
        return [r for p in parts for r in read_jsonl(p)]

    def finished(self) -> set[tuple[str, str]]:
        """(split, stem) of the items that already have a metadata line."""
        return {(r["split"], r["stem"]) for r in self.records()}

    def drop_torn_line(self) -> None:
        """Cut a last line left unfinished by a killed run from this shard's file."""
        if not self.part.is_file():
            return
        data = self.part.read_bytes()
        if data and not data.endswith(b"\n"):
            write_bytes_atomic(self.part, data[: data.rfind(b"\n") + 1])

    def append_record(self, record: dict) -> None:
        """Append one JSON line to this shard's file and flush it to disk."""
        self.part.parent.mkdir(parents=True, exist_ok=True)
        with open(self.part, "ab") as f:
            f.write((json.dumps(record, sort_keys=True) + "\n").encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())

    def write(
        self,
        item: SourceItem,
        domain: str,
        *,
        image: np.ndarray,
        label: np.ndarray,
        condition: np.ndarray,
        record: dict,
    ) -> dict[str, Path]:
        """Write the image, label and condition of ``item``, then its metadata line."""
        paths = self.paths(item, domain)
        write_bytes_atomic(paths["image"], encode_png(image, str(paths["image"])))
        write_bytes_atomic(paths["label"], encode_png(label, str(paths["label"])))
        if self.save_condition:
            write_bytes_atomic(paths["condition"], encode_png(condition, str(paths["condition"])))
        files = {
            k: str(p.relative_to(self.root))
            for k, p in paths.items()
            if k != "condition" or self.save_condition
        }
        self.append_record({**record, "files": files})
        return paths

    def merge_metadata(self) -> int:
        """Rewrite ``metadata.jsonl`` from every shard's file, sorted by (split, stem); returns its length."""
        records = sorted(self.records(), key=lambda r: (r["split"], r["stem"]))
        text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
        write_bytes_atomic(self.root / "metadata.jsonl", text.encode("utf-8"))
        return len(records)
