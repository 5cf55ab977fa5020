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
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
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


def check_writable_dir(path: str | Path, what: str = "output folder") -> None:
    """Raise :class:`cinet.errors.InputError` naming ``path`` if it cannot be (or become) a writable folder.

    Creates nothing: the nearest existing ancestor must be a folder the process may write into. Commands
    call this before any long work, so that an unwritable output fails at once instead of at the end.
    """
    from cinet.errors import InputError

    target = Path(path).absolute()
    probe = target
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        detail = "is a file" if probe == target else f"{probe} is a file, not a folder"
        raise InputError(f"{path}: {what} cannot be created ({detail})")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise InputError(f"{path}: {what} is not writable (no write permission on {probe})")


def check_not_an_input(
    outputs: Iterable[str | Path], inputs: Mapping[str, str | Path | Iterable[str | Path] | None]
) -> None:
    """Refuse, before anything is written, an output path that is one of the command's input files.

    Compared with :func:`os.path.samefile` (links and case-insensitive file systems included); an output
    that does not exist yet cannot be an input.

    Args:
        outputs: Every file the command will write.
        inputs: Option name -> the file it gave (``{"--checkpoint": ckpt}``), or the files it gave (a folder's
            images); ``None`` values are skipped.

    Raises:
        InputError: Naming the output and the option whose file it would replace.
    """
    from cinet.errors import InputError

    for out in outputs:
        out = Path(out)
        if not out.is_file():
            continue
        for flag, given in inputs.items():
            files = [given] if given is None or isinstance(given, (str, Path)) else list(given)
            for src in files:
                if src is None or not Path(src).is_file() or not os.path.samefile(out, src):
                    continue
                raise InputError(
                    f"{out}: is the file given with {flag}; writing there would replace it (choose another path)"
                )


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
