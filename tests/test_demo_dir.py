"""``make demo`` replaces its own previous run directory, never another folder (a new user lost a run that way)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cinet.commands import demo
from cinet.commands.demo import check_demo_dir
from cinet.errors import InputError


def _previous_demo(root: Path, name: str = "demo") -> Path:
    run = root / "run"
    for sub in ("stage1", "stage3", "tb", "inputs", "predictions"):
        (run / sub).mkdir(parents=True)
    (run / "config.yaml").write_text(f"# git: abc\nname: {name}\nmodel: {{variant: cinet}}\n")
    for f in ("last.ckpt", "metrics.json", "demo.json", "state.json", ".last.ckpt.tmp"):
        (run / f).write_text("x")
    return run


def test_absent_empty_or_previous_demo_may_be_replaced(tmp_path: Path) -> None:
    check_demo_dir(tmp_path / "absent", "demo")
    (tmp_path / "empty").mkdir()
    check_demo_dir(tmp_path / "empty", "demo")
    check_demo_dir(_previous_demo(tmp_path), "demo")


@pytest.mark.parametrize("case", ["foreign file", "other config", "a file"])
def test_anything_else_is_refused(tmp_path: Path, case: str) -> None:
    if case == "foreign file":
        run = _previous_demo(tmp_path)
        (run / "NOTES.txt").write_text("mine")
        expected = "NOTES.txt"
    elif case == "other config":
        run = _previous_demo(tmp_path, name="nyuv2")
        expected = "'nyuv2'"
    else:
        run = tmp_path / "file"
        run.write_text("mine")
        expected = "is a file"
    with pytest.raises(InputError, match=expected):
        check_demo_dir(run, "demo")


def test_the_demo_refuses_before_anything_is_touched(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = _previous_demo(tmp_path)
    (run / "NOTES.txt").write_text("mine")
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    assert demo.main(["--run-dir", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a previous demo run" in err[0] and "NOTES.txt" in err[0]
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before
    assert (run / "NOTES.txt").read_text() == "mine"
