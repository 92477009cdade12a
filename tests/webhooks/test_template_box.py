"""One account's template cannot stall another account's deliveries, and the
worker and simulate obey the same limits (webhooks/templating.py, "The box")."""

from __future__ import annotations

from datetime import timedelta

import pytest

from domains.models import Domain
from tests.delivery_fixtures import RAW, accept, make_webhook, wait_for
from webhooks import delivery
from webhooks.models import Delivery, DeliveryLog

# Three nested loops over the message text: 1000**3 iterations without the box.
HOSTILE = (
    "{% for a in text %}{% for b in text %}{% for c in text %}{{ c }}"
    "{% endfor %}{% endfor %}{% endfor %}"
)
LONG_TEXT_RAW = RAW.replace(b"Hi Alice,\r\nthis is the body.\r\n", b"x" * 1000 + b"\r\n")
LOOPS_ERROR = (
    "The payload template failed to render: Template stopped: its loops ran more than "
    "100,000 iterations (CONDUIT_TEMPLATE_MAX_LOOP_ITERATIONS)"
)


@pytest.fixture
def boxed_settings(delivery_settings):
    # The loop limit (default 100,000) is the one that trips; the render-time limit
    # is moved out of the way so the outcome does not depend on the machine's speed.
    delivery_settings.CONDUIT_TEMPLATE_MAX_RENDER_SECONDS = 600.0
    return delivery_settings


@pytest.mark.django_db(transaction=True)
def test_a_hostile_template_does_not_hold_up_another_account(
    alice, alice_domain, bob, httpserver, boxed_settings, celery_worker
):
    hostile = make_webhook(
        alice, alice_domain, httpserver.url_for("/alice"), payload_template=HOSTILE
    )
    bob_domain = Domain.objects.create(account=bob, name="bob.example", verified=True)
    victim = make_webhook(bob, bob_domain, httpserver.url_for("/bob"))
    httpserver.expect_request("/bob").respond_with_data("ok")

    # Two hostile messages queued ahead of bob's, on a one-thread worker.
    first = accept(hostile, raw=LONG_TEXT_RAW).delivery_ids[0]
    second = accept(hostile, raw=LONG_TEXT_RAW).delivery_ids[0]
    bobs = accept(victim).delivery_ids[0]

    wait_for(lambda: Delivery.objects.filter(id=bobs, status=Delivery.Status.DELIVERED).exists())
    # Without the box the first render alone runs 10**9 loop iterations (minutes).
    bobs_row = Delivery.objects.get(id=bobs)
    assert bobs_row.delivered_at - bobs_row.created_at < timedelta(seconds=10)
    # Bob's message went out after the hostile ones ended, each after one attempt,
    # failed for good: nothing reached alice's target and nothing is left to retry.
    order = list(DeliveryLog.objects.order_by("attempted_at").values_list("delivery_id", flat=True))
    assert set(order[:2]) == {first, second} and order[2] == bobs
    for delivery_id in (first, second):
        d = Delivery.objects.get(id=delivery_id)
        assert (d.status, d.attempts, d.next_attempt_at) == (Delivery.Status.FAILED, 1, None)
        log = DeliveryLog.objects.get(delivery_id=delivery_id)
        assert log.error.startswith(LOOPS_ERROR)
        assert log.http_status is None
    assert [request.path for request, _ in httpserver.log] == ["/bob"]


@pytest.mark.django_db
def test_the_worker_fails_an_oversized_output_for_good(
    alice, alice_domain, httpserver, boxed_settings
):
    boxed_settings.CONDUIT_TEMPLATE_MAX_OUTPUT_BYTES = 10_000
    hook = make_webhook(
        alice, alice_domain, httpserver.url_for("/hook"), payload_template="{{ text }}" * 20
    )
    accept(hook, raw=LONG_TEXT_RAW)
    d = Delivery.objects.get()
    delivery.deliver(delivery_id=d.id)
    d.refresh_from_db()
    assert (d.status, d.attempts) == (Delivery.Status.FAILED, 1)
    assert d.last_error.startswith(
        "The payload template failed to render: Template stopped: its output is over "
        "10,000 bytes (CONDUIT_TEMPLATE_MAX_OUTPUT_BYTES)"
    )
    assert delivery.deliver(delivery_id=d.id) == "skipped"
    assert DeliveryLog.objects.count() == 1
    assert httpserver.log == []


@pytest.mark.django_db
def test_simulate_answers_with_the_limit_error(
    alice_api, alice, alice_domain, httpserver, boxed_settings
):
    hook = make_webhook(alice, alice_domain, httpserver.url_for("/hook"), payload_template=HOSTILE)
    r = alice_api.post(f"/api/v1/webhooks/{hook.id}/simulate", {"text": "x" * 1000}, format="json")
    assert r.status_code == 200
    result = r.json()
    assert result["http_status"] is None
    assert result["error"].startswith(LOOPS_ERROR)
    assert result["simulated"] is True
    assert DeliveryLog.objects.get().error == result["error"]
    assert httpserver.log == []
