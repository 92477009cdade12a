"""Tests for webhooks.outbound.post against real local servers (127.0.0.1 only)."""

import contextlib
import logging
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import urllib3.util.connection
from werkzeug import Request, Response

from webhooks import outbound
from webhooks.outbound import AttemptResult, ErrorKind, post

SMALL = 0.5  # total_timeout used by the hanging-target tests


# --- helpers ----------------------------------------------------------------------


def _read_request(conn: socket.socket) -> bytes:
    """Read one HTTP request (headers + Content-Length body) from ``conn``."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        rest += chunk
    return head + b"\r\n\r\n" + rest


class RawServer:
    """A tiny TCP server on 127.0.0.1 running ``handler(conn, stop)`` per connection."""

    def __init__(self, handler: Callable[[socket.socket, threading.Event], None]) -> None:
        self.handler = handler
        self.stop = threading.Event()
        self.accepted = 0
        self.requests: list[bytes] = []
        self._conns: list[socket.socket] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.05)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.accepted += 1
            self._conns.append(conn)
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            self.handler(conn, self.stop)

    def close(self) -> None:
        self.stop.set()
        self._thread.join(2)
        self.sock.close()
        for conn in self._conns:
            conn.close()


@pytest.fixture
def raw_server() -> Iterator[Callable[..., RawServer]]:
    servers: list[RawServer] = []

    def start(handler: Callable[[socket.socket, threading.Event], None]) -> RawServer:
        server = RawServer(handler)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def connects(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """Record (and refuse) every outbound TCP connection urllib3 tries to open."""
    calls: list[tuple] = []

    def fake_create_connection(address, *args, **kwargs):
        calls.append(address)
        raise AssertionError(f"unexpected connection attempt to {address}")

    monkeypatch.setattr(urllib3.util.connection, "create_connection", fake_create_connection)
    return calls


def _post(url: str, **kwargs) -> AttemptResult:
    kwargs.setdefault("allow_private", True)
    kwargs.setdefault("headers", {"Content-Type": "application/json"})
    return post(url=url, body=b'{"hello":"world"}', **kwargs)


# --- normal responses -------------------------------------------------------------


def test_200_with_body(httpserver):
    httpserver.expect_request("/hook", method="POST", data=b'{"hello":"world"}').respond_with_data(
        "thanks ✓", status=200
    )
    result = _post(
        httpserver.url_for("/hook"),
        headers={"Content-Type": "application/json", "webhook-id": "msg_1"},
    )
    assert result.http_status == 200
    assert result.response_body == "thanks ✓"
    assert result.error is None and result.error_kind is None
    assert result.retry_after is None
    assert result.duration_ms >= 0
    request, _ = httpserver.log[0]
    assert request.headers["User-Agent"] == "Conduit-Webhooks/1.0"
    assert request.headers["webhook-id"] == "msg_1"
    assert request.headers["Content-Type"] == "application/json"


def test_500(httpserver):
    httpserver.expect_request("/hook").respond_with_data("boom", status=500)
    result = _post(httpserver.url_for("/hook"))
    assert (result.http_status, result.response_body, result.error) == (500, "boom", None)


def test_redirect_is_not_followed(httpserver):
    httpserver.expect_request("/hook").respond_with_data(
        "", status=302, headers={"Location": httpserver.url_for("/elsewhere")}
    )
    httpserver.expect_request("/elsewhere").respond_with_data("followed!")
    result = _post(httpserver.url_for("/hook"))
    assert result.http_status == 302
    assert [req.path for req, _ in httpserver.log] == ["/hook"]


def test_body_truncated_at_max_body_bytes(httpserver):
    httpserver.expect_request("/hook").respond_with_data("a" * 100_000)
    result = _post(httpserver.url_for("/hook"), max_body_bytes=1000)
    assert result.http_status == 200
    assert result.response_body == "a" * 1000


def test_max_body_bytes_zero_reads_nothing(httpserver):
    httpserver.expect_request("/hook").respond_with_data("abc")
    result = _post(httpserver.url_for("/hook"), max_body_bytes=0)
    assert (result.http_status, result.response_body) == (200, "")


def test_invalid_utf8_is_replaced(httpserver):
    httpserver.expect_request("/hook").respond_with_data(b"ok \xff\xfe")
    assert _post(httpserver.url_for("/hook")).response_body == "ok \ufffd\ufffd"


def test_retry_after_captured(httpserver):
    httpserver.expect_request("/hook").respond_with_data(
        "slow down", status=429, headers={"Retry-After": "120"}
    )
    result = _post(httpserver.url_for("/hook"))
    assert (result.http_status, result.retry_after) == (429, "120")


def test_cookies_are_never_sent_back(httpserver):
    seen: list[str | None] = []

    def handler(request: Request) -> Response:
        seen.append(request.headers.get("Cookie"))
        response = Response("ok")
        response.set_cookie("session", "secret-of-receiver-a")
        return response

    httpserver.expect_request("/hook").respond_with_handler(handler)
    _post(httpserver.url_for("/hook"))
    _post(httpserver.url_for("/hook"))
    assert seen == [None, None]


def test_connection_is_reused_and_survives_the_deadline(raw_server):
    def keep_alive(conn: socket.socket, stop: threading.Event) -> None:
        while not stop.is_set():
            request = _read_request(conn)
            if not request:
                return
            server.requests.append(request)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    server = raw_server(keep_alive)
    first = _post(server.url, total_timeout=0.3)
    time.sleep(0.4)  # past the first attempt's deadline: the pooled socket must be intact
    second = _post(server.url, total_timeout=0.3)
    assert (first.http_status, second.http_status) == (200, 200)
    assert second.response_body == "ok"
    assert len(server.requests) == 2
    assert server.accepted == 1


# --- failures ---------------------------------------------------------------------


def test_connection_refused():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    result = _post(f"http://127.0.0.1:{port}/")
    assert result.http_status is None
    assert result.error_kind == "connect"
    assert result.error == f"Connection refused by 127.0.0.1:{port}"


def test_target_that_never_answers_times_out(raw_server):
    server = raw_server(lambda conn, stop: stop.wait(5))
    started = time.monotonic()
    result = _post(server.url, connect_timeout=SMALL, total_timeout=SMALL)
    elapsed = time.monotonic() - started
    assert result.http_status is None
    assert result.error_kind == "timeout"
    assert result.error == f"Timed out after {SMALL} s waiting for the target"
    assert SMALL * 0.8 <= elapsed < SMALL + 0.5


def test_headers_then_silence_times_out_keeping_status(raw_server):
    def handler(conn: socket.socket, stop: threading.Event) -> None:
        _read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\npartial")
        stop.wait(5)

    server = raw_server(handler)
    started = time.monotonic()
    result = _post(server.url, total_timeout=SMALL)
    assert time.monotonic() - started < SMALL + 0.5
    assert result.http_status == 200
    assert result.error_kind == "timeout"
    assert "reading the response body" in result.error
    assert result.response_body == "partial"


def test_trickled_body_is_cut_at_total_timeout(raw_server):
    def handler(conn: socket.socket, stop: threading.Event) -> None:
        _read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
        while not stop.wait(0.02):  # always well inside any socket timeout
            conn.sendall(b"x")

    server = raw_server(handler)
    started = time.monotonic()
    result = _post(server.url, total_timeout=SMALL)
    assert time.monotonic() - started < SMALL + 0.5
    assert (result.http_status, result.error_kind) == (200, "timeout")
    assert set(result.response_body) <= {"x"}


def test_one_watchdog_thread_serves_every_attempt(httpserver):
    # A thread per attempt (threading.Timer) cost more than the POST itself.
    httpserver.expect_request("/hook").respond_with_data("ok")
    before = threading.active_count()
    for _ in range(20):
        assert _post(httpserver.url_for("/hook")).http_status == 200
    watchdogs = [t for t in threading.enumerate() if t.name == "delivery-deadlines"]
    assert len(watchdogs) == 1
    assert threading.active_count() <= before + 1


def test_an_earlier_deadline_is_not_held_up_by_a_later_one(raw_server):
    def silent(conn: socket.socket, stop: threading.Event) -> None:
        _read_request(conn)
        stop.wait(30)

    server = raw_server(silent)
    outbound._watchdog.schedule(outbound._Deadline(), 60)  # far later, queued first
    started = time.monotonic()
    result = _post(server.url, total_timeout=SMALL)
    assert result.error_kind == "timeout"
    assert time.monotonic() - started < SMALL + 0.5


def test_trickled_headers_are_cut_at_total_timeout(raw_server):
    def handler(conn: socket.socket, stop: threading.Event) -> None:
        _read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
        while not stop.wait(0.02):
            conn.sendall(b"a")

    server = raw_server(handler)
    started = time.monotonic()
    result = _post(server.url, total_timeout=SMALL)
    assert time.monotonic() - started < SMALL + 0.5
    assert (result.http_status, result.error_kind) == (None, "timeout")


def test_garbage_response_is_a_connect_error(raw_server):
    def handler(conn: socket.socket, stop: threading.Event) -> None:
        _read_request(conn)
        conn.sendall(b"SSH-2.0-OpenSSH\r\n")
        conn.close()

    result = _post(raw_server(handler).url, total_timeout=SMALL)
    assert result.http_status is None
    assert result.error_kind == "connect"


def test_unsupported_scheme_is_reported_not_raised():
    result = _post("ftp://127.0.0.1/x")
    assert (result.http_status, result.error_kind) == (None, "other")
    assert "only http:// and https://" in result.error


# --- SSRF guard -------------------------------------------------------------------


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A listening socket that must never see a connection."""
    sock = socket.create_server(("127.0.0.1", 0))
    sock.setblocking(False)
    yield sock
    sock.close()


