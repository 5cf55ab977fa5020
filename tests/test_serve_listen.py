"""``cinet serve`` refuses, with one line and exit code 2, an address it cannot listen on (a port in use, a
``--host`` that is not an address of this machine) and a ``--max-file-size`` that is not a size (session 9,
fault 2): before, Gradio's ``OSError: Cannot find empty port`` and ``int()``'s ``ValueError`` tracebacks. No
browser; the refusals come before the model loads, so no server starts."""

from __future__ import annotations

import argparse
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from cinet.cli import main
from cinet.errors import InputError
from inference_fixtures import save_tiny_checkpoint


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.ckpt")


@pytest.fixture()
def busy_port() -> Iterator[int]:
    """A port of 127.0.0.1 another socket listens on."""
    with socket.socket(socket.AF_INET) as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        yield int(s.getsockname()[1])


def _stderr_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_max_file_size_parsing() -> None:
    from cinet.commands.serve import parse_file_size

    assert parse_file_size("20MB") == 20 << 20
    assert parse_file_size("500kb") == 500 << 10
    assert parse_file_size("1 GB") == 1 << 30
    assert parse_file_size("4096") == 4096
    for bad in ("lots", "1.5MB", "0", "-3MB", "20XB", ""):
        with pytest.raises(InputError, match=r"^--max-file-size: "):
            parse_file_size(bad)


def test_bad_max_file_size_is_one_line(ckpt: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("gradio")
    rc = main(["serve", "--checkpoint", str(ckpt), "--port", "0", "--max-file-size", "lots"])
    assert rc == 2
    line = _stderr_line(capsys)
    assert line.startswith("error: --max-file-size: ") and "'lots'" in line


def test_port_in_use_is_one_line_naming_port(
    ckpt: Path, busy_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("gradio")
    rc = main(["serve", "--checkpoint", str(ckpt), "--port", str(busy_port), "--examples", "none"])
    assert rc == 2
    line = _stderr_line(capsys)
    assert line.startswith(f"error: --port {busy_port}: cannot listen on 127.0.0.1:{busy_port} ("), line
    assert "Traceback" not in capsys.readouterr().err


def test_host_not_of_this_machine_is_one_line_naming_host(
    ckpt: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("gradio")
    rc = main(
        ["serve", "--checkpoint", str(ckpt), "--host", "8.8.8.8", "--port", "7861", "--examples", "none"]
    )
    assert rc == 2
    assert _stderr_line(capsys).startswith("error: --host 8.8.8.8: cannot listen on 8.8.8.8:7861 (")


class _Page:
    """A page whose launch fails as Gradio's does when it cannot bind (the race after the early check)."""

    def launch(self, **kwargs: object) -> tuple[object, str, object]:
        raise OSError("Cannot find empty port in range: 7861-7861. You can specify a different port ...")


def test_launch_maps_gradios_oserror_to_one_line(busy_port: int) -> None:
    from cinet.commands.serve import launch

    args = argparse.Namespace(host="127.0.0.1", port=busy_port)
    with pytest.raises(InputError) as caught:
        launch(_Page(), args)
    assert str(caught.value).startswith(f"--port {busy_port}: cannot listen on 127.0.0.1:{busy_port} (")
    assert "Address already in use" in str(caught.value)
    # port 0 on an address not of this machine: no free port to pick, the fault is --host
    with pytest.raises(InputError, match=r"^--host 8\.8\.8\.8: cannot listen on 8\.8\.8\.8:0 \("):
        launch(_Page(), argparse.Namespace(host="8.8.8.8", port=0))
