"""Thin wrapper: `python bench/encoders.py [options]` == `cinet bench encoders [options]` (JSON on stdout)."""

from __future__ import annotations

import argparse
import sys

from cinet.commands import bench as cli


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/encoders.py")
    cli.add_arguments(parser)
    args = parser.parse_args(["encoders", *(sys.argv[1:] if argv is None else argv)])
    return cli.run(args)


if __name__ == "__main__":
    sys.exit(main())