def _assert_nothing_accepted(sock: socket.socket) -> None:
    with pytest.raises(BlockingIOError):
        sock.accept()


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/",
        "http://[::ffff:127.0.0.1]:{port}/",
        "http://localhost:{port}/",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/",
        "https://10.0.0.1/",
        "http://192.168.1.1/",
        "http://172.16.0.1/",
        "http://100.64.0.1/",
        "http://0.0.0.0:{port}/",
        "http://[::1]:{port}/",
        "http://[::]/",
        "http://[fe80::1]/",
        "http://[fc00::1]/",
        "http://[fec0::1]/",
        "http://[::127.0.0.1]/",
        "http://[::ffff:10.0.0.1]/",
        "http://224.0.0.1/",
        "http://240.0.0.1/",
        "http://255.255.255.255/",
    ],
)
def test_private_targets_refused_without_connecting(url, listener, connects):
    port = listener.getsockname()[1]
    started = time.monotonic()
    result = post(url=url.format(port=port), body=b"{}", headers={}, total_timeout=SMALL)
    assert time.monotonic() - started < 0.2
    assert result.http_status is None
    assert result.error_kind == "ssrf"
    assert result.error.startswith("Blocked: ")
    assert result.error.endswith("webhook targets must be public internet addresses")
    assert connects == []
    _assert_nothing_accepted(listener)


