"""Name -> object tables: every choice a config makes by name (models, train steps, anomaly scores,
benchmarks, post-processing, augmentations, optimizers, export formats, protocols, generation
backends). A module of one's own adds entries with the table's ``register`` decorator.

Each table registers entries with a decorator and answers lookups; an unknown name is an
:class:`~lib.errors.UnknownNameError` (a user error and a ``KeyError``) that names the closest
registered name and lists them all. Modules named in ``modules`` register their entries on import
and are imported on the first lookup, so importing a table stays cheap.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from lib.errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """Entries of one ``kind`` (e.g. "model"); ``key`` names the config key that selects one."""

    def __init__(self, kind: str, *, key: str | None = None, modules: Sequence[str] = ()) -> None:
        self.kind = kind
        self.key = key or kind
        self.modules = tuple(modules)
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: register the decorated object as ``name``; a second, different one is an error."""

        def wrap(entry: T) -> T:
            if name in self._entries and self._entries[name] is not entry:
                raise KeyError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = entry
            return entry

        return wrap

    def _load(self) -> None:
        for module in self.modules:
            importlib.import_module(module)

    def names(self) -> list[str]:
        """All registered names, sorted."""
        self._load()
        return sorted(self._entries)

    def get(self, name: str) -> T:
        """The entry registered as ``name``."""
        self._load()
        if name not in self._entries:
            close = difflib.get_close_matches(name, list(self._entries), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            known = ", ".join(sorted(self._entries))
            raise UnknownNameError(f"unknown {self.key} {name!r}.{hint} Known {self.kind}s: {known}")
        return self._entries[name]
