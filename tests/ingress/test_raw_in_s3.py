"""Raw messages in a real S3 server (SeaweedFS on loopback): stored before the 250,
read back by the worker, purged with their rows, and never a 250 when the store fails."""

from __future__ import annotations

import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.utils import timezone

from tests.ingress.conftest import hook
from tests.webhooks.test_delivery import wait_for
from webhooks import rawstore
from webhooks.models import Delivery, InboundMessage
from webhooks.tasks import purge_raw_messages

pytestmark = pytest.mark.django_db(transaction=True)

MESSAGE = (
    b"From: Sender <sender@sender.example>\r\n"
    b"To: team@alice.example\r\n"
    b"Subject: Kept in a bucket\r\n"
    b"Message-ID: <s3@sender.example>\r\n"
    b"\r\n"
    b"Stored as an object.\r\n"
)


@pytest.fixture
def team(alice, alice_domain, httpserver, delivery_settings):
    return hook(alice, alice_domain, httpserver.url_for("/team"), "team@alice.example")


def send(ingress, raw: bytes = MESSAGE) -> tuple[int, bytes]:
    with ingress.smtp() as smtp:
        smtp.ehlo()
        smtp.mail("sender@sender.example")
        smtp.rcpt("team@alice.example")
        return smtp.data(raw)


def test_a_message_is_stored_in_s3_and_the_worker_delivers_it_from_there(
    raw_in_s3, ingress, team, httpserver, celery_worker
):
    httpserver.expect_request("/team").respond_with_data("ok")

    code, reply = send(ingress)

    assert code == 250, reply
    message = InboundMessage.objects.get()
    assert reply.decode().endswith(message.id.hex)
    assert message.raw is None
    assert message.raw_store == raw_in_s3.location
    assert message.size == len(MESSAGE)
    assert raw_in_s3.server.get(raw_in_s3.key(message.id)) == MESSAGE
    wait_for(lambda: Delivery.objects.get().status == Delivery.Status.DELIVERED)
    request, _ = httpserver.log[0]
    assert json.loads(request.get_data())["subject"] == "Kept in a bucket"
    assert rawstore.raw_bytes(message) == MESSAGE


def test_concurrent_sessions_write_every_object(raw_in_s3, ingress, team):
    def one(n: int) -> int:
        code, _ = send(ingress, MESSAGE + f"{n}\r\n".encode())
        return code

    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(one, range(16)))

    assert codes == [250] * 16
    ids = list(InboundMessage.objects.values_list("id", flat=True))
    assert sorted(raw_in_s3.keys()) == sorted(raw_in_s3.key(i) for i in ids)
    bodies = {rawstore.raw_bytes(m) for m in InboundMessage.objects.all()}
    assert bodies == {MESSAGE + f"{n}\r\n".encode() for n in range(16)}


def test_a_store_that_is_down_gets_451_and_nothing_is_stored(
    raw_in_s3, start_ingress, team, settings, monkeypatch
):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    settings.CONDUIT_RAW_STORAGE_TIMEOUT = 1.0  # a new client, on the closed port
    settings.CONDUIT_ALLOW_INSECURE_AUTH = True
    ingress = start_ingress()

    code, reply = send(ingress)

    assert (code, reply[:5]) == (451, b"4.3.0")
    assert not InboundMessage.objects.exists()
    assert not Delivery.objects.exists()


def test_a_store_slower_than_its_timeout_gets_451_within_the_bound(
    raw_in_s3, start_ingress, team, settings, monkeypatch
):
    # Accepts connections, never answers: a hung store.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held = []
    stop = threading.Event()

    def hold() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{listener.getsockname()[1]}")
    settings.CONDUIT_RAW_STORAGE_TIMEOUT = 0.5
    settings.CONDUIT_ALLOW_INSECURE_AUTH = True
    try:
        ingress = start_ingress()
        started = time.monotonic()
        code, reply = send(ingress)
        took = time.monotonic() - started
    finally:
        stop.set()
        thread.join()
        for connection in held:
            connection.close()
        listener.close()

    assert (code, reply[:5]) == (451, b"4.3.0")
    # Two attempts of 0.5 s and a backoff, well before the 20 s store timeout
    # (given room for a loaded machine).
    assert took < 12
    assert not InboundMessage.objects.exists()


def test_the_purge_deletes_the_object(raw_in_s3, ingress, team, httpserver):
    # The module's worker may deliver it meanwhile: then it is delivered either way.
    httpserver.expect_request("/team").respond_with_data("ok")
    code, _ = send(ingress)
    assert code == 250
    message = InboundMessage.objects.get()
    Delivery.objects.update(status=Delivery.Status.DELIVERED)
    InboundMessage.objects.update(received_at=timezone.now() - timezone.timedelta(days=8))

    assert purge_raw_messages() == 1

    assert raw_in_s3.keys() == []
    message.refresh_from_db()
    assert message.raw_purged_at is not None
    with pytest.raises(rawstore.RawMessageGone):
        rawstore.raw_bytes(message)


def test_an_object_gone_from_the_store_reads_as_gone(raw_in_s3, ingress, team):
    send(ingress)
    message = InboundMessage.objects.get()
    raw_in_s3.server.client().delete_object(Bucket="conduit-raw", Key=raw_in_s3.key(message.id))
    with pytest.raises(rawstore.RawMessageGone):
        rawstore.raw_bytes(message)


def test_messages_stored_before_a_switch_stay_readable_where_they_are(
    raw_in_s3, ingress, team, settings
):
    send(ingress)
    settings.CONDUIT_RAW_STORAGE = "database"
    message = InboundMessage.objects.get()
    assert rawstore.raw_bytes(message) == MESSAGE
