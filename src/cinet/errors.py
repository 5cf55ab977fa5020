"""User-facing errors.

Every problem caused by the user's input (a missing or corrupt file, a bad config key or value, a checkpoint
that does not fit) is raised as a :class:`CinetError` subclass with a one-line message that names the file or
key and says what is wrong. The CLI prints that line and exits with code 2 (no traceback unless ``--debug``).
"""

from __future__ import annotations

from pathlib import Path


class CinetError(Exception):
    """Base class of all user-facing errors (CLI exit code 2)."""

    exit_code = 2


class ConfigError(CinetError):
    """Unknown config key, value of the wrong type, inconsistent settings."""


class DataError(CinetError):
    """Missing, corrupt or inconsistent dataset files."""


class CheckpointError(CinetError):
    """Missing, truncated or mismatched checkpoint."""


class InputError(CinetError):
    """Bad input to predict / export (not an image, unwritable output, ...)."""


def where(path: str | Path, msg: str) -> str:
    """Format ``"<path>: <msg>"`` — the one-line convention used by every error."""
    return f"{path}: {msg}"
