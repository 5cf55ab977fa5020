"""Atomic writes: SIGKILL in the middle of a checkpoint save leaves the previous checkpoint loadable.

A child process saves a large checkpoint over and over; the parent kills it (SIGKILL) while a save is in
flight — detected from the file system: a temporary file being written (atomic writer) or the checkpoint
shrunk below its full size (plain ``torch.save``, the negative control that shows the kill does land
mid-write). Plus a source scan: every file the package writes goes through :mod:`cinet.utils.io`.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

SRC = Path(__file__).resolve().parents[1] / "src" / "cinet"

CHILD = r"""
import sys, torch
mode, path = sys.argv[1], sys.argv[2]
payload = torch.randn(12_000_000)  # 48 MB: a save takes long enough to be interrupted
if mode == "atomic":
    from cinet.engine.callbacks import AtomicCheckpointIO
    save = AtomicCheckpointIO().save_checkpoint
elif mode == "io":
    from cinet.utils.io import atomic_save
    save = lambda ckpt, p: atomic_save(p, lambda fh: torch.save(ckpt, fh))
else:
    save = torch.save
step = 0
while True:
    ckpt = {"state_dict": {"model.w": payload + step}, "global_step": step, "cinet": {"format": 1}}
    save(ckpt, path)
    print(f"saved {step}", flush=True)
    step += 1
"""


def _kill_mid_save(mode: str, path: Path) -> tuple[int, bool]:
    """Run the child, SIGKILL it during a save after the first complete one; ``(last step printed, caught)``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, mode, str(path)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        first = proc.stdout.readline()  # type: ignore[union-attr]
        assert first.startswith("saved 0"), first
        full = path.stat().st_size
        caught = False
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if mode == "plain":
                try:
                    mid = path.stat().st_size < full
                except FileNotFoundError:
                    mid = False
            else:
                mid = any(p.stat().st_size > 0 for p in path.parent.glob(f".{path.name}.*.tmp"))
            if mid:
                proc.send_signal(signal.SIGKILL)
                caught = True
                break
        else:
            proc.kill()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    text = first + proc.stdout.read()  # type: ignore[union-attr]
    steps = [int(line.split()[1]) for line in text.splitlines() if line.startswith("saved")]
    return steps[-1], caught


@pytest.mark.parametrize("mode", ["atomic", "io"])
def test_sigkill_during_checkpoint_save_keeps_previous(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "last.ckpt"
    last, caught = _kill_mid_save(mode, path)
    assert caught, "the child was never seen in the middle of a save"
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    # the file is the last complete save (or the one whose rename happened just before the kill)
    assert ckpt["global_step"] in (last, last + 1)
    assert ckpt["state_dict"]["model.w"].shape == (12_000_000,)
    leftovers = list(tmp_path.glob(".last.ckpt.*.tmp"))
    assert len(leftovers) <= 1  # the interrupted temporary file, never the checkpoint itself


def test_plain_torch_save_is_torn_by_sigkill(tmp_path: Path) -> None:
    """Negative control: without the temp-file-and-rename, the same kill leaves an unreadable checkpoint."""
    path = tmp_path / "last.ckpt"
    _, caught = _kill_mid_save("plain", path)
    if not caught:
        pytest.skip("the plain save finished before it could be interrupted")
    with pytest.raises(Exception):  # noqa: B017 - any torch/zip error: the file is torn
        torch.load(path, map_location="cpu", weights_only=True)


# Writers that do not go through cinet.utils.io, each with the reason it is safe.
ALLOWED = {
    ("inference/export.py", "prog.save(str(path)"): "a private temporary folder, then atomic_write_bytes",
    ("engine/callbacks.py", 'open(self.path, "a"'): "append-only loss log, rewritten atomically on (re)start",
}

WRITE_CALL = re.compile(
    r"torch\.save\(|open\([^)]*['\"][wa]b?['\"]|\.write_text\(|\.write_bytes\(|json\.dump\(|np\.save|"
    r"\.savefig\(|shutil\.copy|\.save\(str\("
)


def test_every_writer_is_atomic() -> None:
    """Every file write in the package goes through cinet.utils.io (temp file + os.replace)."""
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        rel = str(path.relative_to(SRC))
        if rel == "utils/io.py":
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            code = line.split("#", 1)[0]
            if not WRITE_CALL.search(code):
                continue
            if "atomic_save(" in code or any(rel == f and snippet in code for f, snippet in ALLOWED):
                continue
            offenders.append(f"{rel}:{n}: {line.strip()}")
    assert not offenders, "non-atomic writes:\n" + "\n".join(offenders)


def test_failed_write_keeps_previous_file(tmp_path: Path) -> None:
    from cinet.utils.io import atomic_open, atomic_write_text

    path = tmp_path / "metrics.json"
    atomic_write_text(path, "old\n")
    with pytest.raises(RuntimeError, match="disk on fire"), atomic_open(path, "w") as fh:
        fh.write("half of the new")
        raise RuntimeError("disk on fire")
    assert path.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]  # temporary file removed


