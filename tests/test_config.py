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
