"""Training and evaluation engine: the paper's three-stage schedule on Lightning (Sec. 4.2).

The engine takes plain arguments; the build layer (:mod:`cinet.build`) turns a config into them and drives
``cinet train`` / ``eval`` / ``ablate``. ``rundir`` owns the run directory and its state;
``distributed`` the rank helpers; ``module`` is the LightningModule of one stage; ``datamodule`` holds the
seeded, resumable data pipeline; ``callbacks`` the atomic checkpointing and TensorBoard images; ``baseline``
the trivial baseline the demo compares against. The ``cinet`` commands themselves live in :mod:`cinet.commands`.
"""
