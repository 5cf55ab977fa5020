"""Training and evaluation engine: the paper's three-stage schedule on Lightning (Sec. 4.2).

``runner`` builds everything from a :class:`cinet.config.Config` (the only place that reads it) and drives
``cinet train`` / ``eval`` / ``ablate``; ``module`` is the LightningModule of one stage; ``datamodule`` holds the
seeded, resumable data pipeline; ``callbacks`` the atomic checkpointing and TensorBoard images; ``baseline`` the
trivial baseline the demo compares against.
"""
