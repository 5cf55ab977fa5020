"""Typed run configuration: dataclasses loaded from YAML plus ``key=value`` overrides.

* :mod:`cinet.config.schema` — the sections (:class:`Config` at the root), their defaults and value rules.
* :mod:`cinet.config.loader` — YAML files, bundled configs (``--config smoke``), overrides, saving.
* :mod:`cinet.config.legacy` — keys of older configs and checkpoints moved to today's layout.

Modules never read this config: the builders in :mod:`cinet.build.builders` turn it into constructor arguments.
The names of both modules' ``__all__`` are re-exported here (one list each, kept where the names are defined).
"""

from cinet.config import loader, schema
from cinet.config.loader import *  # noqa: F403
from cinet.config.schema import *  # noqa: F403

__all__ = [*schema.__all__, *loader.__all__]
