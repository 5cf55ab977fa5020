"""Typed run configuration: dataclasses loaded from YAML plus ``key=value`` overrides.

* :mod:`cinet.config.schema` — the sections (:class:`Config` at the root), their defaults and value rules.
* :mod:`cinet.config.loader` — YAML files, bundled configs (``--config smoke``), overrides, saving.
* :mod:`cinet.config.legacy` — keys of older configs and checkpoints moved to today's layout.

Modules never read this config: the builders in :mod:`cinet.engine.builders` turn it into constructor arguments.
"""

from cinet.config.loader import (
    bundled_configs,
    config_to_dict,
    git_revision,
    load_config,
    parse_overrides,
    read_saved_git,
    resolve_config_path,
    save_config,
)
from cinet.config.schema import (
    PAPER_STAGES,
    AugmentConfig,
    Config,
    DataConfig,
    EvalConfig,
    LossConfig,
    ModelConfig,
    StageConfig,
    TrainConfig,
    TrainerConfig,
)

__all__ = [
    "PAPER_STAGES",
    "AugmentConfig",
    "Config",
    "DataConfig",
    "EvalConfig",
    "LossConfig",
    "ModelConfig",
    "StageConfig",
    "TrainConfig",
    "TrainerConfig",
    "bundled_configs",
    "config_to_dict",
    "git_revision",
    "load_config",
    "parse_overrides",
    "read_saved_git",
    "resolve_config_path",
    "save_config",
]
