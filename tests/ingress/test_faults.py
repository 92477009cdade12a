"""Faults, with every service in its own process: a broker that goes away, a worker
killed in the middle of a delivery, a database that stops answering.

Each test has a redis-server of its own and reaches PostgreSQL through a proxy
it can cut, so the shared Redis and PostgreSQL never notice.
"""

from __future__ import annotations

import smtplib
import threading

import pytest
import redis
from werkzeug import Request, Response

from tests.ingress.conftest import hook
from tests.ingress.processes import service_database_url
from tests.webhooks.test_delivery import wait_for
from webhooks.models import Delivery, DeliveryLog, InboundMessage

pytestmark = pytest.mark.django_db(transaction=True)

MESSAGE = (
    b"From: Sender <sender@sender.example>\r\n"
    b"To: team@alice.example\r\n"
    b"Subject: Against the odds\r\n"
    b"Message-ID: <fault@sender.example>\r\n"
    b"\r\n"
    b"It got there.\r\n"
)
# The sweep runs every second and takes a task as lost one second after it was
# enqueued; an attempt's lease is 2 s + 1 s.
FAST_RECOVERY = {
    "CONDUIT_SWEEP_INTERVAL": "1",
    "CONDUIT_REQUEUE_AFTER": "1",
    "CONDUIT_DELIVERY_TIMEOUT": "2",
    "CONDUIT_DELIVERY_LEASE_MARGIN": "1",
}


def queued_tasks(stack) -> int:
    """Tasks waiting in the private broker's default queue (no worker runs here)."""
    client = redis.Redis(host="127.0.0.1", port=stack.redis.port)
    try:
        return int(client.llen("celery"))
    finally:
        client.close()


def smtp_to(port: int) -> smtplib.SMTP:
    return smtplib.SMTP("127.0.0.1", port, local_hostname="sender.example", timeout=30)


@pytest.fixture
def team_webhook(alice, alice_domain, httpserver):
    return hook(alice, alice_domain, httpserver.url_for("/team"), "team@alice.example")


def test_it_accepts_mail_while_the_broker_is_down_and_the_sweep_delivers_it_later(
    stack, team_webhook, httpserver
):
    httpserver.expect_request("/team").respond_with_data("ok")
    stack.extra_env = FAST_RECOVERY
    ingress = stack.ingress()
    port = stack.ingress_port(ingress)
    stack.redis.stop()

    with smtp_to(port) as smtp:
        refused = smtp.sendmail("sender@sender.example", ["team@alice.example"], MESSAGE)

    assert refused == {}
    delivery = Delivery.objects.get()
    assert (delivery.status, delivery.attempts) == (Delivery.Status.PENDING, 0)
    ingress.wait_for_output(f"Could not enqueue deliveries {delivery.id}; the sweep will retry")

    stack.redis.start()
    stack.wait_ready(stack.worker(), stack.beat())

    wait_for(lambda: Delivery.objects.get().status == Delivery.Status.DELIVERED)
    assert len(httpserver.log) == 1
    assert httpserver.log[0][0].get_json()["subject"] == "Against the odds"


def test_it_delivers_after_the_worker_is_killed_mid_delivery_with_one_webhook_id(
    stack, team_webhook, httpserver
):
    webhook_ids: list[str] = []
    first_arrived, release = threading.Event(), threading.Event()

    def target(request: Request) -> Response:
        webhook_ids.append(request.headers["webhook-id"])
        if len(webhook_ids) == 1:
            first_arrived.set()
            release.wait(10)  # the worker that sent this is killed meanwhile
        return Response("ok")

    httpserver.expect_request("/team").respond_with_handler(target)
    stack.extra_env = FAST_RECOVERY
    ingress, first_worker, beat = stack.ingress(), stack.worker("first"), stack.beat()
    stack.wait_ready(ingress, first_worker, beat)

    with smtp_to(stack.ingress_port(ingress)) as smtp:
        smtp.sendmail("sender@sender.example", ["team@alice.example"], MESSAGE)
    assert first_arrived.wait(20), "the first worker never reached the target"
    assert Delivery.objects.get().status == Delivery.Status.DELIVERING
    first_worker.kill()
    release.set()
    second_worker = stack.worker("second")

    second_worker.wait_ready()
    wait_for(lambda: Delivery.objects.get().status == Delivery.Status.DELIVERED)
    delivery = Delivery.objects.get()
    assert len(webhook_ids) >= 2
    assert set(webhook_ids) == {f"msg_{delivery.id.hex}"}
    # The killed attempt left no trace but its lease; the one that finished is logged.
    assert delivery.attempts == 1
    assert DeliveryLog.objects.filter(delivery=delivery).count() == 1


