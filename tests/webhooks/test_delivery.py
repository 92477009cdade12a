"""The delivery pipeline against real local HTTP servers, Redis and PostgreSQL."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from datetime import timedelta

import pytest
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from standardwebhooks.webhooks import Webhook as StandardWebhook

from tests.delivery_fixtures import RAW, SECRET, accept, make_webhook, wait_for
from webhooks import delivery, services, storage
from webhooks.models import Delivery, DeliveryLog, InboundMessage, Webhook
from webhooks.tasks import purge_raw_messages, sweep_deliveries

# Every behaviour on both halves of webhooks/storage.py.
pytestmark = pytest.mark.usefixtures("storage_half")


def only_delivery() -> Delivery:
    return Delivery.objects.get()


def make_due(d: Delivery) -> None:
    Delivery.objects.filter(id=d.id).update(next_attempt_at=timezone.now())


@pytest.mark.django_db(transaction=True)
def test_it_delivers_through_a_real_worker_with_a_verifiable_signature(
    webhook, httpserver, celery_worker
):
    webhook.custom_headers = {"X-Api-Key": "k-123"}
    webhook.save()
    httpserver.expect_request("/hook", method="POST").respond_with_data("thanks")
    accepted = accept(webhook)
    d = wait_for(
        lambda: Delivery.objects.filter(
            id=accepted.delivery_ids[0], status=Delivery.Status.DELIVERED
        ).first()
    )
    request, _response = httpserver.log[0]
    body = request.get_data()
    headers = {k.lower(): v for k, v in request.headers.items()}
    assert headers["content-type"] == "application/json"
    assert headers["x-api-key"] == "k-123"
    assert headers["webhook-id"] == f"msg_{d.id.hex}"
    StandardWebhook(SECRET).verify(body, headers)  # raises if the signature is wrong
    payload = json.loads(body)
    assert payload["subject"] == "Hello there"
    assert payload["from"] == {"address": "sender@example.net", "name": "Sender Name"}
    assert payload["text"].startswith("Hi Alice,")
    assert payload["envelope"] == {
        "mail_from": "sender@example.net",
        "rcpt_to": ["inbox@alice.example"],
        "client_ip": "192.0.2.10",
        "helo": "mail.example.net",
    }
    assert payload["authentication"]["spf"] == "pass"
    assert payload["authentication"]["dkim"] == ["example.net"]
    assert payload["simulated"] is False
    log = DeliveryLog.objects.get()
    assert (log.http_status, log.error, log.simulated) == (200, "", False)
    assert log.sender == "sender@example.net"
    assert log.smtp_message_id == "<abc123@example.net>"
    assert log.response_body == "thanks"
    assert d.attempts == 1
    assert Webhook.objects.get().log_count == 1


@pytest.mark.django_db(transaction=True)
def test_it_retries_a_500_then_delivers(webhook, httpserver, celery_worker):
    httpserver.expect_oneshot_request("/hook").respond_with_data("down", status=500)
    httpserver.expect_request("/hook").respond_with_data("ok")
    accept(webhook)
    # The first retry comes 5 s (±20 %) later, on a countdown task.
    d = wait_for(
        lambda: Delivery.objects.filter(status=Delivery.Status.DELIVERED).first(), timeout=15
    )
    assert d.attempts == 2
    logs = list(DeliveryLog.objects.order_by("attempted_at").values_list("http_status", flat=True))
    assert logs == [500, 200]
    ids = {request.headers["webhook-id"] for request, _ in httpserver.log}
    assert ids == {f"msg_{d.id.hex}"}


@pytest.mark.django_db
def test_it_schedules_the_retry_in_the_database(webhook, httpserver):
    httpserver.expect_request("/hook").respond_with_data("down", status=503)
    accept(webhook)
    before = timezone.now()
    delivery.deliver(delivery_id=only_delivery().id)
    d = only_delivery()
    assert d.status == Delivery.Status.PENDING
    assert d.attempts == 1
    assert d.last_error == "HTTP 503"
    assert before + timedelta(seconds=3.9) <= d.next_attempt_at <= before + timedelta(seconds=7)
    # Not due yet: a duplicate task does nothing.
    assert delivery.deliver(delivery_id=d.id) == "skipped"
    assert DeliveryLog.objects.count() == 1


@pytest.mark.django_db
def test_it_fails_on_a_400_after_one_attempt(webhook, httpserver):
    httpserver.expect_request("/hook").respond_with_data("bad", status=400)
    accept(webhook)
    delivery.deliver(delivery_id=only_delivery().id)
    d = only_delivery()
    assert d.status == Delivery.Status.FAILED
    assert DeliveryLog.objects.get().http_status == 400
    assert delivery.deliver(delivery_id=d.id) == "skipped"
    assert DeliveryLog.objects.count() == 1


@pytest.mark.django_db
def test_it_deactivates_the_webhook_on_410(webhook, httpserver):
    httpserver.expect_request("/hook").respond_with_data("gone", status=410)
    accept(webhook)
    delivery.deliver(delivery_id=only_delivery().id)
    assert only_delivery().status == Delivery.Status.FAILED
    webhook.refresh_from_db()
    assert webhook.active is False
    assert "410" in webhook.deactivated_reason


@pytest.mark.django_db
def test_it_treats_a_redirect_as_retryable_and_does_not_follow_it(webhook, httpserver):
    httpserver.expect_request("/hook").respond_with_data(
        "", status=302, headers={"Location": "/elsewhere"}
    )
    accept(webhook)
    delivery.deliver(delivery_id=only_delivery().id)
    assert only_delivery().status == Delivery.Status.PENDING
    assert [r.path for r, _ in httpserver.log] == ["/hook"]


@pytest.mark.django_db
def test_it_honours_retry_after_on_429(webhook, httpserver):
    httpserver.expect_request("/hook").respond_with_data(
        "slow down", status=429, headers={"Retry-After": "120"}
    )
    accept(webhook)
    before = timezone.now()
    delivery.deliver(delivery_id=only_delivery().id)
    d = only_delivery()
    assert d.status == Delivery.Status.PENDING
    assert d.next_attempt_at >= before + timedelta(seconds=120)


@pytest.fixture
def hanging_server():
    """Accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    accepted = []
    stop = threading.Event()

    def loop():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                accepted.append(conn)
            except OSError:
                continue

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}/hook"
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    server.close()


