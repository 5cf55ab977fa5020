"""Typed config: YAML + overrides, errors naming the key, save/load round trip, CLI exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from cinet.config import Config, config_to_dict, load_config, read_saved_git, save_config
from cinet.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "configs" / "smoke.yaml"


def test_defaults_are_the_paper_schedule() -> None:
    cfg = Config()
    got = [(s.stage, s.epochs, s.lr, s.poly_power) for s in cfg.train.stages]
    assert got == [(1, 300, 6e-4, 0.0), (2, 200, 2e-4, 0.0), (3, 200, 2e-4, 0.9)]
    assert (cfg.train.momentum, cfg.train.weight_decay, cfg.train.encoder_lr_mult) == (0.9, 5e-4, 0.1)
    assert (cfg.loss.alpha, cfg.loss.beta, cfg.loss.gamma, cfg.loss.lam, cfg.loss.mu) == (1, 5, 0.3, 1, 5)


def test_yaml_and_overrides() -> None:
    cfg = load_config(
        SMOKE,
        [
            "model.channels=16",
            "train.stages.1.epochs=3",
            "data.crop_size=[32,40]",
            "trainer.precision=bf16-mixed",
            "data.options.holes=true",
            "train.limit_train_batches=2",
            "stage=2",
        ],
    )
    assert cfg.model.channels == 16
    assert cfg.train.stages[1].epochs == 3
    assert cfg.train.stages[0].epochs == 1  # from the file
    assert cfg.data.crop_size == [32, 40]
    assert cfg.data.options == {"size": [64, 80], "holes": True}
    assert cfg.trainer.precision == "bf16-mixed"
    assert cfg.train.limit_train_batches == 2 and isinstance(cfg.train.limit_train_batches, int)
    assert cfg.stage == 2
    assert isinstance(cfg.train.stages[0].lr, float)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.chanels=3", "unknown config key 'model.chanels' (did you mean 'model.channels'?)"),
        (
            "train.stages.0.lrr=1",
            "unknown config key 'train.stages.0.lrr' (did you mean 'train.stages.0.lr'?)",
        ),
        ("train.seed=abc", "config key 'train.seed': expected int, got 'abc'"),
        ("data.crop_size=[a,4]", "config key 'data.crop_size.0': expected int"),
        ("trainer.channels_last=maybe", "config key 'trainer.channels_last': expected bool"),
        ("trainer.precision=17", "config key 'trainer.precision': '17' is not one of"),
        # Lightning casts the weights, not cinet's batches: a dtype-mismatch traceback after the run dir was written
        ("trainer.precision=64", "config key 'trainer.precision': '64' is not one of"),
        ("trainer.precision=bf16-true", "config key 'trainer.precision': 'bf16-true' is not one of"),
        ("train.stages.7.lr=1", "config key 'train.stages.7': list index out of range"),
        ("stage=4", "config key 'stage': stage 4 is not in train.stages"),
        ("nokey", "expected key=value"),
    ],
)
def test_errors_name_the_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(SMOKE, [override])
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_yaml_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  chanels: 3\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: unknown config key 'model\.chanels' \(did you mean"):
        load_config(bad)
    bad.write_text("train:\n  seed: [1]\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: config key 'train\.seed': expected int"):
        load_config(bad)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")


def test_defaults_inheritance(tmp_path: Path) -> None:
    child = tmp_path / "child.yaml"
    child.write_text(f"defaults: {SMOKE}\nmodel:\n  channels: 24\n")
    cfg = load_config(child)
    assert cfg.model.channels == 24
    assert cfg.model.encoder == "resnet18"  # from the base
    assert len(cfg.train.stages) == 3


def test_save_config_round_trip(tmp_path: Path) -> None:
    cfg = load_config(SMOKE, ["model.channels=20"])
    path = tmp_path / "config.yaml"
    save_config(path, cfg, "abc123")
    assert read_saved_git(path) == "abc123"
    assert config_to_dict(load_config(path)) == config_to_dict(cfg)


def test_cli_unknown_key_exit_code_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from cinet.cli import main

    run_dir = tmp_path / "run"
    rc = main(["train", "--config", str(SMOKE), "--run-dir", str(run_dir), "model.chanels=3"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.strip().splitlines() == [
        "error: command-line override: unknown config key 'model.chanels' (did you mean 'model.channels'?)"
    ]
    assert not run_dir.exists()
    rc = main(["train", "--config", str(SMOKE), "--run-dir", str(run_dir), "train.seed=x"])
    assert rc == 2
    assert "config key 'train.seed': expected int" in capsys.readouterr().err


def test_legacy_trainer_keys_under_train_still_load(tmp_path: Path) -> None:
    old = tmp_path / "old.yaml"  # configs / checkpoints written before the trainer section existed
    old.write_text("train:\n  seed: 3\n  precision: bf16-mixed\n  devices: '2'\n  progress_bar: false\n")
    cfg = load_config(old)
    assert (cfg.train.seed, cfg.trainer.precision, cfg.trainer.devices) == (3, "bf16-mixed", "2")
    assert cfg.trainer.progress_bar is False
    cfg = load_config(None, base={"train": {"channels_last": True}, "model": {"channels": 8}})
    assert cfg.trainer.channels_last is True and cfg.model.channels == 8


def test_a_bad_value_names_the_file_of_the_defaults_chain_that_set_it(tmp_path: Path) -> None:
    """The parent of a ``defaults:`` chain holds the bad value: the message names it, not the child."""
    from cinet.config import load_config
    from cinet.errors import ConfigError

    (tmp_path / "parent.yaml").write_text("data:\n  crop_size: [1, 1]\n")
    child = tmp_path / "child.yaml"
    child.write_text("defaults: parent.yaml\nname: child\n")
    with pytest.raises(ConfigError) as err:
        load_config(child)
    assert str(err.value).startswith(f"{tmp_path / 'parent.yaml'}: config key 'data.crop_size'")
    with pytest.raises(ConfigError) as err:  # an override of the same key is blamed on the command line
        load_config(child, ["data.crop_size=[2,2]"])
    assert str(err.value).startswith("command-line override: config key 'data.crop_size'")
    with pytest.raises(ConfigError) as err:
        load_config(SMOKE, ["train.stages.5.epochs=1"])
    assert (
        str(err.value)
        == "command-line override: config key 'train.stages.5': list index out of range (has 3 entries)"
    )


# ------------------------------------------------------------------------------------------------ value ranges


def _float_keys() -> list[str]:
    """Every float field of the schema, by its dotted key (nested sections, the first ``train.stages`` entry, the
    first entry of a list of floats)."""
    import dataclasses
    import typing

    def walk(cls: type, prefix: str) -> list[str]:
        keys = []
        for f in dataclasses.fields(cls):
            tp = typing.get_type_hints(cls)[f.name]
            args = typing.get_args(tp) or (tp,)
            if dataclasses.is_dataclass(tp):
                keys += walk(tp, f"{prefix}{f.name}.")
            elif f.name == "stages":
                keys += walk(typing.get_args(tp)[0], f"{prefix}{f.name}.0.")
            elif typing.get_origin(tp) is list:
                if float in args:
                    keys.append(f"{prefix}{f.name}.0")  # a list of floats: its first entry
            elif float in args:
                keys.append(f"{prefix}{f.name}")
        return keys

    return walk(Config, "")


def test_the_float_keys_are_found() -> None:
    keys = _float_keys()
    for key in ("train.stages.0.lr", "train.encoder_lr_mult", "data.augment.rotation", "loss.beta"):
        assert key in keys
    assert "train.eval.max_depth" in keys and "train.limit_val_batches" in keys  # optional, int | float
    assert "data.augment.scale.0" in keys


@pytest.mark.parametrize("value", ["nan", ".nan", "inf", "-.inf"])
@pytest.mark.parametrize("key", _float_keys())
def test_every_float_key_refuses_a_non_finite_value(key: str, value: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(SMOKE, [f"{key}={value}"])
    msg = str(err.value)
    assert msg.startswith(f"command-line override: config key '{key}': must be a finite number, got ")
    assert "\n" not in msg


def test_non_finite_values_in_a_yaml_file_and_in_dataset_options(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"defaults: {SMOKE}\ndata:\n  augment: {{rotation: .nan}}\n")
    with pytest.raises(
        ConfigError, match=r"bad\.yaml: config key 'data\.augment\.rotation': must be a finite"
    ):
        load_config(bad)
    with pytest.raises(ConfigError, match=r"config key 'data\.options\.size\.1': must be a finite number"):
        load_config(SMOKE, ["data.options.size=[64, .inf]"])
    with pytest.raises(ConfigError, match=r"config key 'data\.augment\.scale\.1': must be a finite number"):
        load_config(SMOKE, ["data.augment.scale=[1, .inf]"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.stages.0.lr=0", "'train.stages.0.lr': must be > 0, got 0.0"),
        ("train.stages.1.poly_power=-0.5", "'train.stages.1.poly_power': must be >= 0, got -0.5"),
        ("train.stages.0.max_steps=0", "'train.stages.0.max_steps': must be >= 1 (or -1: all epochs), got 0"),
        ("train.stages.0.max_steps=-2", "'train.stages.0.max_steps': must be >= 1"),
        ("train.stages.0.epochs=0", "'train.stages.0.epochs': must be >= 1 (or -1 with max_steps > 0"),
        ("train.stages.0.epochs=-1", "'train.stages.0.epochs': must be >= 1"),  # -1 needs max_steps
        ("data.augment.rotation=-5", "'data.augment.rotation': must be >= 0, got -5.0"),
        ("data.augment.color_jitter=-1", "'data.augment.color_jitter': must be >= 0, got -1.0"),
        ("data.num_workers=-1", "'data.num_workers': must be >= 0, got -1"),
        ("data.batch_size=0", "'data.batch_size': must be >= 1, got 0"),
        ("data.eval_batch_size=0", "'data.eval_batch_size': must be >= 1, got 0"),
        ("data.length=-3", "'data.length': must be >= 0, got -3"),
        ("data.eval_length=-3", "'data.eval_length': must be >= 0, got -3"),
        ("loss.alpha=-1", "'loss.alpha': must be >= 0"),
        ("loss.beta=-1", "'loss.beta': must be >= 0"),
        ("loss.gamma=-1", "'loss.gamma': must be >= 0"),
        ("loss.lam=-1", "'loss.lam': must be >= 0"),
        ("loss.mu=-1", "'loss.mu': must be >= 0"),
        ("loss.num_pairs=-1", "'loss.num_pairs': must be >= 0, got -1"),
        ("train.seed=-1", "'train.seed': must be >= 0, got -1"),
        ("train.seed=4294967296", "'train.seed': must be in 0..2147483647, got 4294967296"),
        ("train.handover_epochs=-1", "'train.handover_epochs': must be >= 0"),
        ("train.momentum=-0.1", "'train.momentum': must be >= 0"),
        ("train.weight_decay=-1e-4", "'train.weight_decay': must be >= 0"),
        ("train.encoder_lr_mult=-1", "'train.encoder_lr_mult': must be >= 0"),
        ("train.sharing_lr_mult=-1", "'train.sharing_lr_mult': must be >= 0"),
        ("train.grad_clip=-1", "'train.grad_clip': must be >= 0"),
        ("train.log_every=0", "'train.log_every': must be >= 1, got 0"),
        ("train.val_every=-1", "'train.val_every': must be >= 0"),
        ("train.checkpoint_every=-1", "'train.checkpoint_every': must be >= 0"),
        ("train.limit_train_batches=-1", "'train.limit_train_batches': must be >= 0"),
        ("train.limit_val_batches=1.5", "'train.limit_val_batches': a fraction must be in [0, 1]"),
        ("train.limit_test_batches=-0.5", "'train.limit_test_batches': must be >= 0"),
        ("train.max_nonfinite=-1", "'train.max_nonfinite': must be >= 0"),
        ("train.num_vis=-1", "'train.num_vis': must be >= 0"),
        ("train.eval.min_depth=0", "'train.eval.min_depth': must be > 0, got 0.0"),
        ("train.eval.max_depth=-1", "'train.eval.max_depth': must be > 0"),
        ("trainer.num_nodes=0", "'trainer.num_nodes': must be >= 1, got 0"),
        ("data.root=", "'data.root': empty path (null for none)"),
        ("init_from=", "'init_from': empty path (null for none)"),
        ("model.encoder_weights=", "'model.encoder_weights': empty path (null for none)"),
    ],
)
def test_out_of_range_values_name_the_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(SMOKE, [override])
    assert f"command-line override: config key {message}" in str(err.value)
    assert "\n" not in str(err.value)


def test_eval_depth_range_of_both_keys() -> None:
    with pytest.raises(
        ConfigError, match=r"'train\.eval\.max_depth': must be > train\.eval\.min_depth \(5\)"
    ):
        load_config(SMOKE, ["train.eval.min_depth=5", "train.eval.max_depth=2"])


def test_values_at_the_bounds_are_accepted() -> None:
    cfg = load_config(
        SMOKE,
        [
            "data.num_workers=0",
            "data.augment.rotation=0",
            "data.augment.color_jitter=0",
            "loss.alpha=0",
            "loss.num_pairs=0",
            "train.encoder_lr_mult=0",
            "train.momentum=0",
            "train.weight_decay=0",
            "train.grad_clip=0",
            "train.val_every=0",
            "train.seed=2147483647",
            "train.handover_epochs=0",
            "train.limit_train_batches=0",
            "train.limit_val_batches=2.0",  # Lightning takes an integral float as a count
            "train.stages.0.lr=1e-12",
            "train.stages.0.epochs=-1",
            "train.stages.0.max_steps=3",
            "train.eval.min_depth=0.5",
            "train.eval.max_depth=0.6",
            "trainer.num_nodes=1",
        ],
    )
    assert (cfg.data.num_workers, cfg.train.stages[0].epochs, cfg.train.seed) == (0, -1, 2147483647)
