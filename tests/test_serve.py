"""bin/serve checks both of its ports before it starts anything."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    environment = dict(os.environ, CONDUIT_VAR_DIR=str(tmp_path / "var"), **env)
    return subprocess.run(
        [str(ROOT / "bin" / "serve")],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_it_names_a_taken_web_port_and_the_variable_that_moves_it(tmp_path, taken_port):
    result = serve(tmp_path, PORT=str(taken_port), CONDUIT_INGRESS_PORT=str(free_port()))
    assert result.returncode == 1
    assert f"Port {taken_port} (web API) on 127.0.0.1 is already in use." in result.stderr
    assert "PORT=8001 bin/serve" in result.stderr
    assert "SMTP ingress" not in result.stderr
    assert "Nothing was started." in result.stderr
    assert "Conduit is running" not in result.stdout
    assert not (tmp_path / "var").exists()  # no key, no database: nothing ran


def test_it_names_a_taken_smtp_port_and_the_variable_that_moves_it(tmp_path, taken_port):
    result = serve(tmp_path, PORT=str(free_port()), CONDUIT_INGRESS_PORT=str(taken_port))
    assert result.returncode == 1
    assert f"Port {taken_port} (SMTP ingress) on 127.0.0.1 is already in use." in result.stderr
    assert "CONDUIT_INGRESS_PORT=2526 bin/serve" in result.stderr
    assert "(web API)" not in result.stderr
    assert not (tmp_path / "var").exists()