@pytest.mark.django_db
def test_it_records_a_timeout_and_waits_at_least_a_minute(
    alice, alice_domain, hanging_server, delivery_settings
):
    delivery_settings.CONDUIT_DELIVERY_TIMEOUT = 0.5
    hook = make_webhook(alice, alice_domain, hanging_server)
    accept(hook)
    before = timezone.now()
    delivery.deliver(delivery_id=only_delivery().id)
    log = DeliveryLog.objects.get()
    assert log.http_status is None
    assert "Timed out" in log.error
    d = only_delivery()
    assert d.status == Delivery.Status.PENDING
    assert d.next_attempt_at >= before + timedelta(seconds=60)


@pytest.mark.django_db
def test_it_retries_a_refused_connection(alice, alice_domain, delivery_settings):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    hook = make_webhook(alice, alice_domain, f"http://127.0.0.1:{port}/hook")
    accept(hook)
    delivery.deliver(delivery_id=only_delivery().id)
    log = DeliveryLog.objects.get()
    assert log.http_status is None
    assert "refused" in log.error.lower()
    assert only_delivery().status == Delivery.Status.PENDING


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:9/hook", "http://169.254.169.254/latest/meta-data/"]
)
@pytest.mark.django_db
def test_it_refuses_private_targets_without_the_dev_setting(alice, alice_domain, settings, url):
    settings.CONDUIT_ALLOW_PRIVATE_TARGETS = False
    hook = make_webhook(alice, alice_domain, url)
    accept(hook)
    delivery.deliver(delivery_id=only_delivery().id)
    log = DeliveryLog.objects.get()
    assert log.http_status is None
    assert "Blocked" in log.error
    assert only_delivery().status == Delivery.Status.FAILED


@pytest.mark.django_db
def test_it_renders_the_payload_template(webhook, httpserver):
    webhook.payload_template = '{"subject": {{ subject|json }}, "to": {{ envelope.rcpt_to|json }}}'
    webhook.save()
    httpserver.expect_request("/hook").respond_with_data("ok")
    accept(webhook)
    delivery.deliver(delivery_id=only_delivery().id)
    request, _ = httpserver.log[0]
    assert request.headers["Content-Type"] == "application/json"
    assert json.loads(request.get_data()) == {
        "subject": "Hello there",
        "to": ["inbox@alice.example"],
    }


@pytest.mark.django_db
def test_it_sends_text_plain_when_the_template_is_not_json(webhook, httpserver):
    webhook.payload_template = "New mail: {{ subject }}"
    webhook.save()
    httpserver.expect_request("/hook").respond_with_data("ok")
    accept(webhook)
    delivery.deliver(delivery_id=only_delivery().id)
    request, _ = httpserver.log[0]
    assert request.headers["Content-Type"].startswith("text/plain")
    assert request.get_data() == b"New mail: Hello there"


