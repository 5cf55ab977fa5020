"""Outputs: refuse, before any work, an output that cannot be written or that would replace an input.

:func:`check_writable_dir` (every command that writes a folder: ``train``'s run directory, ``eval``, ``predict``,
``data preview``), :func:`check_not_an_input` (a named output file that is one of the command's inputs:
``export --onnx`` onto the checkpoint, ``eval``'s ``metrics.json``, ``bench --out``), :func:`ensure_output_dir`
(``predict``, ``export``: the folder made and a file written there, after every input check), :func:`check_run_dir`
(``train``: an existing run directory without ``--resume`` / ``--overwrite``, a folder ``cinet train`` did not
make). Creating nothing before the
work starts is the rule: a refused command leaves the disk as it was. The writes themselves are atomic
(:mod:`cinet.utils.io`).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

from cinet.engine.distributed import global_rank
from cinet.engine.rundir import STATE_FILE, is_run_dir
from cinet.errors import ConfigError, InputError

__all__ = ["check_not_an_input", "check_run_dir", "check_writable_dir", "ensure_output_dir"]


def check_writable_dir(path: str | Path, what: str = "output folder") -> None:
    """Raise :class:`cinet.errors.InputError` naming ``path`` if it cannot be (or become) a writable folder.

    Creates nothing: the nearest existing ancestor must be a folder the process may write into. Commands
    call this before any long work, so that an unwritable output fails at once instead of at the end.
    """
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
    output that cannot be created, without creating anything.
    """
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        raise InputError(
            f"{out}: output folder is not writable ({exc.strerror or type(exc).__name__})"
        ) from exc


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
