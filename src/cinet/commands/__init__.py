"""The ``cinet`` subcommands: one module per command, apart from the library (``engine``, ``inference``, ...).

Each module exposes ``add_arguments(parser)`` (cheap: no torch import at module level) and
``run(args) -> int``; :mod:`cinet.cli` registers them. ``demo`` is the script behind ``make demo``
(``python -m cinet.commands.demo``). Library code never imports from here.
"""
