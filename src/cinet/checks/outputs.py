"""Outputs: refuse, before any work, an output that cannot be written or that would replace an input.

:func:`check_writable_dir` (every command that writes a folder: ``train``'s run directory, ``eval``, ``predict``,
``data preview``, ``export --pretrained``'s parent, ``ablate``), :func:`check_output_file` (a named output file:
``export --onnx`` and its INT8 files, ``bench --out``, ``bench inference --onnx``, ``eval``'s ``metrics.json``:
not a folder, its folder writable, and an existing file only replaced when it is what cinet writes there — an
ONNX model, a JSON object with cinet's keys: :func:`check_replaceable`), :func:`check_not_an_input` (a named output file that is one of the command's inputs:
``export --onnx`` onto the checkpoint, ``eval``'s ``metrics.json``, ``bench --out``), :func:`ensure_output_dir`
(``predict``, ``export``: the folder made and a file written there, after every input check), :func:`check_run_dir`
(``train``: an existing run directory without ``--resume`` / ``--overwrite``, a folder ``cinet train`` did not
make). Creating nothing before the
work starts is the rule: a refused command leaves the disk as it was. The writes themselves are atomic
(:mod:`cinet.utils.io`).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Literal

from cinet.engine.distributed import global_rank
from cinet.engine.rundir import STATE_FILE, foreign_entries, is_run_dir
from cinet.errors import ConfigError, InputError
from cinet.utils.io import blocking_file

__all__ = [
    "CINET_PLY_COMMENT",
    "CINET_PNG_MARK",
    "check_new_folder",
    "check_not_an_input",
    "check_output_file",
    "check_own_outputs",
    "check_replaceable",
    "check_run_dir",
    "check_writable_dir",
    "ensure_output_dir",
    "is_cinet_file",
    "is_onnx_model",
]

#: The largest existing JSON file :func:`check_replaceable` reads to see what it is (cinet writes small ones).
MAX_JSON_BYTES = 64 << 20


def _nearest_existing(path: Path) -> Path:
    """``path`` itself if it exists, else its nearest existing ancestor."""
    probe = path.absolute()
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    return probe


def _read_only(folder: Path) -> bool:
    """Whether ``folder`` lies on a file system mounted read-only (what ``EROFS`` reports)."""
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (AttributeError, OSError):  # no statvfs (Windows), or it failed: say "no write permission"
        return False


def _write_denied(folder: Path) -> str | None:
    """Why no file can be created in the existing folder ``folder``, in words; ``None`` when one can."""
    if os.access(folder, os.W_OK | os.X_OK):
        return None
    if _read_only(folder):
        return f"read-only file system at {folder}"
    return f"no write permission on {folder}"


def check_writable_dir(path: str | Path, what: str = "output folder") -> None:
    """Raise :class:`cinet.errors.InputError` naming ``path`` if it cannot be (or become) a writable folder.

    Creates nothing: the nearest existing ancestor must be a folder the process may write into. Commands
    call this before any long work, so that an unwritable output fails at once instead of at the end. A
    read-only file system (``EROFS``) is reported as such, a folder without write permission (``EACCES``) as
    ``no write permission on ...``.
    """
    target = Path(path).absolute()
    probe = _nearest_existing(target)
    if not probe.is_dir():
        detail = "is a file" if probe == target else f"{probe} is a file, not a folder"
        raise InputError(f"{path}: {what} cannot be created ({detail})")
    reason = _write_denied(probe)
    if reason is not None:
        raise InputError(f"{path}: {what} is not writable ({reason})")


def is_onnx_model(path: str | Path) -> bool:
    """Whether the file ``path`` holds an ONNX model (a ``ModelProto`` with a graph), read without its external data.

    Cheap on any other file: every protobuf writer puts ``ir_version`` (field 1, a varint: byte ``0x08``) first,
    so a file that starts otherwise is refused from its first byte; one that does is parsed with ``onnx``.
    """
    try:
        with open(path, "rb") as fh:
            if fh.read(1) != b"\x08":
                return False
            data = fh.read()
    except OSError:
        return False
    import onnx

    model = onnx.ModelProto()
    try:
        model.ParseFromString(b"\x08" + data)
    except Exception:  # google.protobuf.message.DecodeError and kin: not a protobuf of this type
        return False
    return model.ir_version > 0 and model.HasField("graph")


def _json_object(path: Path) -> dict | None:
    """The JSON object in ``path``; ``None`` when it is not one (or too large to be one of cinet's)."""
    try:
        if path.stat().st_size > MAX_JSON_BYTES:
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # UnicodeDecodeError is a ValueError
        return None
    return data if isinstance(data, dict) else None


def check_replaceable(
    path: str | Path, kind: Literal["onnx", "json"], what: str, keys: Iterable[str] = ()
) -> None:
    """Refuse to replace an existing file that is not what cinet writes there (a user's text file, a photo).

    Replacing a previous output of the same kind stays allowed (a new export over the last one).

    Args:
        path: The output file; nothing is checked when it does not exist.
        kind: ``"onnx"``: an ONNX model (:func:`is_onnx_model`); ``"json"``: a JSON object holding ``keys``.
        what: What cinet writes there, for the message (``"--onnx"``, ``"bench --out JSON"``).
        keys: ``"json"``: keys every such file of cinet's has (``"benchmark"``).

    Raises:
        InputError: Naming the file; the file is left as it is.
    """
    path = Path(path)
    if not path.is_file():
        return
    if kind == "onnx":
        if is_onnx_model(path):
            return
        found = "an ONNX model"
    else:
        keys = tuple(keys)
        data = _json_object(path)
        if data is not None and all(k in data for k in keys):
            return
        found = "a JSON object" + (f" with {', '.join(repr(k) for k in keys)}" if keys else "")
    raise InputError(
        f"{path}: exists and is not {found} ({what} would replace it); move it away or choose another path"
    )


def check_new_folder(path: str | Path, what: str = "output folder") -> None:
    """Refuse, before any work and creating nothing, a folder that is to appear whole (:func:`cinet.utils.io.atomic_dir`).

    It must be absent or an empty folder, and the folder above it writable (a temporary folder is made there,
    then renamed into place).

    Raises:
        InputError: One line naming ``path``: a file, a folder with files, a file in the way above it, a
            read-only file system or a folder without write permission above it.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"{path}: is a file, not a folder ({what}: give an absent or empty folder)")
    if path.is_dir() and any(path.iterdir()):
        raise InputError(f"{path}: exists and is not an empty folder (nothing written)")
    _check_creatable(path, f"{what} cannot be created")


def _check_creatable(path: Path, failure: str) -> None:
    """Raise ``InputError("<path>: <failure> (<why>)")`` when no file or folder can be created at ``path``: a file
    stands where a folder above it should be, or the nearest existing folder above it is not writable."""
    blocker = blocking_file(path)
    if blocker is not None:
        raise InputError(f"{path}: {failure} ({blocker} is a file, not a folder)")
    reason = _write_denied(_nearest_existing(path.absolute().parent))
    if reason is not None:
        raise InputError(f"{path}: {failure} ({reason})")


def check_output_file(
    path: str | Path,
    what: str,
    kind: Literal["onnx", "json"] | None = None,
    keys: Iterable[str] = (),
) -> None:
    """Refuse, before any work and creating nothing, an output *file* that cannot be written.

    The path must not be a folder, its folder must exist or be creatable below a folder the process may write
    into (a file in the way is named: ``notes.txt is a file, not a folder``), and an existing file is replaced
    only when it is what cinet writes there (:func:`check_replaceable`, when ``kind`` is given).

    Args:
        path: The output file (``--out``, ``--onnx``).
        what: The option or role, for the messages (``"--out"``, ``"INT8 model"``).
        kind: What the file holds (``"onnx"`` or ``"json"``); ``None``: any existing file may be replaced.
        keys: ``kind="json"``: the keys cinet's file has.

    Raises:
        InputError: One line naming ``path``.
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not a file ({what})")
    _check_creatable(path, "cannot be written")
    if kind is not None:
        check_replaceable(path, kind, what, keys)


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


def ensure_output_dir(out: Path) -> None:
    """Create ``out`` and check that a file can be written there (InputError naming it otherwise).

    Called after every input check (``cinet predict``); :func:`check_writable_dir` has already refused an
    output that cannot be created, without creating anything (and runs again here: the clearest words for a
    file in the way or a read-only file system, should the disk have changed meanwhile).
    """
    check_writable_dir(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise InputError(f"{out}: output folder is not writable ({reason[:1].lower()}{reason[1:]})") from exc


def check_run_dir(run_dir: str | Path, *, resume: bool, overwrite: bool, stage: int | None) -> None:
    """Refuse, before any work, a run directory that cannot be used as asked.

    :func:`cinet.engine.rundir.prepare_run_dir` then creates it, or empties it for ``overwrite``, without checking
    again. Under DDP, only global rank 0 refuses an existing run directory (the other processes find the one
    rank 0 made).

    Args:
        run_dir: The run directory (``--run-dir``, ``--resume``).
        resume: Continue the run in ``run_dir``.
        overwrite: Replace an existing run directory (or, with ``stage``, that stage).
        stage: ``stage=N``: train one stage into an existing run directory.

    Raises:
        ConfigError: Resuming a folder that is not a run directory; an existing run directory without
            ``--resume`` / ``--overwrite``; a stage that already has a checkpoint; overwriting a folder that
            ``cinet train`` did not make.
    """
    run_dir = Path(run_dir)
    if resume:
        if not is_run_dir(run_dir):
            raise ConfigError(f"{run_dir}: not a cinet run directory (no {STATE_FILE}); nothing to resume")
        return
    if stage is not None and is_run_dir(
        run_dir
    ):  # one stage into an existing run (e.g. stage=2 after stage 1)
        stage_dir = run_dir / f"stage{stage}"
        if (stage_dir / "last.ckpt").exists() and not overwrite:
            raise ConfigError(
                f"{stage_dir}: stage {stage} already has a checkpoint (use --resume {run_dir} or --overwrite)"
            )
        return
    if global_rank() == 0 and run_dir.is_dir() and any(run_dir.iterdir()):
        if not overwrite:
            raise ConfigError(
                f"{run_dir}: run directory exists (use --resume {run_dir} to continue it, or --overwrite)"
            )
        if not is_run_dir(run_dir):
            raise ConfigError(f"{run_dir}: exists and is not a cinet run directory; refusing to overwrite it")
        foreign = foreign_entries(run_dir)
        if foreign:  # a user's folder that merely holds a config.yaml: its other files would be deleted
            shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
            raise ConfigError(
                f"{run_dir}: holds files cinet train did not write ({shown}); refusing to overwrite it "
                "(nothing deleted): choose another --run-dir, or move them"
            )


#: The PNG text entry (key, value) on every PNG ``cinet predict`` (and ``cinet serve``) writes: what marks it as cinet's.
CINET_PNG_MARK = ("Software", "cinet")
#: The word that opens a header comment of every PLY ``cinet predict`` writes (``comment cinet <image name>``).
CINET_PLY_COMMENT = "cinet"
#: The most bytes of a PLY header read to find :data:`CINET_PLY_COMMENT`.
MAX_PLY_HEADER_BYTES = 64 << 10
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _is_cinet_png(path: Path) -> bool:
    """Whether ``path`` is a PNG carrying the text entry :data:`CINET_PNG_MARK` (read from its header chunks)."""
    try:
        with open(path, "rb") as fh:
            if fh.read(len(_PNG_SIGNATURE)) != _PNG_SIGNATURE:
                return False
        from PIL import Image

        with Image.open(path) as img:
            key, value = CINET_PNG_MARK
            return img.info.get(key) == value
    except Exception:  # OSError, PIL's UnidentifiedImageError / SyntaxError on a broken file: not cinet's
        return False


def _is_cinet_ply(path: Path) -> bool:
    """Whether ``path`` is a PLY whose header has a ``comment cinet ...`` line (:data:`CINET_PLY_COMMENT`)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(MAX_PLY_HEADER_BYTES)
    except OSError:
        return False
    if not head.startswith(b"ply\n") or b"end_header\n" not in head:
        return False
    lines = head[: head.index(b"end_header\n")].decode("ascii", errors="replace").splitlines()
    return any(line.split()[:2] == ["comment", CINET_PLY_COMMENT] for line in lines)


def is_cinet_file(path: str | Path) -> bool:
    """Whether the existing file ``path`` is one ``cinet predict`` wrote: a ``.png`` with :data:`CINET_PNG_MARK`,
    a ``.ply`` with a ``comment cinet`` header line. Any other file (a folder too) is not."""
    path = Path(path)
    if not path.is_file():
        return False
    suffix = path.suffix.lower()
    if suffix == ".png":
        return _is_cinet_png(path)
    if suffix == ".ply":
        return _is_cinet_ply(path)
    return False


def check_own_outputs(paths: Iterable[str | Path], what: str) -> None:
    """Refuse, before any work, to replace an existing file at one of ``paths`` that cinet did not write.

    A file cinet wrote (:func:`is_cinet_file`: an earlier run into the same folder) may be replaced; anything
    else standing at an output path (the user's own ``room_depth.png``, a folder) stops the command.

    Args:
        paths: Every file the command will write.
        what: The command, for the message (``"cinet predict"``).

    Raises:
        InputError: One line naming the first such path; nothing is written.
    """
    for path in paths:
        path = Path(path)
        if (path.exists() or path.is_symlink()) and not is_cinet_file(path):
            found = "is a folder" if path.is_dir() else "exists"
            raise InputError(
                f"{path}: {found} and was not written by {what} (nothing written); move it or choose another --out"
            )
