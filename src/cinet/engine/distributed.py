"""Rank helpers for distributed runs (one home, used by the run directory, the driver and the data module).

Two views of the rank exist, and each has its use:

* :func:`global_rank` reads the launcher's environment (torchrun, SLURM, LSF), so it is right *before*
  Lightning has initialised the process group, e.g. when deciding which process creates the run directory.
* :func:`dist_info` asks the initialised process group, which is what the data samplers need while training.
"""

from __future__ import annotations

import os

__all__ = ["barrier", "dist_info", "global_rank"]


def global_rank() -> int:
    """Global rank of this process from the launcher's environment.

    Returns:
        0 when not distributed (and for the first process of a job); some non-zero value for the others
        (the exact rank when the launcher sets ``RANK`` / ``SLURM_PROCID`` / ``JSM_NAMESPACE_RANK``).
    """
    for key in ("RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        if key in os.environ:
            try:
                rank = int(os.environ[key])
            except ValueError:
                continue
            if key == "SLURM_PROCID" and "SLURM_NTASKS" in os.environ and os.environ["SLURM_NTASKS"] == "1":
                return 0
            return rank
    node = int(os.environ.get("NODE_RANK", os.environ.get("GROUP_RANK", "0")) or 0)
    local = int(os.environ.get("LOCAL_RANK", "0") or 0)
    if node == 0:
        return local
    return -1 if local else 1  # some non-zero rank


def dist_info() -> tuple[int, int]:
    """``(rank, world_size)`` of the initialised ``torch.distributed`` process group, else ``(0, 1)``."""
    import torch

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def barrier() -> None:
    """Wait for every process of the initialised process group (no-op when not distributed)."""
    import torch

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