def _rate_limited_run(webhook, httpserver) -> None:
    webhook.rate_limit = 2
    webhook.save()
    httpserver.expect_request("/hook").respond_with_data("ok")
    for n in range(5):
        accept(webhook, raw=RAW.replace(b"Hello there", f"Message {n}".encode()))
    for d in Delivery.objects.all():
        delivery.deliver(delivery_id=d.id)
    statuses = sorted(Delivery.objects.values_list("status", flat=True))
    assert statuses.count(Delivery.Status.DELIVERED) == 2
    assert statuses.count(Delivery.Status.PENDING) == 3
    deferred = Delivery.objects.filter(status=Delivery.Status.PENDING)
    now = timezone.now()
    for d in deferred:
        assert d.attempts == 0  # not counted as an attempt
        assert now + timedelta(seconds=30) < d.next_attempt_at <= now + timedelta(seconds=61)
    assert DeliveryLog.objects.count() == 2
    assert len(httpserver.log) == 2


@pytest.mark.django_db
def test_it_rate_limits_across_workers_with_redis(webhook, httpserver):
    _rate_limited_run(webhook, httpserver)


@pytest.mark.django_db
def test_it_rate_limits_without_redis_too(webhook, httpserver, settings):
    settings.REDIS_URL = ""
    _rate_limited_run(webhook, httpserver)


@pytest.mark.django_db
def test_it_holds_deliveries_of_an_inactive_webhook(webhook, httpserver):
    httpserver.expect_request("/hook").respond_with_data("ok")
    accept(webhook)
    Webhook.objects.filter(id=webhook.id).update(active=False)
    assert delivery.deliver(delivery_id=only_delivery().id) == "skipped"
    d = only_delivery()
    assert d.status == Delivery.Status.PENDING
    assert d.attempts == 0
    assert httpserver.log == []


@pytest.mark.django_db
def test_it_sweeps_lost_and_stale_deliveries(webhook, monkeypatch):
    sent = []
    monkeypatch.setattr(delivery, "enqueue_many", lambda ids: sent.extend(ids))
    accept(webhook)
    accept(webhook, raw=RAW + b"2")
    fresh, stale = Delivery.objects.order_by("created_at")
    # Just enqueued: the sweep leaves it to its task.
    assert sweep_deliveries() == 0
    # Its task was lost long ago (broker down): swept.
    Delivery.objects.filter(id=fresh.id).update(enqueued_at=timezone.now() - timedelta(minutes=5))
    # A worker died mid-attempt: its lease ran out.
    Delivery.objects.filter(id=stale.id).update(
        status=Delivery.Status.DELIVERING, leased_until=timezone.now() - timedelta(seconds=1)
    )
    assert sweep_deliveries() == 2
    assert set(sent) == {fresh.id, stale.id}
    sent.clear()
    assert sweep_deliveries() == 0


@pytest.mark.django_db
def test_it_takes_back_a_delivery_whose_worker_died(webhook, httpserver):
    httpserver.expect_request("/hook").respond_with_data("ok")
    accept(webhook)
    d = only_delivery()
    Delivery.objects.filter(id=d.id).update(
        status=Delivery.Status.DELIVERING, leased_until=timezone.now() - timedelta(seconds=1)
    )
    assert delivery.deliver(delivery_id=d.id) == "attempted"
    assert only_delivery().status == Delivery.Status.DELIVERED


@pytest.mark.django_db
def test_it_leaves_a_delivery_alone_while_its_lease_runs(webhook, httpserver):
    accept(webhook)
    d = only_delivery()
    Delivery.objects.filter(id=d.id).update(
        status=Delivery.Status.DELIVERING, leased_until=timezone.now() + timedelta(seconds=30)
    )
    assert delivery.deliver(delivery_id=d.id) == "skipped"


@pytest.mark.django_db
def test_it_fails_after_the_last_scheduled_attempt(webhook, httpserver):
    httpserver.expect_request("/hook").respond_with_data("down", status=500)
    accept(webhook)
    d = only_delivery()
    Delivery.objects.filter(id=d.id).update(attempts=9)
    delivery.deliver(delivery_id=d.id)
    d = only_delivery()
    assert d.attempts == 10
    assert d.status == Delivery.Status.FAILED


