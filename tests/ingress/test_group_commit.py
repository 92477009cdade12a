"""Group commit: concurrent sessions' messages share a transaction, never a failure."""

from __future__ import annotations

import asyncio
import contextlib
import smtplib
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from ingress import decisions
from ingress.store import GroupCommitter
from tests.ingress.conftest import hook, make_policy
from webhooks.delivery import TASK_BATCH
from webhooks.models import Delivery, InboundMessage, Webhook

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def team(alice, alice_domain) -> Webhook:
    return hook(alice, alice_domain, "http://127.0.0.1:9/", "team@alice.example")


def message(webhook: Webhook, n: int, *, mail_from: str = "sender@sender.example", **kw):
    route = decisions.Route(
        webhook_id=webhook.id,
        account_id=webhook.account_id,
        policy_id=webhook.smtp_security_policy_id,
    )
    return decisions.MessageInput(
        raw=f"Subject: {n}\r\nMessage-ID: <{n}@sender.example>\r\n\r\nHi\r\n".encode(),
        mail_from=mail_from,
        helo="sender.example",
        client_ip="127.0.0.1",
        routes={webhook.address: route},
        **kw,
    )


def test_it_stores_a_group_in_one_go_and_hands_back_the_deliveries(team):
    result = decisions.accept_messages([message(team, n) for n in range(3)])

    stored = {m.id.hex: m for m in InboundMessage.objects.all()}
    assert [reply.rsplit(" ", 1)[-1] in stored for reply in result.replies] == [True] * 3
    assert all(reply.startswith("250 2.0.0 Ok: queued as ") for reply in result.replies)
    assert sorted(result.delivery_ids) == sorted(Delivery.objects.values_list("id", flat=True))
    headers = {m.message_id_header for m in stored.values()}
    assert headers == {f"<{n}@sender.example>" for n in range(3)}


def test_one_message_the_database_refuses_does_not_fail_the_others(team):
    # PostgreSQL refuses NUL in text: this message alone fails, the group is retried one by one.
    bad = message(team, 1, mail_from="bad\x00@sender.example")
    group = [message(team, 0), bad, message(team, 2)]

    replies = decisions.accept_messages(group).replies

    assert replies[0].startswith("250") and replies[2].startswith("250")
    assert replies[1] == decisions.DB_UNAVAILABLE
    assert InboundMessage.objects.count() == 2


@pytest.mark.parametrize("current", [True, False], ids=["one-statement", "in-a-transaction"])
def test_one_message_the_driver_cannot_encode_does_not_fail_the_others(team, current):
    # Not a database error at all: a lone surrogate (a byte that was not UTF-8)
    # fails while the statement is built. Whatever the error, the group is
    # retried one by one and only that message fails.
    bad = message(team, 1, mail_from="j\udcf6ran@sender.example", routes_current=current)
    group = [
        message(team, 0, routes_current=current),
        bad,
        message(team, 2, routes_current=current),
    ]

    result = decisions.accept_messages(group)

    assert result.replies[0].startswith("250") and result.replies[2].startswith("250")
    assert result.replies[1] == decisions.DB_UNAVAILABLE
    assert InboundMessage.objects.count() == 2
    assert sorted(result.delivery_ids) == sorted(Delivery.objects.values_list("id", flat=True))


def test_poison_alongside_legitimate_load_refuses_no_legitimate_message(ingress, team):
    # Poison that passes every check of the envelope and reaches storage: a
    # Message-ID with a NUL, which no text column holds. Four poisoning
    # sessions beside sixteen legitimate ones, all sending at once, so that
    # groups mix the two.
    legitimate, poison = 16, 4
    per_session = 6
    start = threading.Barrier(legitimate + poison)

    def send(n: int) -> list[tuple[bool, int, bytes]]:
        bad = n < poison
        sent = []
        with ingress.smtp() as smtp:
            smtp.ehlo()
            start.wait(20)
            for k in range(per_session):
                message_id = f"<{n}.{k}\x00@poison.example>" if bad else f"<{n}.{k}@sender.example>"
                smtp.mail("sender@sender.example")
                smtp.rcpt("team@alice.example")
                code, text = smtp.data(f"Message-ID: {message_id}\r\nSubject: {n}\r\n\r\nHi\r\n")
                sent.append((bad, code, text))
        return sent

    with ThreadPoolExecutor(legitimate + poison) as pool:
        outcomes = [o for session in pool.map(send, range(legitimate + poison)) for o in session]

    good = [(code, text) for bad, code, text in outcomes if not bad]
    refused = [(code, text) for code, text in good if code != 250]
    assert refused == []
    assert len(good) == legitimate * per_session
    assert {code for bad, code, _ in outcomes if bad} == {451}
    assert InboundMessage.objects.count() == legitimate * per_session
    assert not InboundMessage.objects.filter(message_id_header__contains="poison").exists()


def test_it_reads_the_webhooks_again_unless_the_routes_are_known_current(team):
    Webhook.objects.filter(id=team.id).update(active=False)

    stale = decisions.accept_messages([message(team, 0)]).replies
    assert stale == [decisions.NO_RECIPIENTS_LEFT]
    assert not InboundMessage.objects.exists()


def test_a_policy_that_now_asks_for_spf_sends_the_message_through_the_full_checks(team, alice):
    policy = make_policy(alice, require_spf=True)
    Webhook.objects.filter(id=team.id).update(smtp_security_policy=policy)
    team.refresh_from_db()

    assert decisions.accept_messages([message(team, 0)]).replies == [None]
    assert not InboundMessage.objects.exists()


