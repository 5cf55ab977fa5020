"""Benchmarks of cinet, printing JSON: ``cinet bench attention|train-step|inference`` (see :mod:`cinet.commands.bench`).

* :mod:`cinet.bench.attention` — peak memory and time of the SUM attention (Eq. 1–2) + attention BCE (Eq. 4),
  naive vs memory-efficient paths.
* :mod:`cinet.bench.train_step` — images/s and FLOP/s of a full training step.
* :mod:`cinet.bench.inference` — images/s of eager PyTorch vs onnxruntime.

Documented results: ``docs/performance.md``.
"""
