"""Step 7 of CG-Aug: write the generated dataset in Cityscapes layout, atomically and resumably.

Under the output root::

    leftImg8bit/{split}/{city}/{stem}{domain}_leftImg8bit.png          generated image
    gtFine/{split}/{city}/{stem}{domain}_gtFine_labelTrainIds.png      original trainIds, object = ANOMALY
    condition/{split}/{city}/{stem}{domain}_condition.png              ADE20K-palette map with the object
    metadata/shard-{i}-of-{N}.jsonl                                    one JSON line per finished item
    metadata.jsonl                                                     all shards' lines, sorted by stem

Every file is written through :mod:`lib.atomic`, so a killed run never leaves a half-written PNG.
An item's metadata line is appended only after its files are in place, and an item is finished when
a line in any shard file records it *and* the files that line names exist (a skipped item names
none: the seeds are deterministic, so a retry would give the same result). A line whose files are
missing (deleted after the run) is logged and its item generated again; ``metadata.jsonl`` keeps,
per item, the last line whose files exist. A last line torn by a kill during the append is cut from
this shard's file on the next run (that item is generated again) and skipped in other shards' files;
any other line that is not a metadata record is an error naming the file and line. Each shard
appends to its own file, so shards may run at the same time on one output root.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from generation.source import SourceItem
from lib.atomic import write_bytes_atomic
from lib.data.image_file import read_file_bytes
from lib.data.io import encode_png
from lib.errors import UserError

log = logging.getLogger(__name__)

STATUSES = ("generated", "skipped")
RECORD_FORM = (
    "a JSON object with string split, city and stem, status 'generated' or 'skipped', and (when "
    "generated) files: a mapping with the image and label paths"
)


def check_record(record: object, where: str) -> dict:
    """Return ``record`` if it is a metadata record (see :data:`RECORD_FORM`), else raise naming ``where``."""
    ok = (
        isinstance(record, dict)
        and all(isinstance(record.get(k), str) for k in ("split", "city", "stem"))
        and record.get("status") in STATUSES
    )
    if ok and record["status"] == "generated":
        files = record.get("files")
        ok = (
            isinstance(files, dict)
            and {"image", "label"} <= files.keys()
            and all(isinstance(v, str) for v in files.values())
        )
    if not ok:
        raise UserError(
            f"{where}: expected a metadata record ({RECORD_FORM}); got {json.dumps(record)[:120]}"
        )
    return record


def parse_jsonl(path: Path) -> tuple[list[tuple[int, dict]], int]:
    """``(line number, record)`` of each line of ``path``, and the byte offset where a torn last line
    starts (the file's length if there is none). A bad line before the last is an error."""
    data = read_file_bytes(path, "metadata")
    records: list[tuple[int, dict]] = []
    pos, number = 0, 0
    while pos < len(data):
        newline = data.find(b"\n", pos)
        stop = len(data) if newline < 0 else newline + 1
        line, number = data[pos:stop], number + 1
        if line.strip():
            try:
                record = json.loads(line)
            except ValueError:  # JSONDecodeError and UnicodeDecodeError
                if data[stop:].strip():
                    raise UserError(f"{path}:{number}: not a JSON line; expected {RECORD_FORM}") from None
                return records, pos
            records.append((number, check_record(record, f"{path}:{number}")))
        pos = stop
    return records, len(data)


class DatasetWriter:
    """Writes items of one shard under ``root``; see the module docstring for the layout."""

    def __init__(
        self, *, root: str | Path, shard: tuple[int, int] = (0, 1), save_condition: bool = True
    ) -> None:
        self.root = Path(root)
        self.save_condition = save_condition
        self.part = self.root / "metadata" / f"shard-{shard[0]}-of-{shard[1]}.jsonl"
        self.repair_torn_end()

    def paths(self, item: SourceItem, domain: str) -> dict[str, Path]:
        """Output files of ``item`` with domain tag ``domain``."""
        name = f"{item.stem}{domain}"
        rel = Path(item.split) / item.city
        return {
            "image": self.root / "leftImg8bit" / rel / f"{name}_leftImg8bit.png",
            "label": self.root / "gtFine" / rel / f"{name}_gtFine_labelTrainIds.png",
            "condition": self.root / "condition" / rel / f"{name}_condition.png",
        }

    def located_records(self) -> list[tuple[str, dict]]:
        """``("file:line", record)`` of every shard file, in file then line order (torn ends left out)."""
        parts = sorted((self.root / "metadata").glob("shard-*.jsonl"))
        return [(f"{p}:{n}", r) for p in parts for n, r in parse_jsonl(p)[0]]

    def missing_files(self, record: dict) -> list[Path]:
        """The files a record names that do not exist (none for a skipped item)."""
        files = record.get("files", {}) if record["status"] == "generated" else {}
        return [self.root / f for f in files.values() if not (self.root / f).is_file()]

    def finished(self) -> set[tuple[str, str]]:
        """(split, stem) of the items with a metadata line whose files exist; the others are logged."""
        done, stale = set(), {}
        for where, record in self.located_records():
            key = (record["split"], record["stem"])
            missing = self.missing_files(record)
            if missing:
                stale.setdefault(key, (where, missing[0]))
            else:
                done.add(key)
        for key, (where, missing) in sorted(stale.items()):
            if key not in done:
                log.warning(
                    "%s: %s is recorded as done but %s is missing; generating it again",
                    where,
                    key[1],
                    missing,
                )
        return done

    def repair_torn_end(self) -> None:
        """Cut a last line left unfinished by a killed run from this shard's file (its item is redone)."""
        if not self.part.is_file():
            return
        data = self.part.read_bytes()
        kept = data[: parse_jsonl(self.part)[1]]
        if len(kept) < len(data):
            torn = data[len(kept) :]
            log.warning("%s: dropped a torn last line %r left by a stopped run", self.part, torn[:60])
        if kept and not kept.endswith(b"\n"):
            kept += b"\n"  # a whole record whose newline was not written yet
        if kept != data:
            write_bytes_atomic(self.part, kept)

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
        """Rewrite ``metadata.jsonl`` from every shard's file: per item the last line whose files exist,
        sorted by (split, stem). Returns its length."""
        latest = {(r["split"], r["stem"]): r for _, r in self.located_records() if not self.missing_files(r)}
        text = "".join(json.dumps(latest[k], sort_keys=True) + "\n" for k in sorted(latest))
        write_bytes_atomic(self.root / "metadata.jsonl", text.encode("utf-8"))
        return len(latest)
