"""User-facing errors.

Every problem caused by the user's input (a missing or corrupt file, a bad config key or value, a checkpoint
that does not fit) is raised as a :class:`CinetError` subclass with a one-line message that names the file or
key and says what is wrong. The CLI prints that line and exits with code 2 (no traceback unless ``--debug``).
"""

from __future__ import annotations

import re
from pathlib import Path

# The last line of a formatted traceback: ``package.module.ErrorName: message``.
_LAST_LINE = re.compile(r"^[A-Za-z_][\w.]*: (?P<msg>.*)$")


def _unwrap_worker_message(msg: str) -> tuple[str, str | None]:
    """``(one-line message, original text or None)`` of a message re-raised by a DataLoader worker.

    ``torch.utils.data`` re-raises a worker's exception in the main process as
    ``type(exc)("Caught X in DataLoader worker process N.\nOriginal Traceback ...\nmodule.X: <message>")``;
    the user-facing line is the ``<message>`` at the end.
    """
    if not (msg.startswith("Caught ") and "\nOriginal Traceback" in msg):
        return msg, None
    for line in reversed(msg.rstrip().splitlines()):
        m = _LAST_LINE.match(line)
        if m:
            return m.group("msg"), msg
    return msg, None


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first non-empty line of ``str(exc)``, stripped, cut to ``limit`` characters; the exception's type name
    when its message is empty (what a one-line error quotes of a library's exception)."""
    line = next((part.strip() for part in str(exc).splitlines() if part.strip()), "")
    return line[:limit] if line else type(exc).__name__


def describe(exc: BaseException, limit: int = 200, *, first_sentence: bool = False) -> str:
    """``"TypeName: first line"`` of an exception (:func:`first_line`, cut to ``limit`` characters, or to its first
    sentence with ``first_sentence``); ``"TypeName"`` alone when the message is empty."""
    line = next((part.strip() for part in str(exc).splitlines() if part.strip()), "")
    if first_sentence:
        line = line.split(". ")[0]
    return f"{type(exc).__name__}: {line[:limit]}" if line else type(exc).__name__


class CinetError(Exception):
    """Base class of all user-facing errors (CLI exit code 2).

    A message re-raised by a DataLoader worker (``Caught DataError in DataLoader worker process 0 ...``) is
    reduced to the original one-line message; the worker's traceback is kept as a note (shown by ``--debug``).
    """

    exit_code = 2

    def __init__(self, *args: object) -> None:
        note = None
        if len(args) == 1 and isinstance(args[0], str):
            msg, note = _unwrap_worker_message(args[0])
            args = (msg,)
        super().__init__(*args)
        if note is not None:
            self.add_note(note)


class ConfigError(CinetError):
    """Unknown config key, value of the wrong type, inconsistent settings."""


class DataError(CinetError):
    """Missing, corrupt or inconsistent dataset files."""


class SplitNotFoundError(DataError):
    """A dataset has no such split (e.g. no ``<split>.txt`` in a folder dataset that has other split lists)."""


class CheckpointError(CinetError):
    """Missing, truncated or mismatched checkpoint."""


class InputError(CinetError):
    """Bad input to predict / export (not an image, unwritable output, ...)."""


def where(path: str | Path, msg: str) -> str:
    """Format ``"<path>: <msg>"`` — the one-line convention used by every error."""
    return f"{path}: {msg}"
