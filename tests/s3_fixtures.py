"""The S3 server fixtures: one SeaweedFS for the whole session, a fresh prefix per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.s3server import BUCKET, LocalS3Server

__all__ = ["RawInS3", "raw_in_s3", "s3_server"]


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalS3Server]:
    server = LocalS3Server(tmp_path_factory.mktemp("s3")).start()
    yield server
    server.stop()


@dataclass
class RawInS3:
    server: LocalS3Server
    prefix: str

    @property
    def location(self) -> str:
        return f"s3://{BUCKET}/{self.prefix}"

    def keys(self) -> list[str]:
        return self.server.keys(self.prefix + "/")

    def key(self, message_id: uuid.UUID) -> str:
        return f"{self.prefix}/{message_id.hex}.eml"


@pytest.fixture
def raw_in_s3(s3_server: LocalS3Server, settings, monkeypatch, tmp_path) -> RawInS3:
    """CONDUIT_RAW_STORAGE pointing at the test server, under a prefix of this test's own;
    boto3 finds the server through its usual variables, and no AWS file of the machine."""
    for name, value in s3_server.environment().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    stored = RawInS3(server=s3_server, prefix=f"test-{uuid.uuid4().hex[:12]}")
    settings.CONDUIT_RAW_STORAGE = stored.location
    settings.CONDUIT_RAW_STORAGE_TIMEOUT = 5.0
    return stored
