from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.ingress.conftest import ingress, start_ingress  # noqa: F401  (fixtures)

ROOT = Path(__file__).resolve().parents[2]
BASIC_AUTH = "conduit:s3cret-Pässwort"
MAILGUN_SIGNING_KEY = "key-3ax6xnjp29jd6fds4gc373sgvjxteol0"


@dataclass
class Receiver:
    """The receiving app (tests/receivers/server.py), running in its own process."""

    port: int
    stderr: Path

    def url(self, path: str, *, credentials: str | None = BASIC_AUTH) -> str:
        userinfo = ""
        if credentials:
            user, _, password = credentials.partition(":")
            userinfo = f"{requests.utils.quote(user)}:{requests.utils.quote(password)}@"
        return f"http://{userinfo}127.0.0.1:{self.port}{path}"

    def last(self) -> dict:
        received = requests.get(self.url("/received/", credentials=None), timeout=10).json()
        assert received, f"nothing received; the receiver said: {self.stderr.read_text()}"
        return received[-1]


@pytest.fixture(scope="module")
def receiver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receiver]:
    stderr = tmp_path_factory.mktemp("receiver") / "stderr.txt"
    env = {
        "PATH": "/usr/bin:/bin",
        "RECEIVER_BASIC_AUTH": BASIC_AUTH,
        "RECEIVER_MAILGUN_SIGNING_KEY": MAILGUN_SIGNING_KEY,
        "PYTHONWARNINGS": "ignore",
    }
    with stderr.open("w") as errors:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.receivers.server"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
        )
    try:
        line = process.stdout.readline() if process.stdout else ""
        assert line.startswith("listening on "), f"{line!r}: {stderr.read_text()}"
        yield Receiver(port=int(line.split()[-1]), stderr=stderr)
    finally:
        process.terminate()
        process.wait(10)
