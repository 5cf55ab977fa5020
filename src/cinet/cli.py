"""The ``cinet`` command line: thin — parses, then hands over to the subcommand's module.

Each subcommand lives in a module exposing ``add_arguments(parser)`` (cheap: no torch import at module level)
and ``run(args) -> int``. User errors (:class:`cinet.errors.CinetError`, and an ``OSError`` naming a file,
e.g. an output that cannot be written) print one line and exit with code 2; ``--debug`` shows the traceback
instead. SIGINT and SIGTERM (to the process or its whole process group) stop every subcommand with one line,
``interrupted (SIGTERM): ...``, and exit code 130 / 143 (:mod:`cinet.utils.signals`).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import signal
import sys
from collections.abc import Sequence
from typing import Any

from cinet import __version__
from cinet.errors import CinetError
from cinet.utils import signals

# name -> (module, help). Modules are imported lazily, only for the subcommand that runs (and for --help).
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "train": ("cinet.commands.train", "train CI-Net: the paper's three stages (or stage=N)"),
    "eval": ("cinet.commands.eval", "evaluate a checkpoint: metrics table + metrics.json"),
    "ablate": ("cinet.commands.ablate", "train and evaluate the Table 1/2 variants -> ablation.md"),
    "predict": ("cinet.commands.predict", "depth + segmentation for images (PNG, colour, overlay, PLY)"),
    "serve": (
        "cinet.commands.serve",
        "a web page to try a checkpoint: depth, segmentation, 3D points, attention",
    ),
    "export": ("cinet.commands.export", "export a checkpoint to ONNX (checked with onnxruntime)"),
    "bench": ("cinet.commands.bench", "benchmarks (attention, train-step, inference, encoders), JSON output"),
    "data": ("cinet.commands.data", "dataset tools (preview)"),
}


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (every subcommand registered)."""
    parser = argparse.ArgumentParser(
        prog="cinet", description="CI-Net: joint depth estimation and segmentation."
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        module = importlib.import_module(module_name)
        module.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def _setup_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def _one_line(text: str) -> str:
    """``text`` on one line (an error message must never span several)."""
    return " ".join(part.strip() for part in text.splitlines() if part.strip()) or "unknown error"


def _escape_unencodable_output() -> None:
    """Let stdout / stderr escape what their encoding cannot hold (``\\xe9``) instead of crashing.

    File names are any Unicode (and, on POSIX, any bytes: surrogate escapes); a terminal or pipe with an
    ASCII / Latin-1 encoding must not turn one such name in a progress or error line into a traceback.
    """
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            with contextlib.suppress(ValueError, OSError):  # a detached or closed stream
                reconfigure(errors="backslashreplace")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``cinet`` console script. Returns the process exit code."""
    _escape_unencodable_output()
    # from the start: a stop while the subcommand's modules load is one line too
    with signals.handle_signals():
        try:
            return _main(argv)
        except signals.Interrupted as exc:
            print(_one_line(str(exc)), file=sys.stderr)
            return exc.exit_code


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
    except CinetError as exc:  # an option refused while parsing (an empty path: commands.common.PathArgument)
        if "--debug" in (sys.argv[1:] if argv is None else argv):
            raise
        print(f"error: {_one_line(str(exc))}", file=sys.stderr)
        return exc.exit_code
    if extra:  # key=value overrides may stand anywhere, also after options (argparse takes one run of them)
        if hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = [*(args.overrides or []), *extra]
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.version:
        print(__version__)
        return 0
    if not args.command:
        parser.print_help()
        return 2
    _setup_logging(args.verbose)
    return _run(args._module, args)


def _run(module: Any, args: argparse.Namespace) -> int:
    """Run the subcommand; user errors become one line and exit code 2, a stop signal :class:`Interrupted`."""
    try:
        return int(module.run(args) or 0)
    except signals.Interrupted:
        raise
    except KeyboardInterrupt as exc:  # raised without our handler (e.g. a library's own SIGINT handling)
        raise signals.Interrupted(signals.received() or signal.SIGINT) from exc
    except BaseException as exc:
        signum = signals.received()
        if signum is not None and not args.debug:
            # whatever the signal broke on its way out (Lightning's sys.exit(1) after its graceful shutdown, a
            # DataLoader worker that was stopped, ...): the user asked for the stop, one line says so
            raise signals.Interrupted(signum) from exc
        if isinstance(exc, CinetError) and not args.debug:
            print(f"error: {_one_line(str(exc))}", file=sys.stderr)
            return exc.exit_code
        if isinstance(exc, OSError) and not args.debug and exc.filename is not None:
            # a file the tool was told to read or write could not be (permissions, disk full, not a folder, ...)
            reason = exc.strerror or type(exc).__name__
            print(f"error: {_one_line(f'{exc.filename}: {reason}')}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
