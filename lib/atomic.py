"""The one atomic file writer: a finished file appears at once, or not at all.

Each write goes to a temporary sibling whose name can never match a reader's pattern (a leading dot
and a ``.tmp`` ending), is flushed to disk and renamed over the target. The target gets the usual
mode of a new file (0666 minus the umask), not the 0600 of a temporary file, so other users of a
shared machine can read results, images and checkpoints. :func:`make_folder` creates an output
folder; a file standing where a folder is needed is a user error that says so.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from lib.errors import UserError


def _default_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def make_folder(path: str | os.PathLike, what: str = "output folder") -> Path:
    """Create the folder ``path`` with its parents; a file in the way is a ``UserError`` naming it.

    ``what`` names the folder for the user, e.g. ``"--out"``.
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
        if blocker is None:
            raise
        where = f"{what} {path}" if blocker == path else f"{what} {path}: {blocker}"
        raise UserError(f"{where} is a file, not a folder") from None
    return path


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", encoding: str | None = None) -> Iterator[IO]:
    """Yield a file open for writing; on a clean exit it becomes ``path``, on an error it is removed.

    ``mode`` is ``"wb"`` or ``"w"`` (text, ``encoding`` defaults to UTF-8). Parent folders are created;
    a folder at ``path`` is a ``UserError``.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_open writes files only (mode 'w' or 'wb'), got {mode!r}")
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path} is a folder; expected the path of a file to write")
    make_folder(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        if mode == "w":
            handle = os.fdopen(fd, "w", encoding=encoding or "utf-8", newline="")
        else:
            handle = os.fdopen(fd, "wb")
        with handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, _default_mode())
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and return the path."""
    with atomic_open(path, "wb") as handle:
        handle.write(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically and return the path."""
    with atomic_open(path, "w") as handle:
        handle.write(text)
    return Path(path)
