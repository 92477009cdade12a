"""An S3-compatible object store, as far as raw messages need one (no Django here).

``CONDUIT_RAW_STORAGE=s3://bucket/prefix`` names the place; boto3 finds the
endpoint and the keys the way it always does (``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``, a profile,
an instance role...). Every call is bounded: a store that is down, refuses or
is slower than ``timeout`` raises ObjectStoreError, which the ingress turns
into a 451, never a 250.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from botocore.exceptions import BotoCoreError, ClientError

# Objects written at once for one group of messages (the ingress stores
# concurrent sessions together); also the client's connection pool.
PARALLEL_WRITES = 16
# S3's DeleteObjects takes at most this many keys a request.
DELETE_BATCH = 1000
ADDRESSING_STYLES = ("auto", "path", "virtual")


class ObjectStoreError(Exception):
    """The store did not do what was asked: unreachable, too slow, or it refused."""


class WritesFailed(ObjectStoreError):
    """Some writes of put_many failed; ``written`` names the objects that were written."""

    def __init__(self, message: str, *, written: list[str]) -> None:
        super().__init__(message)
        self.written = written


class ObjectMissing(ObjectStoreError):
    """The object is not there (deleted, or never written)."""


@dataclass(frozen=True)
class Location:
    """``s3://bucket/prefix``: where objects go, each at ``prefix/<name>``."""

    bucket: str
    prefix: str = ""
    addressing_style: str = "auto"

    @classmethod
    def parse(cls, url: str) -> Location:
        """Read ``s3://bucket[/prefix][?addressing_style=path]``; ValueError says what is wrong."""
        parts = urlsplit(url.strip())
        if parts.scheme != "s3" or not parts.netloc:
            raise ValueError(f"{url!r} is not s3://bucket/prefix")
        options = parse_qs(parts.query)
        style = options.pop("addressing_style", ["auto"])[-1]
        if options or style not in ADDRESSING_STYLES:
            raise ValueError(
                f"{url!r}: the only option is addressing_style={'|'.join(ADDRESSING_STYLES)}"
            )
        return cls(bucket=parts.netloc, prefix=parts.path.strip("/"), addressing_style=style)

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def __str__(self) -> str:
        text = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        if self.addressing_style != "auto":
            text += f"?addressing_style={self.addressing_style}"
        return text


class ObjectStore:
    """One bucket, through one boto3 client (thread-safe; shared by the threads)."""

    def __init__(self, location: Location, *, timeout: float) -> None:
        # Imported by the first store made, not at start: boto3 takes a third of a
        # second to import, which a process keeping raw messages in the database
        # (the default) never needs to pay.
        import boto3
        from botocore.config import Config

        self.location = location
        config = Config(
            connect_timeout=timeout,
            read_timeout=timeout,
            # One retry at most: the SMTP session is waiting for its answer.
            retries={"mode": "standard", "total_max_attempts": 2},
            max_pool_connections=PARALLEL_WRITES,
            s3={"addressing_style": location.addressing_style},
            # Checksums only where S3 requires them: not every S3-compatible
            # store knows the newer trailing-checksum uploads.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        self._client = boto3.session.Session().client("s3", config=config)
        self._pool: ThreadPoolExecutor | None = None

    def put(self, name: str, data: bytes) -> None:
        try:
            self._client.put_object(
                Bucket=self.location.bucket, Key=self.location.key(name), Body=data
            )
        except (BotoCoreError, ClientError) as exc:
            raise ObjectStoreError(f"Could not write {self._where(name)}: {exc}") from exc

    def put_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        """Write every object, in parallel; WritesFailed if any write failed."""
        if len(items) == 1:
            try:
                self.put(*items[0])
            except ObjectStoreError as exc:
                raise WritesFailed(str(exc), written=[]) from exc
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(PARALLEL_WRITES, thread_name_prefix="objectstore")
        futures = [self._pool.submit(self.put, name, data) for name, data in items]
        errors = [future.exception() for future in futures]
        failed = [error for error in errors if error is not None]
        if failed:
            written = [name for (name, _), error in zip(items, errors, strict=True) if not error]
            raise WritesFailed(str(failed[0]), written=written) from failed[0]

    def get(self, name: str) -> bytes:
        try:
            key = self.location.key(name)
            return self._client.get_object(Bucket=self.location.bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise ObjectMissing(f"{self._where(name)} does not exist") from exc
            raise ObjectStoreError(f"Could not read {self._where(name)}: {exc}") from exc
        except BotoCoreError as exc:
            raise ObjectStoreError(f"Could not read {self._where(name)}: {exc}") from exc

    def delete_many(self, names: Sequence[str]) -> None:
        """Delete the objects (one that is already gone is no error)."""
        for start in range(0, len(names), DELETE_BATCH):
            keys = [{"Key": self.location.key(n)} for n in names[start : start + DELETE_BATCH]]
            try:
                answer = self._client.delete_objects(
                    Bucket=self.location.bucket, Delete={"Objects": keys, "Quiet": True}
                )
            except (BotoCoreError, ClientError) as exc:
                raise ObjectStoreError(f"Could not remove from {self.location}: {exc}") from exc
            failed = [e for e in answer.get("Errors", []) if e.get("Code") != "NoSuchKey"]
            if failed:
                raise ObjectStoreError(f"Could not remove from {self.location}: {failed[0]}")

    def _where(self, name: str) -> str:
        return f"s3://{self.location.bucket}/{self.location.key(name)}"
