"""Helpers shared by the ``cinet`` subcommands (no torch import at module level)."""

from __future__ import annotations

import logging
import warnings


def quiet_lightning(verbose: int) -> None:
    """Keep Lightning's info chatter and known-harmless warnings out of the terminal unless ``-v`` was given.

    Args:
        verbose: Count of ``-v`` flags; 0 sets Lightning's loggers to WARNING.
    """
    import lightning  # noqa: F401  (sets its loggers' levels on import: import first, then override)

    warnings.filterwarnings("ignore", message=r".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=r".*`srun` command is available.*")
    if verbose <= 0:
        for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
            logging.getLogger(name).setLevel(logging.WARNING)
