"""Package-level checks: the CLI entry point, atomic writes, error contract."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from cinet import cli
from cinet.utils.io import atomic_open, atomic_write_json


def test_cli_help_lists_every_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name in ("train", "eval", "ablate", "predict", "export", "bench", "data"):
        assert name in out


def test_version_entry_point() -> None:
    res = subprocess.run([sys.executable, "-m", "cinet.cli", "--version"], capture_output=True, text=True)
    assert res.returncode == 0
    assert res.stdout.strip() == __import__("cinet").__version__


def test_atomic_write_keeps_old_file_on_failure(tmp_path) -> None:
    target = tmp_path / "metrics.json"
    atomic_write_json(target, {"a": 1})
    with pytest.raises(RuntimeError), atomic_open(target, "w") as fh:
        fh.write('{"half": ')
        raise RuntimeError("crash mid-write")
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temporary left behind


def test_overrides_may_follow_options(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = {}

    def fake_run(args):
        seen["overrides"] = list(args.overrides)
        seen["run_dir"] = args.run_dir
        return 0

    import cinet.commands.train as train_command

    monkeypatch.setattr(train_command, "run", fake_run)
    argv = [
        "train",
        "--config",
        "configs/smoke.yaml",
        "a.b=1",
        "--run-dir",
        str(tmp_path),
        "c.d=2",
        "stage=2",
    ]
    assert cli.main(argv) == 0
    assert seen == {"overrides": ["a.b=1", "c.d=2", "stage=2"], "run_dir": str(tmp_path)}


def test_unknown_option_is_rejected() -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["train", "--config", "configs/smoke.yaml", "--no-such-option"])
    assert exc.value.code == 2