@pytest.mark.django_db
def test_it_redelivers_with_the_same_webhook_id(webhook, httpserver, monkeypatch):
    monkeypatch.setattr(delivery, "enqueue", lambda **kw: None)
    httpserver.expect_oneshot_request("/hook").respond_with_data("bad", status=400)
    httpserver.expect_request("/hook").respond_with_data("ok")
    accept(webhook)
    d = only_delivery()
    delivery.deliver(delivery_id=d.id)
    assert only_delivery().status == Delivery.Status.FAILED
    delivery.redeliver(delivery=d)
    delivery.deliver(delivery_id=d.id)
    assert only_delivery().status == Delivery.Status.DELIVERED
    ids = [request.headers["webhook-id"] for request, _ in httpserver.log]
    assert ids == [f"msg_{d.id.hex}"] * 2


@pytest.mark.django_db
def test_it_truncates_the_kept_response_body(webhook, httpserver, settings):
    settings.CONDUIT_DELIVERY_MAX_RESPONSE_BYTES = 20 * 1024
    httpserver.expect_request("/hook").respond_with_data("x" * 50_000)
    accept(webhook)
    delivery.deliver(delivery_id=only_delivery().id)
    assert len(DeliveryLog.objects.get().response_body) == 20 * 1024


@pytest.mark.django_db
def test_it_purges_raw_messages_after_retention_but_keeps_logs(webhook, httpserver):
    httpserver.expect_request("/hook").respond_with_data("ok")
    accept(webhook)
    accept(webhook, raw=RAW + b"pending")
    done, waiting = Delivery.objects.order_by("created_at")
    delivery.deliver(delivery_id=done.id)
    InboundMessage.objects.update(received_at=timezone.now() - timedelta(days=8))
    assert purge_raw_messages() == 1
    assert InboundMessage.objects.get(id=done.message_id).raw is None
    # A message still waiting for delivery keeps its content.
    assert InboundMessage.objects.get(id=waiting.message_id).raw is not None
    assert DeliveryLog.objects.count() == 1


@pytest.mark.django_db
def test_it_counts_a_crash_as_an_attempt(webhook, monkeypatch):
    def explode(**kwargs):
        raise RuntimeError("bug")

    monkeypatch.setattr(delivery, "message_source", explode)
    accept(webhook)
    delivery.deliver(delivery_id=only_delivery().id)
    d = only_delivery()
    assert d.status == Delivery.Status.PENDING
    assert d.attempts == 1
    assert "Internal error" in DeliveryLog.objects.get().error


@pytest.mark.django_db(transaction=True)
def test_a_worker_whose_connection_was_cut_reconnects_and_delivers(
    webhook, httpserver, monkeypatch
):
    # Workers skip the per-task health check while busy; a connection the database
    # dropped meanwhile is found dead at the first read, replaced, and the read rerun.
    monkeypatch.setattr(delivery, "enqueue_many", lambda ids: len(ids))
    httpserver.expect_request("/hook").respond_with_data("ok")
    accept(webhook)
    delivery_id = only_delivery().id
    backend = connection.cursor().connection.info.backend_pid
    other = connections.create_connection("default")
    with other.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [backend])
    other.close()

    assert delivery.deliver(delivery_id=delivery_id) == "attempted"
    assert only_delivery().status == Delivery.Status.DELIVERED
    assert len(httpserver.log) == 1


@pytest.mark.django_db
def test_a_due_delivery_is_claimed_and_read_in_one_statement(webhook, storage_half):
    if storage_half == "orm":
        pytest.skip("the one-statement claim is the PostgreSQL half")
    # The usual claim is one UPDATE ... RETURNING joined to its webhook and
    # message, and what it builds is what the ORM would have read.
    Webhook.objects.filter(id=webhook.id).update(custom_headers={"X-Team": "billing"})
    accept(webhook)
    due = only_delivery()
    with CaptureQueriesContext(connection) as queries:
        claimed = delivery._claim(due.id)
    assert len(queries) == 1
    assert claimed.status == Delivery.Status.DELIVERING
    assert claimed.leased_until > timezone.now()
    assert claimed.rcpt_to == [webhook.address]
    assert claimed.webhook.custom_headers == {"X-Team": "billing"}
    assert claimed.webhook.secret == SECRET
    assert bytes(claimed.message.raw) == RAW
    assert claimed.message.dkim_domains == ["example.net"]
    assert claimed.message.client_ip == "192.0.2.10"
    stored = only_delivery()
    assert (stored.status, stored.leased_until) == (claimed.status, claimed.leased_until)
    # Taken: a second claim (a duplicate task) gets nothing.
    assert delivery._claim(due.id) is None