def test_it_answers_451_and_writes_nothing_when_the_database_is_unreachable(
    stack, db_proxy, team_webhook
):
    ingress = stack.ingress(DATABASE_URL=service_database_url(port=db_proxy.port))
    port = stack.ingress_port(ingress)

    with smtp_to(port) as smtp:
        smtp.ehlo()
        smtp.mail("sender@sender.example")
        rcpt_code, _ = smtp.rcpt("team@alice.example")
        db_proxy.cut()
        code, text = smtp.data(MESSAGE)

    with smtp_to(port) as smtp:
        smtp.ehlo()
        smtp.mail("sender@sender.example")
        later_rcpt_code, later_rcpt_text = smtp.rcpt("team@alice.example")

    assert rcpt_code == 250, ingress.output()
    assert (code, text[:6]) == (451, b"4.3.0 "), ingress.output()
    assert (later_rcpt_code, later_rcpt_text[:6]) == (451, b"4.3.0 "), ingress.output()
    assert not InboundMessage.objects.exists()
    assert not Delivery.objects.exists()

    # Once the database is back, so is the ingress: no restart needed.
    db_proxy.restore()
    with smtp_to(port) as smtp:
        refused = smtp.sendmail("sender@sender.example", ["team@alice.example"], MESSAGE)
    assert refused == {}, ingress.output()
    assert InboundMessage.objects.count() == 1
    assert Delivery.objects.count() == 1


def test_it_writes_nothing_when_the_database_goes_away_in_the_middle_of_accepting(
    stack, db_proxy, team_webhook
):
    ingress = stack.ingress(DATABASE_URL=service_database_url(port=db_proxy.port))
    port = stack.ingress_port(ingress)
    # The message row is written; the connection dies as its deliveries are sent.
    db_proxy.cut_on(b'INSERT INTO "webhooks_delivery"')

    with smtp_to(port) as smtp:
        smtp.ehlo()
        smtp.mail("sender@sender.example")
        smtp.rcpt("team@alice.example")
        code, text = smtp.data(MESSAGE)

    assert (code, text[:6]) == (451, b"4.3.0 "), ingress.output()
    assert not InboundMessage.objects.exists()
    assert not Delivery.objects.exists()
    # Tasks go on the queue on commit only: no task for the rolled-back message.
    assert queued_tasks(stack) == 0

    db_proxy.restore()
    with smtp_to(port) as smtp:
        refused = smtp.sendmail("sender@sender.example", ["team@alice.example"], MESSAGE)
    assert refused == {}, ingress.output()
    assert Delivery.objects.filter(message=InboundMessage.objects.get()).count() == 1
    # Enqueued once committed, just after the 250.
    wait_for(lambda: queued_tasks(stack) == 1)
    assert queued_tasks(stack) == 1


def test_it_gives_up_on_a_database_that_stops_answering_with_451(stack, db_proxy, team_webhook):
    # A black hole, not a cut: the connections stay open and nothing comes
    # back. The ingress waits CONDUIT_INGRESS_STORE_TIMEOUT, not the minutes
    # TCP would take to give up.
    ingress = stack.ingress(
        DATABASE_URL=service_database_url(port=db_proxy.port), CONDUIT_INGRESS_STORE_TIMEOUT="1"
    )
    port = stack.ingress_port(ingress)

    with smtp_to(port) as smtp:
        smtp.ehlo()
        smtp.mail("sender@sender.example")
        rcpt_code, _ = smtp.rcpt("team@alice.example")
        db_proxy.hold()
        code, text = smtp.data(MESSAGE)
        # A recipient never looked up before needs the database too.
        smtp.mail("sender@sender.example")
        lookup_code, lookup_text = smtp.rcpt("ops@alice.example")

    assert rcpt_code == 250, ingress.output()
    assert (code, text) == (
        451,
        b"4.3.0 Temporary failure storing the message; please try again later",
    ), ingress.output()
    assert (lookup_code, lookup_text[:6]) == (451, b"4.3.0 "), ingress.output()
    ingress.wait_for_output("No answer from the database in 1.0 s to storing")

    # Once the database answers again, so does the ingress. The held message
    # is stored too when its statement gets through: the sender, told 451,
    # may send it again (a duplicate, never a loss).
    db_proxy.restore()
    with smtp_to(port) as smtp:
        refused = smtp.sendmail("sender@sender.example", ["team@alice.example"], MESSAGE)
    assert refused == {}, ingress.output()
    wait_for(lambda: InboundMessage.objects.count() == 2)
