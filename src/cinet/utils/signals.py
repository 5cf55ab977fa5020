"""SIGINT and SIGTERM: one clean stop for every command, whoever sends the signal.

Ctrl-C in a terminal, ``timeout``, ``kill``, SLURM pre-emption and systemd send the signal to the whole process
group: the main process *and* its DataLoader workers. The design:

* :func:`handle_signals` (installed by ``cinet.cli.main`` for every subcommand) turns the first SIGINT or
  SIGTERM into :class:`Interrupted` (a ``KeyboardInterrupt``), raised in the main thread; the CLI prints one
  line and exits with ``128 + signal number`` (130 for SIGINT, 143 for SIGTERM: the shell convention). Later
  signals are noted and ignored, so that a second Ctrl-C, or a scheduler repeating its SIGTERM, cannot cut the
  clean-up short.
* :func:`deferred` marks a section that must not be cut in the middle (every atomic file write of
  :mod:`cinet.utils.io`, hence every checkpoint save): a signal arriving inside it is raised when the section
  ends. A ``KeyboardInterrupt`` raised inside ``torch.save``'s C++ writer would otherwise surface as a
  ``RuntimeError`` ("unexpected pos") and a traceback.
* :func:`ignore_in_worker` is every DataLoader's ``worker_init_fn``: workers ignore both signals and are shut
  down by the main process when it stops (PyTorch's workers also exit when their parent dies), instead of
  dying first and turning the stop into "DataLoader worker ... killed by signal".
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

__all__ = ["Interrupted", "deferred", "handle_signals", "ignore_in_worker", "received", "signal_name"]

SIGNALS = (signal.SIGINT, signal.SIGTERM)

_state: dict[str, Any] = {"received": None, "raised": False, "deferring": 0, "pending": None}


def signal_name(signum: int) -> str:
    """``"SIGTERM"`` for 15 (the name of a signal number)."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class Interrupted(KeyboardInterrupt):
    """The command was stopped by SIGINT or SIGTERM.

    Args:
        signum: The signal number (``signal.SIGINT`` = 2, ``signal.SIGTERM`` = 15).
        detail: What was kept and how to continue (one line), e.g. the checkpoint and the resume command.

    Attributes:
        exit_code: ``128 + signum`` (130 for SIGINT, 143 for SIGTERM).
    """

    def __init__(self, signum: int = signal.SIGINT, detail: str = ""):
        super().__init__(signum, detail)
        self.signum = int(signum)
        self.detail = detail
        self.exit_code = 128 + self.signum

    def __str__(self) -> str:
        text = f"interrupted ({signal_name(self.signum)})"
        return f"{text}: {self.detail}" if self.detail else text


def received() -> int | None:
    """The first SIGINT / SIGTERM received since :func:`handle_signals` was entered (None: none)."""
    return _state["received"]


def _handler(signum: int, frame: FrameType | None) -> None:
    if _state["received"] is None:
        _state["received"] = signum
    if _state["raised"]:
        return  # already stopping: let the clean-up finish
    if _state["deferring"]:
        if _state["pending"] is None:
            _state["pending"] = signum
        return
    _state["raised"] = True
    raise Interrupted(signum)


@contextlib.contextmanager
def handle_signals() -> Iterator[None]:
    """Within the block, the first SIGINT / SIGTERM raises :class:`Interrupted` in the main thread.

    Does nothing outside the main thread (Python delivers signals to the main thread only). The previous
    handlers are restored on exit, and :func:`received` is None again.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    _state.update(received=None, raised=False, deferring=0, pending=None)
    for s in SIGNALS:
        signal.signal(s, _handler)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)
        _state.update(received=None, raised=False, deferring=0, pending=None)  # library use afterwards: clean


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """A section not to be cut by SIGINT / SIGTERM: a signal arriving inside is raised when it ends.

    Sections nest; only the outermost raises. Without :func:`handle_signals` (library use) it changes nothing.
    """
    _state["deferring"] += 1
    try:
        yield
    finally:
        _state["deferring"] -= 1
    pending = _state["pending"]  # reached only when the section ended normally
    if not _state["deferring"] and pending is not None and not _state["raised"]:
        _state["pending"] = None
        _state["raised"] = True
        raise Interrupted(pending)


def ignore_in_worker(worker_id: int = 0) -> None:
    """``worker_init_fn`` of every DataLoader: the worker ignores SIGINT and SIGTERM (the main process stops it).

    Args:
        worker_id: The worker's index (unused; the DataLoader passes it).
    """
    for s in SIGNALS:
        signal.signal(s, signal.SIG_IGN)
