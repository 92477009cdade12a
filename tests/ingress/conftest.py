from __future__ import annotations

import asyncio
import smtplib
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP
from django.db import connection

from accounts.models import Account
from domains.models import Domain
from ingress.routes import RouteCache
from ingress.server import serve
from policies import services as policy_services
from policies.checks import parse_credentials
from policies.models import SmtpSecurityPolicy
from tests.delivery_fixtures import make_webhook
from tests.ingress.processes import (
    BEAT_READY,
    INGRESS_READY,
    WORKER_READY,
    PrivateRedis,
    Service,
    TcpProxy,
    beat_argv,
    ingress_argv,
    service_database_url,
    service_env,
    worker_argv,
)
from webhooks import storage
from webhooks.models import Webhook


class RunningIngress:
    """The real ingress server, on a free loopback port, in a thread of the test process."""

    def __init__(self) -> None:
        self.port = 0
        self.routes = RouteCache()
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            await serve(
                host="127.0.0.1",
                port=0,
                stop=self._stop,
                on_ready=self._on_ready,
                grace=5,
                route_cache=self.routes,
            )

        asyncio.run(main())

    def _on_ready(self, port: int) -> None:
        self.port = port
        self._ready.set()

    def start(self) -> RunningIngress:
        self._thread.start()
        assert self._ready.wait(10), "the ingress did not start"
        return self

    def stop(self) -> None:
        if self._loop and self._stop:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def smtp(self) -> smtplib.SMTP:
        return smtplib.SMTP("127.0.0.1", self.port, local_hostname="sender.example", timeout=20)


@pytest.fixture
def start_ingress(transactional_db: None) -> Iterator[Callable[[], RunningIngress]]:
    """Start the in-thread ingress once the test has set what it needs: settings are
    read when the server starts, as `manage.py ingress` reads them once."""
    servers: list[RunningIngress] = []

    def start() -> RunningIngress:
        server = RunningIngress().start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
    close_other_sessions()


