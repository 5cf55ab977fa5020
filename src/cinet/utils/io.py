"""Atomic file writes: a temporary file in the same folder, fsync, then ``os.replace``.

A crash or SIGKILL in the middle of a write leaves the previous file intact (never a half-written one); SIGINT and
SIGTERM wait for the end of the write.
Used for checkpoints, metrics.json, config.yaml and predictions.
"""

from __future__ import annotations

import contextlib
import json
import os
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
    path.parent.mkdir(parents=True, exist_ok=True)
    with deferred():  # SIGINT / SIGTERM wait for the end of the write (cinet.utils.signals)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
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
            if isinstance(exc, OSError) and exc.filename is None and exc.errno is not None:
                # e.g. ENOSPC from write(): name the destination, so that the CLI reports it as one line
                raise type(exc)(exc.errno, exc.strerror, str(path)) from exc
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