def test_atomic_files_get_normal_permissions(tmp_path: Path) -> None:
    from cinet.utils.io import atomic_write_text

    mask = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "config.yaml", "a: 1\n")
        assert (tmp_path / "config.yaml").stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600
        os.chmod(tmp_path / "config.yaml", 0o640)
        atomic_write_text(tmp_path / "config.yaml", "a: 2\n")
        assert (tmp_path / "config.yaml").stat().st_mode & 0o777 == 0o640  # a replaced file keeps its mode
    finally:
        os.umask(mask)


def test_disk_full_names_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import errno

    from cinet.utils.io import atomic_save, atomic_write_text

    path = tmp_path / "last.ckpt"
    atomic_write_text(path, "previous")

    def writer(fh: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # what write() raises on a full disk

    with pytest.raises(OSError) as info:
        atomic_save(path, writer)
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(path)
    assert path.read_text() == "previous" and sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_disk_full_through_the_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import errno

    from cinet.cli import main

    out = tmp_path / "out"
    out.mkdir()
    old = out / "synthetic_train_preview.png"
    old.write_bytes(b"previous preview")

    def fsync(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", fsync)
    rc = main(["data", "preview", "synthetic", "--num", "1", "--out", str(out), "size=[32,40]"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err == [f"error: {old}: cannot write (no space left on device)"]
    assert old.read_bytes() == b"previous preview" and sorted(p.name for p in out.iterdir()) == [old.name]


# ------------------------------------------------------- failed writes name the destination, never a temporary name


def _read_only(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """``tempfile.<name>`` fails as on a read-only mount: EROFS naming the hidden temporary file it tried."""
    import errno
    import tempfile

    def fail(*args: object, prefix: str = "", suffix: str = "", dir: object = None, **kwargs: object) -> str:
        raise OSError(
            errno.EROFS, os.strerror(errno.EROFS), os.path.join(str(dir), f"{prefix}eumm8rkr{suffix}")
        )

    monkeypatch.setattr(tempfile, name, fail)


def test_read_only_file_system_names_the_file_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``error: /tmp/ro/.b.json.eumm8rkr.tmp: Read-only file system`` named a file the user never gave."""
    import errno

    from cinet.utils.io import atomic_write_json

    _read_only(monkeypatch, "mkstemp")
    path = tmp_path / "b.json"
    with pytest.raises(OSError) as info:
        atomic_write_json(path, {"a": 1})
    assert info.value.errno == errno.EROFS and isinstance(info.value, OSError)
    assert info.value.filename == str(path)
    assert info.value.strerror == "cannot write (read-only file system)"
    assert not path.exists()


def test_read_only_file_system_through_the_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from cinet.cli import main

    _read_only(monkeypatch, "mkstemp")
    out = tmp_path / "out"
    rc = main(["data", "preview", "synthetic", "--num", "1", "--out", str(out), "size=[32,40]"])
    err = capsys.readouterr().err.strip().splitlines()
    path = out / "synthetic_train_preview.png"
    assert rc == 2 and err == [f"error: {path}: cannot write (read-only file system)"]
    assert ".tmp" not in err[0] and not path.exists()


def test_permission_denied_on_replace_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An error of ``os.replace`` (which names the temporary file first) names the destination too."""
    import errno

    from cinet.utils.io import atomic_write_text

    path = tmp_path / "config.yaml"
    path.write_text("previous")

    def replace(src: str, dst: str) -> None:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), src, None, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(PermissionError) as info:
        atomic_write_text(path, "new")
    assert info.value.filename == str(path) and info.value.strerror == "cannot write (permission denied)"
    assert path.read_text() == "previous" and sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]


def test_a_file_in_the_way_is_named(tmp_path: Path) -> None:
    from cinet.utils.io import atomic_write_text

    blocker = tmp_path / "notes.txt"
    blocker.write_text("mine")
    with pytest.raises(OSError) as info:
        atomic_write_text(blocker / "sub" / "b.json", "{}")
    assert info.value.filename == str(blocker / "sub" / "b.json")
    assert info.value.strerror == f"cannot write ({blocker} is a file, not a folder)"
    assert blocker.read_text() == "mine"


def test_atomic_dir_errors_name_the_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``error: /tmp/ro/.pre.ovgad9z5: Read-only file system`` (export --pretrained): the folder given, instead."""
    import errno

    from cinet.utils.io import atomic_dir

    target = tmp_path / "pre"
    with atomic_dir(target) as tmp:  # the folder appears whole, under its name
        (tmp / "config.json").write_text("{}")
    assert sorted(p.name for p in target.iterdir()) == ["config.json"] and len(list(tmp_path.iterdir())) == 1

    other = tmp_path / "other"
    with pytest.raises(OSError) as info, atomic_dir(other) as tmp:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp / "model.safetensors"))
    assert (
        info.value.filename == str(other) and info.value.strerror == "cannot write (no space left on device)"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pre"]  # the temporary folder went

    _read_only(monkeypatch, "mkdtemp")
    with pytest.raises(OSError) as info, atomic_dir(other):
        pass
    assert info.value.errno == errno.EROFS and info.value.filename == str(other)
    assert info.value.strerror == "cannot write (read-only file system)"