@pytest.fixture
def ingress(start_ingress, settings) -> RunningIngress:
    settings.CONDUIT_ALLOW_INSECURE_AUTH = True
    return start_ingress()


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A self-signed certificate for localhost and 127.0.0.1, made with openssl."""
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return str(cert), str(key)


@pytest.fixture
def tls_client_context(tls_files) -> ssl.SSLContext:
    """What a sender that trusts our test certificate uses for STARTTLS."""
    return ssl.create_default_context(cafile=tls_files[0])


@pytest.fixture
def tls_ingress(start_ingress, settings, tls_files) -> RunningIngress:
    """The ingress as in production: STARTTLS on, AUTH only over TLS."""
    settings.CONDUIT_TLS_CERT, settings.CONDUIT_TLS_KEY = tls_files
    settings.CONDUIT_ALLOW_INSECURE_AUTH = False
    return start_ingress()


@pytest.fixture
def mailauth_settings(settings, dns_server):
    """SPF and DKIM lookups go to the loopback test DNS server, and give up quickly."""
    settings.CONDUIT_DNS_SERVERS = dns_server.address
    settings.CONDUIT_DNS_TIMEOUT = 1.0
    return settings


def make_policy(account: Account, *, credentials: str = "", **fields) -> SmtpSecurityPolicy:
    """A policy made the way the API makes it, so passwords are hashed as in production."""
    return policy_services.smtp_policy_create(
        account=account,
        name=fields.pop("name", "Test policy"),
        ip="127.0.0.1",
        smtp_credentials=parse_credentials(credentials) if credentials else (),
        **fields,
    )


# The credentials of protected_webhook's policy.
USER, PASSWORD = "mailer", "correct horse battery"


@pytest.fixture
def protected_webhook(alice, alice_domain, httpserver, delivery_settings) -> Webhook:
    """team@alice.example, behind a policy that requires SMTP AUTH as USER."""
    policy = make_policy(alice, require_smtp_auth=True, credentials=f"{USER}:{PASSWORD}")
    httpserver.expect_request("/team").respond_with_data("ok")
    return hook(
        alice,
        alice_domain,
        httpserver.url_for("/team"),
        "team@alice.example",
        smtp_security_policy=policy,
    )


def hook(account: Account, domain: Domain, url: str, address: str, **fields: object) -> Webhook:
    return make_webhook(account, domain, url, address=address, **fields)


def close_other_sessions() -> None:
    """The ingress's worker threads and the service subprocesses keep their own
    connections; the test database must be free to be dropped."""
    if not storage.on_postgresql():
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )


# --- Services in their own processes ---------------------------------------------------------


class Stack:
    """Conduit's processes (ingress, worker, beat) started the way Procfile starts them,
    with settings from environment variables, against the test database."""

    def __init__(self, *, redis: PrivateRedis, directory: Path) -> None:
        self.redis = redis
        self.directory = directory
        self.services: list[Service] = []
        self.extra_env: dict[str, str] = {}

    def env(self, **extra: str) -> dict:
        return service_env(
            database_url=service_database_url(),
            redis_url=self.redis.url,
            var_dir=self.directory,
            **{**self.extra_env, **extra},
        )

    def spawn(self, name: str, argv: list[str], *, ready: str, **env: str) -> Service:
        service = Service(name, argv, env=self.env(**env), log_dir=self.directory, ready=ready)
        self.services.append(service)
        return service

    def ingress(self, name: str = "ingress", **env: str) -> Service:
        return self.spawn(name, ingress_argv(port=0), ready=INGRESS_READY, **env)

    def worker(self, name: str = "worker", **env: str) -> Service:
        return self.spawn(name, worker_argv(name), ready=WORKER_READY, **env)

    def beat(self, name: str = "beat", **env: str) -> Service:
        schedule = self.directory / f"{name}-schedule"
        return self.spawn(name, beat_argv(schedule), ready=BEAT_READY, **env)

    @staticmethod
    def wait_ready(*services: Service) -> None:
        for service in services:
            service.wait_ready()

    @staticmethod
    def ingress_port(service: Service) -> int:
        return int(service.wait_ready().group(1))

    def stop(self) -> None:
        # SIGTERM to all first, so they shut down side by side.
        for service in self.services:
            if service.process.poll() is None:
                service.process.terminate()
        for service in self.services:
            service.stop()


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis().start()
    yield server
    server.stop()


@pytest.fixture
def stack(transactional_db, private_redis, tmp_path) -> Iterator[Stack]:
    services = Stack(redis=private_redis, directory=tmp_path)
    yield services
    services.stop()
    close_other_sessions()


@pytest.fixture
def db_proxy(transactional_db) -> Iterator[TcpProxy]:
    """A cuttable relay to the PostgreSQL server the tests use."""
    db = connection.settings_dict
    proxy = TcpProxy(target=(db["HOST"] or "127.0.0.1", int(db["PORT"] or 5432)))
    yield proxy
    proxy.close()


class RawSession:
    """An SMTP session over a plain socket, for bytes smtplib would not send
    (8-bit commands, NUL): one command in, its whole reply out."""

    def __init__(self, port: int, *, source: str = "127.0.0.1") -> None:
        self.sock = socket.create_connection(
            ("127.0.0.1", port), timeout=20, source_address=(source, 0)
        )
        self.buffer = b""
        self.greeting = self.reply()

    def reply(self) -> bytes:
        """The next reply, all its lines, CRLFs between them; b"" once the server closed."""
        lines = []
        while True:
            while b"\r\n" not in self.buffer:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return b"\r\n".join(lines)
                self.buffer += chunk
            line, self.buffer = self.buffer.split(b"\r\n", 1)
            lines.append(line)
            if line[3:4] != b"-":
                return b"\r\n".join(lines)

    def send(self, command: bytes) -> bytes:
        self.sock.sendall(command + b"\r\n")
        return self.reply()

    def closed_by_server(self) -> bool:
        return self.sock.recv(1) == b""

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- aiosmtpd as installed, beside Conduit's protocol ------------------------------------


class Keep:
    """A handler that keeps what each DATA delivered, for both servers alike."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(bytes(envelope.original_content))
        return "250 OK"


class SideBySide:
    """aiosmtpd's SMTP and LeanSMTP, served on loopback by one event loop in a
    thread, each with its own Keep handler, with the same settings."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self._servers: dict[tuple, tuple[int, Keep]] = {}

    def port(self, protocol: type[SMTP], **options: Any) -> tuple[int, Keep]:
        key = (protocol, tuple(sorted(options.items())))
        if key not in self._servers:
            handler = Keep()

            async def start() -> int:
                server = await self.loop.create_server(
                    lambda: protocol(handler, hostname="mx.test", **options), "127.0.0.1", 0
                )
                return server.sockets[0].getsockname()[1]

            port = asyncio.run_coroutine_threadsafe(start(), self.loop).result(10)
            self._servers[key] = (port, handler)
        return self._servers[key]

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


@pytest.fixture(scope="module")
def side_by_side() -> Iterator[SideBySide]:
    servers = SideBySide()
    yield servers
    servers.close()
