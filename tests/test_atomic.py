"""The one atomic writer: complete files, usual permissions, no leftovers on failure."""

import os
import stat

import pytest

from lib.atomic import atomic_open, write_bytes_atomic, write_text_atomic


def test_written_file_has_umask_mode(tmp_path):
    old = os.umask(0o022)
    try:
        path = write_bytes_atomic(tmp_path / "sub" / "a.bin", b"abc")
    finally:
        os.umask(old)
    assert path.read_bytes() == b"abc"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_text_round_trip_and_replace(tmp_path):
    path = tmp_path / "r.json"
    write_text_atomic(path, "first")
    write_text_atomic(path, "ünïcode")
    assert path.read_text(encoding="utf-8") == "ünïcode"
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_failure_keeps_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "keep.png"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_open(path) as handle:
        handle.write(b"partial")
        raise RuntimeError("killed")
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.png"]


def test_temporary_name_never_matches_reader_pattern(tmp_path):
    with atomic_open(tmp_path / "x.png") as handle:
        handle.write(b"1")
        assert list(tmp_path.glob("*.png")) == []