def test_localhost_message_names_the_host_not_the_address(connects):
    result = post(url="http://localhost:9/", body=b"{}", headers={})
    assert result.error_kind is ErrorKind.SSRF
    assert result.error == (
        "Blocked: localhost does not resolve to a public internet address; "
        "webhook targets must be public internet addresses"
    )
    assert connects == []


def test_a_literal_refusal_names_the_literal(connects):
    result = post(url="http://10.0.0.1/", body=b"{}", headers={})
    assert result.error == (
        "Blocked: 10.0.0.1 is not a public internet address; "
        "webhook targets must be public internet addresses"
    )


@pytest.mark.parametrize("url", ["http://localhost:9/", "http://10.0.0.1/"])
def test_the_refusal_names_the_setting_in_development(url, connects):
    result = post(url=url, body=b"{}", headers={}, name_private_setting=True)
    assert result.error.endswith(
        "(set CONDUIT_ALLOW_PRIVATE_TARGETS=true to allow private targets in development)"
    )


def _fake_dns(monkeypatch: pytest.MonkeyPatch, answers: dict[str, str]) -> None:
    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host not in answers:
            return real_getaddrinfo(host, port, *args, **kwargs)
        ip = answers[host]
        if ":" in ip:
            return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", (ip, port, 0, 0))]
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.mark.parametrize(
    "ip",
    [
        "10.1.2.3",
        "169.254.169.254",
        "100.64.0.1",  # shared address space
        "fec0::1",  # site-local: not covered by requests-hardened itself
        "::127.0.0.1",  # IPv4-compatible IPv6: not covered by requests-hardened itself
        "::ffff:169.254.169.254",
    ],
)
def test_hostname_resolving_to_private_address_refused(ip, monkeypatch, connects, caplog):
    _fake_dns(monkeypatch, {"hooks.example.com": ip})
    with caplog.at_level(logging.DEBUG):
        result = post(url="https://hooks.example.com/in", body=b"{}", headers={})
    assert result.error_kind == "ssrf"
    assert result.error.startswith("Blocked: hooks.example.com does not resolve to a public")
    assert connects == []
    # Not a DNS oracle: neither the answer nor any log line tells the address.
    bare = ip.split(":")[-1]
    assert bare not in result.error and ip not in result.error
    assert not [r for r in caplog.records if bare in r.getMessage()]


