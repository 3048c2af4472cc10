"""Where pretrained generation models come from: a local folder, or a model id already in the user's
Hugging Face cache. Loads pass ``local_files_only=True``; nothing is downloaded implicitly."""

from __future__ import annotations

from pathlib import Path


def resolve_model_path(path: str, kind: str) -> str:
    """Return ``path`` as a folder (``~`` expanded) or as a ``owner/name`` hub id.

    Anything that looks like a file-system path (starts with ``.``, ``/`` or ``~``, or has more than
    one ``/``) but is not a folder is a ``FileNotFoundError`` naming ``kind``.
    """
    expanded = Path(path).expanduser()
    if expanded.is_dir():
        return str(expanded)
    if not path or path.startswith((".", "/", "~")) or path.count("/") > 1:
        raise FileNotFoundError(f"{kind} folder not found: {path!r}")
    return path


def missing_model_error(kind: str, path: str, err: Exception) -> FileNotFoundError:
    """The error raised when a model cannot be loaded from ``path`` without the network."""
    return FileNotFoundError(
        f"{kind} not found at {path!r} (a local folder in diffusers/transformers layout, or a model id "
        f"already in the Hugging Face cache; nothing is downloaded): {type(err).__name__}: {err}"
    )
