"""Atomic file writes: a temporary file in the same folder, fsync, then ``os.replace``.

A crash or SIGKILL in the middle of a write leaves the previous file intact (never a half-written one); SIGINT and
SIGTERM wait for the end of the write.
Used for checkpoints, metrics.json, config.yaml and predictions; :func:`atomic_dir` does the same for a whole
folder (``cinet export --pretrained``).

A write that fails raises an ``OSError`` naming the destination the caller gave, never the hidden temporary
name (``/out/b.json: cannot write (read-only file system)``, not ``/out/.b.json.x7f3.tmp: Read-only file
system``): :func:`write_error`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Collection, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from cinet.utils.signals import deferred


def _file_mode(path: Path) -> int:
    """Permission bits for ``path``: those of the file it replaces, else ``0o666`` minus the umask."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        mask = os.umask(0)
        os.umask(mask)
        return 0o666 & ~mask


def blocking_file(path: str | Path) -> Path | None:
    """The existing *file* that stands where a folder above ``path`` should be (``a.txt`` for ``a.txt/b/c``).

    ``None`` when the nearest existing ancestor of ``path`` is a folder. Named as ``path`` names it (relative
    stays relative).
    """
    probe = Path(path).parent
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    return None if probe.is_dir() else probe


def write_error(exc: OSError, path: str | Path) -> OSError:
    """The error to raise when writing ``path`` failed with ``exc``: names ``path`` and says why, in words.

    ``exc`` may name a temporary file or folder the user never gave (``.b.json.x7f3.tmp``) or nothing at all
    (``write()`` on a full disk); the result names the destination the caller gave, with the errno kept (the
    same ``OSError`` subclass), so that the CLI prints ``<path>: cannot write (read-only file system)``.

    Args:
        exc: What the write raised.
        path: The destination the caller gave.

    Returns:
        A new ``OSError`` (``errno``, ``"cannot write (<reason>)"``, ``str(path)``), to raise ``from exc``.
    """
    reason = exc.strerror or type(exc).__name__
    if exc.errno in (errno.ENOTDIR, errno.EEXIST) and (blocker := blocking_file(path)) is not None:
        reason = f"{blocker} is a file, not a folder"
    elif exc.errno == errno.EISDIR:
        reason = "is a folder"
    elif reason[:1].isupper() and not reason[1:2].isupper():
        reason = reason[0].lower() + reason[1:]  # "Read-only file system" -> "read-only file system"
    return OSError(exc.errno, f"cannot write ({reason})", str(path))  # OSError(errno) picks the subclass


def _names_temporary(exc: OSError, tmp: str) -> bool:
    """Whether ``exc`` names nothing, or the temporary file / folder ``tmp`` (or a file inside it)."""
    if exc.filename is None:
        return exc.errno is not None
    name = os.fsdecode(exc.filename) if isinstance(exc.filename, bytes | str) else str(exc.filename)
    return name == tmp or name.startswith(tmp.rstrip(os.sep) + os.sep)


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path``; on success it atomically replaces ``path``.

    Args:
        path: Final destination.
        mode: ``"wb"`` or ``"w"``.

    Yields:
        The open temporary file object.

    A SIGINT / SIGTERM arriving during the write is raised once the file is in place
    (:func:`cinet.utils.signals.deferred`): a checkpoint save is never cut short by a stop signal.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # names a folder above path: say which file could not be written
        raise write_error(exc, path) from exc
    with deferred():  # SIGINT / SIGTERM wait for the end of the write (cinet.utils.signals)
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        except OSError as exc:  # names the hidden temporary file: name the destination instead
            raise write_error(exc, path) from exc
        try:
            os.chmod(tmp, _file_mode(path))  # mkstemp makes 0600; keep the mode a plain open() would give
            # text is always UTF-8, whatever the locale says (user-given names may be any Unicode)
            with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as fh:
                yield fh
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException as exc:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            if isinstance(exc, OSError) and _names_temporary(exc, tmp):
                # e.g. ENOSPC from write(), EISDIR from os.replace: name the destination (one line in the CLI)
                raise write_error(exc, path) from exc
            raise


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """A temporary folder next to ``path``; filled without error, it takes the place of ``path`` in one rename.

    ``path`` must be absent or an empty folder (the caller checks; an empty one is removed first). The folder
    appears whole or not at all; on any error the temporary folder is deleted, and an ``OSError`` about it
    (creating it, writing into it, renaming it) names ``path`` (:func:`write_error`).

    Args:
        path: The folder to create.

    Yields:
        The temporary folder to write the files into.
    """
    path = Path(path)
    parent = path.absolute().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=f".{path.name}.", dir=parent)
    except OSError as exc:
        raise write_error(exc, path) from exc
    try:
        yield Path(tmp)
        if path.is_dir():
            path.rmdir()  # empty: the rename replaces it
        os.replace(tmp, path)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError) and _names_temporary(exc, tmp):
            raise write_error(exc, path) from exc
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_open(path, "w") as fh:
        fh.write(text)


def atomic_write_json(path: str | Path, obj: Any, indent: int = 2) -> None:
    """Serialise ``obj`` as JSON into ``path`` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=False) + "\n")


def atomic_save(path: str | Path, writer: Callable[[IO[bytes]], None]) -> None:
    """Call ``writer(fh)`` on a temporary binary file, then move it to ``path`` (e.g. ``torch.save``)."""
    with atomic_open(path, "wb") as fh:
        writer(fh)


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """The SHA-256 hex digest of a file, read in ``chunk``-byte pieces (what a model card and a
    ``metrics.json`` record of the checkpoint they come from)."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def allocate_stems(
    stems: Sequence[str], suffixes: Sequence[str] = ("",), *, reserved: Collection[str] = ()
) -> list[str]:
    """One output stem per input such that no two inputs' output files share a name, all decided up front.

    Input ``i`` writes ``stem_i + suffix`` for every suffix. Each input keeps its own stem when none of its
    files collides with a file of an earlier input; otherwise it gets ``<stem>_2``, ``<stem>_3``... — skipping
    every number whose stem is another input's own stem, so that a later input (``c/room_2.png``) never
    finds its name taken by a renamed earlier one (``b/room.png``). Names are compared case-folded (macOS and
    Windows file systems are case-insensitive).

    Args:
        stems: The inputs' own stems, in processing order.
        suffixes: Every suffix (with extension) an input's outputs get, e.g. ``("_depth.png", ".ply")``.
        reserved: File names no output may take, e.g. the inputs that sit in the output folder (predicting
            into the input folder never overwrites an input).

    Returns:
        The output stems, in the order of ``stems``; distinct, and ``stems[i]`` wherever possible.
    """
    own = {s.casefold() for s in stems}
    taken: set[str] = {name.casefold() for name in reserved}
    out = []
    for stem in stems:
        candidate, n = stem, 1
        while True:
            names = {(candidate + suffix).casefold() for suffix in suffixes}
            reserved = candidate != stem and candidate.casefold() in own
            if not reserved and not names & taken:
                break
            n += 1
            candidate = f"{stem}_{n}"
        taken |= names
        out.append(candidate)
    return out
