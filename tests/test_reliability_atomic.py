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
    assert rc == 2 and err == [f"error: {old}: No space left on device"]
    assert old.read_bytes() == b"previous preview" and sorted(p.name for p in out.iterdir()) == [old.name]
