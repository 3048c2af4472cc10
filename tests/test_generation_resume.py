"""Resuming CG-Aug after lost files and damaged metadata: an item counts as done only while its files
exist, a torn last line is repaired, and a line that is not a metadata record is named."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from lib.errors import UserError
from tests import test_generation_cli as cli
from tests.utils import read_jsonl

source = cli.source  # the fixture of a tiny Cityscapes-layout source tree
run, stems = cli.run, cli.stems

PART = Path("metadata") / "shard-0-of-1.jsonl"


def _pngs(out: Path) -> dict[Path, bytes]:
    return {p.relative_to(out): p.read_bytes() for p in out.rglob("*.png")}


def test_item_whose_files_were_deleted_is_generated_again(source: Path, tmp_path: Path, caplog) -> None:
    out = tmp_path / "out"
    run(source, out)
    reference = _pngs(out)
    record = read_jsonl(out / PART)[1]
    (out / record["files"]["image"]).unlink()
    with caplog.at_level(logging.WARNING, logger="generation.writer"):
        summary = run(source, out)
    assert summary["already_done"] == 4 and summary["generated"] == 1
    assert (
        f"{record['stem']} is recorded as done but" in caplog.text and record["files"]["image"] in caplog.text
    )
    assert _pngs(out) == reference  # regenerated bit for bit
    merged = read_jsonl(out / "metadata.jsonl")
    assert len(merged) == 5 and {r["stem"] for r in merged} == stems(source)
    assert run(source, out)["already_done"] == 5


def test_stale_line_in_another_shards_file(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    for i in range(2):
        run(source, out, "--shard", f"{i}/2")
    gone = read_jsonl(out / "metadata" / "shard-1-of-2.jsonl")[0]
    (out / gone["files"]["label"]).unlink()
    summary = run(source, out)  # one shard now: redoes the item whose label is gone
    assert summary["already_done"] == 4 and summary["generated"] == 1
    merged = read_jsonl(out / "metadata.jsonl")
    assert len(merged) == 5 and all((out / r["files"]["label"]).is_file() for r in merged)


@pytest.mark.parametrize(
    "torn",
    [
        '{"city": "aachen", "sp',  # killed mid-append
        '{"city": "aachen", "sp\n',  # ... with a newline after it: once a permanent error
        "\x00" * 40,  # file length extended, data never written
    ],
)
def test_torn_last_line_is_repaired(source: Path, tmp_path: Path, torn: str) -> None:
    out = tmp_path / "out"
    run(source, out)
    reference = _pngs(out)
    lines = (out / PART).read_text().splitlines(keepends=True)
    (out / PART).write_text("".join(lines[:3]) + torn)
    summary = run(source, out)
    assert summary["already_done"] == 3 and summary["generated"] == 2
    assert len(read_jsonl(out / PART)) == 5 and (out / PART).read_bytes().endswith(b"}\n")
    assert _pngs(out) == reference
    assert run(source, out)["already_done"] == 5


def test_record_without_its_newline_is_kept(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run(source, out)
    text = (out / PART).read_text()
    (out / PART).write_text(text.rstrip("\n"))
    assert run(source, out)["already_done"] == 5
    assert (out / PART).read_text() == text


def test_empty_object_line_names_file_and_line(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run(source, out)
    lines = (out / PART).read_text().splitlines(keepends=True)
    (out / PART).write_text("".join([*lines[:2], "{}\n", *lines[2:]]))
    with pytest.raises(
        UserError, match=r"shard-0-of-1\.jsonl:3: expected a metadata record \(a JSON object with"
    ):
        run(source, out)
    (out / PART).write_text("".join([*lines, "{}\n"]))  # last line too: a whole line, not a torn one
    with pytest.raises(UserError, match=r"shard-0-of-1\.jsonl:6: expected a metadata record .*got \{\}"):
        run(source, out)


def test_garbled_line_before_the_last_names_file_and_line(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run(source, out)
    lines = (out / PART).read_text().splitlines(keepends=True)
    (out / PART).write_text("".join([lines[0], lines[1][:15] + "\n", *lines[2:]]))
    with pytest.raises(UserError, match=r"shard-0-of-1\.jsonl:2: not a JSON line; expected a JSON object"):
        run(source, out)


def test_truncated_source_label_map_is_named(source: Path, tmp_path: Path) -> None:
    label = sorted(source.rglob("*_labelTrainIds.png"))[2]
    data = label.read_bytes()
    label.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match=rf"{label.name}: truncated label file"):
        run(source, tmp_path / "out")