@pytest.mark.django_db
def test_a_rate_limited_webhook_takes_the_general_claim(webhook, settings):
    settings.REDIS_URL = ""  # counted in the database
    Webhook.objects.filter(id=webhook.id).update(rate_limit=1)
    accept(webhook)
    accept(webhook, raw=RAW + b"2")
    first, second = Delivery.objects.order_by("created_at")
    assert delivery._claim(first.id).status == Delivery.Status.DELIVERING
    DeliveryLog.objects.create(
        webhook=webhook, delivery=first, attempt=1, attempted_at=timezone.now(), duration_ms=1
    )
    assert delivery._claim(second.id) is None  # over the limit: deferred, not leased
    deferred = Delivery.objects.get(id=second.id)
    assert deferred.status == Delivery.Status.PENDING
    assert deferred.next_attempt_at > timezone.now()


@pytest.mark.django_db(transaction=True)
def test_two_workers_never_both_take_the_last_slot_the_database_counts(
    webhook, settings, monkeypatch
):
    from webhooks import ratelimit

    settings.REDIS_URL = ""  # counted in the database
    Webhook.objects.filter(id=webhook.id).update(rate_limit=1)
    ids = [accept(webhook, raw=RAW + bytes([n])).delivery_ids[0] for n in range(2)]
    counted = threading.Barrier(2)
    count = ratelimit._acquire_from_database

    def count_then_wait(**kwargs):
        # Each worker counts, then waits for the other to have counted too:
        # without serialisation both see a free slot. Serialised, the second
        # cannot count until the first has taken its slot (the wait times out).
        wait = count(**kwargs)
        with contextlib.suppress(threading.BrokenBarrierError):
            counted.wait(timeout=2)
        return wait

    monkeypatch.setattr(ratelimit, "_acquire_from_database", count_then_wait)

    def claim(delivery_id):
        try:
            delivery._claim(delivery_id)
        finally:
            connection.close()

    workers = [threading.Thread(target=claim, args=(i,)) for i in ids]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)

    statuses = sorted(Delivery.objects.values_list("status", flat=True))
    assert statuses == [Delivery.Status.DELIVERING, Delivery.Status.PENDING]


def pause(webhook: Webhook) -> None:
    Webhook.objects.filter(id=webhook.id).update(paused_at=timezone.now())


@pytest.mark.django_db
def test_a_paused_webhooks_deliveries_wait_unclaimed_and_unswept(webhook, httpserver, monkeypatch):
    sent = []
    monkeypatch.setattr(delivery, "enqueue_many", lambda ids: sent.extend(ids))
    httpserver.expect_request("/hook").respond_with_data("ok")
    accept(webhook)
    accept(webhook, raw=RAW + b"2")
    due, stale = Delivery.objects.order_by("created_at")
    pause(webhook)
    # The task the ingress queued finds nothing to claim: no attempt, no log.
    assert delivery.deliver(delivery_id=due.id) == "skipped"
    assert storage.claim_due(due.id, timezone.now(), lease=timedelta(seconds=30)) is None
    # Its task long gone, and a lease run out: the sweep still leaves both alone,
    # pass after pass (no task queued only to be skipped).
    Delivery.objects.filter(id=due.id).update(enqueued_at=timezone.now() - timedelta(hours=1))
    Delivery.objects.filter(id=stale.id).update(
        status=Delivery.Status.DELIVERING, leased_until=timezone.now() - timedelta(seconds=1)
    )
    assert sweep_deliveries() == 0
    assert sweep_deliveries() == 0
    assert sent == []
    d = Delivery.objects.get(id=due.id)
    assert (d.status, d.attempts, d.last_error) == (Delivery.Status.PENDING, 0, "")
    assert httpserver.log == [] and not DeliveryLog.objects.exists()


@pytest.mark.django_db
def test_resuming_sends_what_waited_in_order_of_arrival(
    webhook, httpserver, monkeypatch, django_capture_on_commit_callbacks
):
    sent = []
    monkeypatch.setattr(delivery, "enqueue_many", lambda ids: sent.extend(ids))
    httpserver.expect_request("/hook").respond_with_data("ok")
    services.webhook_pause(webhook=webhook, ip=None)
    arrived = [accept(webhook, raw=RAW + str(i).encode()).delivery_ids[0] for i in range(5)]
    # The ingress's tasks ran while paused, and were skipped.
    assert [delivery.deliver(delivery_id=i) for i in arrived] == ["skipped"] * 5
    with django_capture_on_commit_callbacks(execute=True):
        services.webhook_resume(webhook=webhook, ip=None)
    assert sent == arrived
    assert [delivery.deliver(delivery_id=i) for i in sent] == ["attempted"] * 5
    assert set(Delivery.objects.values_list("status", flat=True)) == {Delivery.Status.DELIVERED}
    assert len(httpserver.log) == 5
