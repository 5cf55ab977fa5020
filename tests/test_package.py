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