def test_sessions_that_arrive_during_a_commit_share_the_next_one(team, monkeypatch):
    sizes: list[int] = []
    gate = threading.Event()
    real = decisions.accept_messages

    def held(messages):
        sizes.append(len(messages))
        gate.wait(5)  # the first commit is slow: the others gather meanwhile
        return real(messages)

    monkeypatch.setattr(decisions, "accept_messages", held)

    async def main() -> list:
        committer = GroupCommitter(asyncio.get_running_loop())
        try:
            first = asyncio.ensure_future(committer.store(message(team, 0)))
            await asyncio.sleep(0.2)
            rest = [asyncio.ensure_future(committer.store(message(team, n))) for n in (1, 2, 3)]
            await asyncio.sleep(0.2)
            gate.set()
            return await asyncio.gather(first, *rest)
        finally:
            await asyncio.get_running_loop().run_in_executor(None, committer.close)

    replies = asyncio.run(main())

    assert sizes == [1, 3]
    assert all(reply.startswith("250") for reply in replies)
    assert InboundMessage.objects.count() == 4


def test_parallel_smtp_sessions_are_all_stored_and_delivered_once(ingress, team):
    def send(n: int) -> dict:
        with ingress.smtp() as smtp:
            return smtp.sendmail(
                "sender@sender.example",
                ["team@alice.example"],
                f"Subject: {n}\r\n\r\nHi\r\n".encode(),
            )

    with ThreadPoolExecutor(12) as pool:
        refused = list(pool.map(send, range(24)))

    assert refused == [{}] * 24
    assert InboundMessage.objects.count() == 24
    assert Delivery.objects.filter(webhook=team).count() == 24


def test_a_broken_session_gets_451_and_the_next_one_goes_through(ingress, team, monkeypatch):
    calls = []
    real = decisions.accept_messages

    def flaky(messages):
        calls.append(len(messages))
        if len(calls) == 1:
            raise RuntimeError("unforeseen")
        return real(messages)

    monkeypatch.setattr(decisions, "accept_messages", flaky)
    with ingress.smtp() as smtp:
        smtp.ehlo()
        smtp.mail("sender@sender.example")
        smtp.rcpt("team@alice.example")
        code, _ = smtp.data(b"Subject: one\r\n\r\nHi\r\n")
        refused = smtp.sendmail(
            "sender@sender.example", ["team@alice.example"], b"Subject: two\r\n\r\n"
        )

    assert code == 451
    assert refused == {}
    assert InboundMessage.objects.count() == 1


def test_an_smtp_client_that_drops_during_the_commit_costs_nothing(ingress, team):
    sock = smtplib.SMTP("127.0.0.1", ingress.port, timeout=10)
    sock.ehlo()
    sock.mail("sender@sender.example")
    sock.rcpt("team@alice.example")
    sock.putcmd("data")
    sock.getreply()
    sock.send(b"Subject: gone\r\n\r\nHi\r\n.\r\n")
    sock.close()  # no wait for the 250

    with ingress.smtp() as smtp:
        refused = smtp.sendmail(
            "sender@sender.example", ["team@alice.example"], b"Subject: next\r\n\r\n"
        )
    assert refused == {}
    # The dropped session's message was committed all the same: the sender retries
    # (it never saw a 250), and the duplicate is the price of never losing one.
    assert InboundMessage.objects.count() == 2


@contextlib.contextmanager
def _enqueuing(monkeypatch) -> Iterator[tuple[GroupCommitter, list[tuple[float, list]]]]:
    """A committer whose enqueue thread records each pass (when, which ids)."""
    passes: list[tuple[float, list]] = []
    monkeypatch.setattr(
        "webhooks.accept.publish", lambda ids: passes.append((time.monotonic(), list(ids)))
    )
    committer = GroupCommitter(asyncio.new_event_loop())
    try:
        yield committer, passes
    finally:
        committer.close()


def test_under_load_a_part_filled_task_waits_briefly_for_more_deliveries(monkeypatch):
    # One publish costs the same for one delivery as for four: while groups
    # arrive close together, the enqueue thread fills its tasks. (Wide
    # margins here, so that a slow machine cannot change the outcome.)
    monkeypatch.setattr("ingress.store.LINGER", 2.0)
    monkeypatch.setattr("ingress.store.LINGER_AFTER", 1.0)
    with _enqueuing(monkeypatch) as (committer, passes):
        committer._to_enqueue.put(["first"])  # an idle ingress publishes at once
        wait_for_passes(passes, 1)
        committer._to_enqueue.put(["busy-0"])  # soon after: it waits for more
        time.sleep(0.2)
        assert len(passes) == 1
        committer._to_enqueue.put([f"busy-{n}" for n in range(1, TASK_BATCH)])
        wait_for_passes(passes, 2)

    assert [ids for _, ids in passes] == [["first"], [f"busy-{n}" for n in range(TASK_BATCH)]]
    assert passes[1][0] - passes[0][0] < 1.5  # it went as soon as the task was full


def test_an_idle_ingress_publishes_each_delivery_at_once(monkeypatch):
    monkeypatch.setattr("ingress.store.LINGER", 5.0)
    monkeypatch.setattr("ingress.store.LINGER_AFTER", 0.05)
    with _enqueuing(monkeypatch) as (committer, passes):
        for n in range(3):
            handed = time.monotonic()
            committer._to_enqueue.put([n])
            wait_for_passes(passes, n + 1)
            assert passes[n][0] - handed < 2.5  # not held for the 5 s linger
            time.sleep(0.1)  # idle again

    assert [ids for _, ids in passes] == [[0], [1], [2]]


def wait_for_passes(passes: list, count: int) -> None:
    deadline = time.monotonic() + 5
    while len(passes) < count and time.monotonic() < deadline:
        time.sleep(0.0005)
    assert len(passes) >= count
