"""Training and evaluation engine: the paper's three-stage schedule on Lightning (Sec. 4.2).

``builders`` turns a :class:`cinet.config.Config` into objects (the only place that reads it); ``training``
drives ``cinet train`` / ``eval`` / ``ablate`` (:func:`~cinet.engine.training.train`,
:func:`~cinet.engine.training.evaluate_module`); ``rundir`` owns the run directory and its state;
``distributed`` the rank helpers; ``module`` is the LightningModule of one stage; ``datamodule`` holds the
seeded, resumable data pipeline; ``callbacks`` the atomic checkpointing and TensorBoard images; ``baseline``
the trivial baseline the demo compares against. The ``cinet`` commands themselves live in :mod:`cinet.commands`.
"""
