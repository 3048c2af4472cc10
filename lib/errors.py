"""The one exception type for mistakes in the user's input.

Every entry point reports a :class:`UserError` as one line on stderr (what was wrong, which file or
key, what was expected) and exits with status 2; anything else is a programming error and keeps its
traceback. Raise it (or a subclass) wherever a file, a key or a value given by the user is wrong.
"""

from __future__ import annotations


class UserError(Exception):
    """A bad input the user can fix: a missing or malformed file, an unknown key, a wrong value."""


class UnknownNameError(UserError, KeyError):
    """A name (model, score, benchmark, stage, ...) that is not among the known ones.

    Also a ``KeyError``, as a failed lookup; unlike ``KeyError`` its text is the message, unquoted.
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""
