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


# ---------------------------------------------------------------- configs ship inside the package

REPO = __import__("pathlib").Path(__file__).resolve().parents[1]


def test_repository_configs_are_the_bundled_ones() -> None:
    """``configs/`` of a clone is the package's ``cinet/configs/`` (one copy), and every file is bundled."""
    from cinet.config import bundled_configs

    bundled = bundled_configs()
    in_repo = sorted(p.stem for p in (REPO / "configs").glob("*.yaml"))
    assert in_repo and sorted(bundled) == in_repo
    assert (REPO / "configs").resolve() == (REPO / "src" / "cinet" / "configs").resolve()
    assert all(
        path.parent.name == "configs" and path.parent.parent.name == "cinet" for path in bundled.values()
    )


def test_bare_config_name_finds_the_bundled_file(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cinet.config import load_config
    from cinet.errors import ConfigError

    monkeypatch.chdir(tmp_path)  # an empty folder: no configs/ here
    assert load_config("smoke").name == "smoke"
    assert load_config("smoke.yaml", ["model.channels=16"]).model.channels == 16
    assert (
        load_config("configs/sunrgbd.yaml").data.name == "sunrgbd"
    )  # README path outside a clone; defaults chain
    (tmp_path / "smoke").mkdir()  # a folder of that name is not a config file: still the bundled one
    assert load_config("smoke").name == "smoke"
    (tmp_path / "own.yaml").write_text("name: own\n")
    assert load_config("own.yaml").name == "own"  # a file that exists wins
    with pytest.raises(ConfigError, match=r"^nope: config file not found \(bundled configs.*smoke"):
        load_config("nope")
    with pytest.raises(ConfigError, match=r"sub/smoke\.yaml: config file not found"):
        load_config("sub/smoke.yaml")  # only bare names and configs/NAME fall back to the bundled files


@pytest.mark.slow
def test_installed_wheel_trains_with_a_bundled_config(tmp_path) -> None:
    """Build the wheel, install it apart from the source tree, run ``cinet train --config smoke`` in an empty folder."""
    import os
    import shutil
    import zipfile

    src = tmp_path / "src_copy"  # build from a copy: an in-tree build would write build/ into the checkout
    shutil.copytree(REPO / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    wheels = tmp_path / "wheels"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(src)],
        check=True,
        capture_output=True,
    )
    (wheel,) = wheels.glob("cinet-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for stem in ("smoke", "nyuv2", "demo"):
        assert f"cinet/configs/{stem}.yaml" in names
    assert "cinet/data/meta/nyuv2.json" in names
    target = tmp_path / "site"
    subprocess.run(
        [*pip, "install", "--no-deps", "--target", str(target), str(wheel)], check=True, capture_output=True
    )
    work = tmp_path / "empty"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target)}  # the installed copy, not the checkout
    code = "import sys, cinet; from cinet.cli import main; print(cinet.__file__, file=sys.stderr); sys.exit(main())"
    overrides = [
        "stage=1",
        "train.stages.0.max_steps=1",
        "train.val_every=0",
        "data.length=4",
        "data.eval_length=2",
    ]
    res = subprocess.run(
        [sys.executable, "-c", code, "train", "--config", "smoke", "--run-dir", "run", *overrides],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert str(target) in res.stderr.splitlines()[0]
    assert (work / "run" / "last.ckpt").is_file() and (work / "run" / "metrics.json").is_file()


def test_packaging_metadata_builds_without_a_warning(tmp_path) -> None:
    """Issue 25: ``pip install -e .`` printed setuptools' deprecation of ``license = { text = ... }`` (3 times).

    The metadata step of the build (what ``pip install`` runs first, also for ``-e``) on a copy of the project:
    no warning, and the licence is the SPDX expression ``MIT`` (``License-Expression``, setuptools >= 77).
    """
    import shutil

    src = tmp_path / "src_copy"
    shutil.copytree(REPO / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    out = tmp_path / "meta"
    out.mkdir()
    code = "import setuptools.build_meta as b, sys; print(b.prepare_metadata_for_build_wheel(sys.argv[1]))"
    res = subprocess.run(
        [sys.executable, "-W", "default", "-c", code, str(out)], cwd=src, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert "warning" not in (res.stdout + res.stderr).lower(), res.stderr[-3000:]
    (meta,) = out.glob("*.dist-info/METADATA")
    assert "License-Expression: MIT" in meta.read_text().splitlines()


def test_distribution_name_is_not_the_taken_one() -> None:
    """``cinet`` on the public index is another project (issue #26): ours installs as ``cinet-pytorch`` and still
    provides the ``cinet`` command and ``import cinet``."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["name"] == "cinet-pytorch"
    assert project["scripts"] == {"cinet": "cinet.cli:main"}


def test_every_install_hint_names_this_distribution() -> None:
    """``pip install 'cinet[...]'`` installs the other project of that name (issue #26): every hint with an extra,
    in messages and docs, names ours."""
    import re
    import tomllib

    name = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["name"]
    files = [
        *sorted((REPO / "src" / "cinet").rglob("*.py")),
        REPO / "README.md",
        *sorted((REPO / "docs").glob("*.md")),
    ]
    wrong = []
    for path in files:
        for m in re.finditer(r"pip install '?([A-Za-z0-9_.-]+)\[", path.read_text(encoding="utf-8")):
            if m.group(1) != name:
                wrong.append(f"{path.relative_to(REPO)}: {m.group(0)}")
    assert not wrong, wrong