def test_public_hostname_is_pinned_and_keeps_host_header(monkeypatch, raw_server):
    """A public answer passes the guard; the connection goes to the checked IP."""

    def handler(conn: socket.socket, stop: threading.Event) -> None:
        server.requests.append(_read_request(conn))
        conn.sendall(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")

    server = raw_server(handler)
    _fake_dns(monkeypatch, {"hooks.example.com": "93.184.216.34"})
    dialled: list[tuple] = []
    real_create_connection = urllib3.util.connection.create_connection

    def create_connection(address, *args, **kwargs):
        dialled.append(address)  # never leave the machine: dial the local server instead
        return real_create_connection(("127.0.0.1", server.port), *args, **kwargs)

    monkeypatch.setattr(urllib3.util.connection, "create_connection", create_connection)
    result = post(url="http://hooks.example.com:8080/in", body=b"{}", headers={})
    assert result.http_status == 204, result
    assert dialled == [("93.184.216.34", 8080)]
    head = server.requests[0].split(b"\r\n\r\n")[0].lower()
    assert b"\r\nhost: hooks.example.com:8080" in head
    assert b"\r\nuser-agent: conduit-webhooks/1.0" in head


def test_sessions_are_per_flag_and_rebuilt_after_fork():
    private, public = outbound._session(True), outbound._session(False)
    assert private is not public
    assert outbound._session(True) is private
    outbound._reset_after_fork()
    assert outbound._session(True) is not private


@pytest.fixture
def tls_cert(tmp_path):
    """A throwaway self-signed certificate for hooks.example.com (needs the openssl CLI)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl CLI not available")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            openssl, "req", "-x509", "-nodes", "-days", "2",
            "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-keyout", str(key), "-out", str(cert),
            "-subj", "/CN=hooks.example.com",
            "-addext", "subjectAltName=DNS:hooks.example.com",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.mark.parametrize("trusted", [True, False])
def test_https_is_pinned_and_keeps_sni(trusted, tls_cert, monkeypatch, raw_server):
    """Over TLS the pinned connection still sends SNI and checks the certificate for
    the URL's host name, not for the IP address."""
    cert, key = tls_cert
    server_names: list[str | None] = []
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    server_ctx.sni_callback = lambda sslobj, name, ctx: server_names.append(name)

    def handler(conn: socket.socket, stop: threading.Event) -> None:
        tls = server_ctx.wrap_socket(conn, server_side=True)
        server.requests.append(_read_request(tls))
        tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        tls.close()

    server = raw_server(handler)
    _fake_dns(monkeypatch, {"hooks.example.com": "93.184.216.34"})
    real_create_connection = urllib3.util.connection.create_connection
    dialled: list[tuple] = []

    def create_connection(address, *args, **kwargs):
        dialled.append(address)
        return real_create_connection(("127.0.0.1", server.port), *args, **kwargs)

    monkeypatch.setattr(urllib3.util.connection, "create_connection", create_connection)
    outbound._reset_after_fork()  # fresh pools; dropped again below
    if trusted:
        monkeypatch.setattr(outbound._session(False), "verify", str(cert))
    try:
        result = post(url="https://hooks.example.com/in", body=b"{}", headers={})
    finally:
        outbound._reset_after_fork()
    assert dialled == [("93.184.216.34", 443)]
    assert server_names == ["hooks.example.com"]
    if trusted:
        assert (result.http_status, result.response_body) == (200, "ok")
        assert b"\r\nHost: hooks.example.com\r\n" in server.requests[0]
    else:
        assert (result.http_status, result.error_kind) == (None, "connect")
        assert result.error.startswith("TLS handshake with hooks.example.com:443 failed")
        assert "certificate verify failed" in result.error


def test_error_kinds_keep_their_stored_values():
    assert [kind.value for kind in ErrorKind] == ["connect", "timeout", "ssrf", "other", "template"]
    assert ErrorKind.SSRF == "ssrf"


@pytest.mark.parametrize(
    "text",
    [
        "HTTPConnectionPool(host='10.9.8.7', port=80): Read timed out.",
        "HTTPSConnectionPool(host='[fd00::7]', port=443): Max retries exceeded",
        "Failed to connect to fd00:0:0:0::7 and ::ffff:10.9.8.7",
    ],
)
def test_messages_from_exceptions_lose_resolved_addresses(text):
    cleaned = outbound._without_addresses(text, "hooks.example.com")
    assert "10.9.8.7" not in cleaned and "fd00" not in cleaned
    assert "hooks.example.com" in cleaned
