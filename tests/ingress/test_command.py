"""`manage.py ingress`: options, settings, its log, and a graceful stop on SIGTERM."""

from __future__ import annotations

import os
import re
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
from pathlib import Path

import aiosmtpd.smtp
import pytest
from django.core.management import CommandError, call_command

from ingress.management.commands.ingress import Command
from ingress.protocol import check_aiosmtpd
from ingress.server import LISTEN_BACKLOG
from tests.ingress.conftest import hook
from tests.ingress.processes import BASE_DIR, free_port, ingress_argv, service_env
from tests.webhooks.test_delivery import wait_for
from webhooks.models import InboundMessage

MESSAGE = b"Subject: Just in time\r\nMessage-ID: <sigterm@sender.example>\r\n\r\nMade it.\r\n"


def test_it_takes_host_and_port_from_settings_unless_given(settings):
    settings.CONDUIT_INGRESS_HOST = "127.0.0.2"
    settings.CONDUIT_INGRESS_PORT = 2626
    parser = Command().create_parser("manage.py", "ingress")

    defaults = parser.parse_args([])
    given = parser.parse_args(["--host", "::1", "--port", "25"])

    assert (defaults.host, defaults.port) == ("127.0.0.2", 2626)
    assert (given.host, given.port) == ("::1", 25)


def test_it_defaults_to_all_interfaces_port_2525(tmp_path):
    # A process with CONDUIT_INGRESS_HOST/PORT unset, whatever this test run has set.
    env = service_env(
        database_url="postgres://nobody@127.0.0.1:1/none", redis_url="", var_dir=tmp_path
    )
    shown = subprocess.run(
        [
            sys.executable,
            "-c",
            "from conduit import settings as s; "
            "print(s.CONDUIT_INGRESS_HOST, s.CONDUIT_INGRESS_PORT)",
        ],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )

    assert shown.stdout.split() == ["0.0.0.0", "2525"]


@pytest.mark.django_db(transaction=True)
def _accepts_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return False
    return True


def test_it_finishes_the_session_in_progress_on_sigterm_then_exits(stack, alice, alice_domain):
    hook(alice, alice_domain, "http://127.0.0.1:9/", "team@alice.example")
    port = free_port()
    # No --host/--port: the command reads CONDUIT_INGRESS_HOST/PORT.
    ingress = stack.spawn(
        "ingress",
        ingress_argv()[:3],
        ready=rf"SMTP ingress listening on 127\.0\.0\.1:{port}",
        CONDUIT_INGRESS_HOST="127.0.0.1",
        CONDUIT_INGRESS_PORT=str(port),
    )
    ingress.wait_ready()
    with smtplib.SMTP("127.0.0.1", port, local_hostname="early.example") as smtp:
        smtp.ehlo()
        smtp.mail("sender@sender.example")
        assert smtp.rcpt("nobody@alice.example")[0] == 550

    idle = smtplib.SMTP("127.0.0.1", port, local_hostname="idle.example", timeout=20)
    idle.ehlo()
    with smtplib.SMTP("127.0.0.1", port, local_hostname="sender.example", timeout=20) as smtp:
        smtp.ehlo()
        smtp.mail("sender@sender.example")
        ingress.send_signal(signal.SIGTERM)
        # With several ingress processes, each says how many of the two it holds.
        ingress.wait_for_output(r"Stopping: no new connections; finishing \d session\(s\)")
        wait_for(lambda: not _accepts_connections(port), timeout=5)
        # The idle session is told to come back later; the transaction goes on.
        idle_goodbye = idle.getreply()
        rcpt_code, _ = smtp.rcpt("team@alice.example")
        data_code, data_text = smtp.data(MESSAGE)
        goodbye = smtp.getreply()

        assert ingress.wait(10) == 0

    idle.close()
    assert idle_goodbye == (421, b"4.3.2 Service shutting down; please try again later")
    assert goodbye == (421, b"4.3.2 Service shutting down; please try again later")
    assert rcpt_code == 250
    assert data_code == 250
    message = InboundMessage.objects.get()
    assert data_text == f"2.0.0 Ok: queued as {message.id.hex}".encode()
    log = ingress.output()
    # One line per session, with what became of it.
    assert re.search(
        r"INFO conduit\.ingress session client=127\.0\.0\.1 helo=early\.example "
        r"accepted=- refused=550\n",
        log,
    )
    assert re.search(
        r"INFO conduit\.ingress session client=127\.0\.0\.1 helo=sender\.example "
        rf"accepted={message.id.hex} refused=-\n",
        log,
    )
    assert "SMTP ingress stopped" in log


def _children(pid: int) -> set[int]:
    found = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found |= {int(c) for c in (task / "children").read_text().split()}
    return found


def _listen_backlog(port: int) -> int | None:
    """The listening socket's accept-queue size, as ss shows it (None without ss)."""
    if shutil.which("ss") is None:
        return None
    out = subprocess.run(
        ["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, check=True
    ).stdout.split()
    return int(out[2])


@pytest.mark.django_db(transaction=True)
def test_it_runs_several_processes_on_one_port_and_replaces_one_that_dies(
    stack, alice, alice_domain
):
    hook(alice, alice_domain, "http://127.0.0.1:9/", "team@alice.example")
    ingress = stack.spawn(
        "ingress", [*ingress_argv(), "--processes", "3"], ready=r"listening on [\d.]+:(\d+)"
    )
    port = int(ingress.wait_ready().group(1))
    wait_for(lambda: len(_children(ingress.pid)) == 3, timeout=10)
    first = _children(ingress.pid)
    # Not asyncio's default of 100: a full accept queue strands senders.
    assert _listen_backlog(port) in (None, LISTEN_BACKLOG)

    def send(n: int) -> dict:
        with smtplib.SMTP("127.0.0.1", port, local_hostname="sender.example", timeout=20) as smtp:
            return smtp.sendmail("sender@sender.example", ["team@alice.example"], MESSAGE)

    assert [send(n) for n in range(12)] == [{}] * 12
    assert InboundMessage.objects.count() == 12

    victim = sorted(first)[0]
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: len(_children(ingress.pid) - {victim}) == 3, timeout=10)
    assert [send(n) for n in range(6)] == [{}] * 6

    ingress.send_signal(signal.SIGTERM)
    assert ingress.wait(15) == 0
    assert "starting another" in ingress.output()
    assert not _accepts_connections(port)


def test_the_installed_aiosmtpd_has_every_private_name_the_protocol_relies_on():
    check_aiosmtpd()  # raises, naming what is missing, otherwise


def test_it_stops_at_start_with_a_clear_message_if_aiosmtpd_lost_a_name(monkeypatch):
    # As if an upstream release renamed a private method ingress/protocol.py overrides.
    monkeypatch.delattr(aiosmtpd.smtp.SMTP, "_getaddr")
    monkeypatch.delattr(aiosmtpd.smtp.SMTP, "_set_post_data_state")

    with pytest.raises(CommandError) as stopped:
        call_command("ingress", "--host", "127.0.0.1", "--port", "0", "--processes", "1")

    assert str(stopped.value) == (
        f"aiosmtpd {aiosmtpd.__version__} lacks _getaddr, _set_post_data_state, which "
        "ingress/protocol.py relies on; install aiosmtpd>=1.4.6,<1.5 (pyproject.toml)"
    )
