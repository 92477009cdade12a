"""RCPT answers from memory, and PostgreSQL tells the ingress when they go stale."""

from __future__ import annotations

import time
import uuid

import psycopg
import pytest

from accounts.models import Account
from ingress.decisions import RecipientFacts
from ingress.routes import CHANNEL, RouteCache, listener_connection_params
from tests.ingress.conftest import hook, make_policy
from tests.webhooks.test_delivery import wait_for
from webhooks.models import AccountMessage, Webhook

FACTS = RecipientFacts(webhook_id=uuid.uuid4(), account_id=uuid.uuid4())


def live_cache(**kwargs) -> RouteCache:
    cache = RouteCache(**kwargs)
    cache.set_live(True)
    return cache


def test_it_keeps_lookups_only_while_live():
    cache = RouteCache()
    cache.put("team@alice.example", FACTS, generation=cache.generation)
    assert cache.get("team@alice.example") == (False, None)

    cache.set_live(True)
    cache.put("Team@Alice.example ", FACTS, generation=cache.generation)
    cache.put("nobody@alice.example", None, generation=cache.generation)
    assert cache.get("team@alice.example") == (True, FACTS)
    # "No such webhook" is kept too: a notification ends it when one is created.
    assert cache.get("nobody@alice.example") == (True, None)

    cache.set_live(False)
    assert cache.get("team@alice.example") == (False, None)


def test_it_drops_a_lookup_that_raced_a_change():
    cache = live_cache()
    started = cache.generation
    cache.clear()  # a notification arrives while the lookup runs
    cache.put("team@alice.example", FACTS, generation=started)
    assert cache.get("team@alice.example") == (False, None)


def test_it_forgets_old_entries_and_the_least_recently_used():
    cache = live_cache(max_entries=2, max_age=0.05)
    for address in ("a@x.example", "b@x.example"):
        cache.put(address, FACTS, generation=cache.generation)
    cache.get("a@x.example")
    cache.put("c@x.example", FACTS, generation=cache.generation)
    assert cache.get("b@x.example") == (False, None)
    assert cache.get("a@x.example") == (True, FACTS)
    time.sleep(0.06)
    assert cache.get("a@x.example") == (False, None)


@pytest.mark.django_db(transaction=True)
def test_the_database_notifies_changes_that_alter_a_lookup_and_only_those(alice, alice_domain, bob):
    webhook = hook(alice, alice_domain, "http://127.0.0.1:9/", "team@alice.example")
    with psycopg.connect(autocommit=True, **listener_connection_params()) as listener:
        listener.execute(f"LISTEN {CHANNEL}")

        def heard() -> int:
            return len(list(listener.notifies(timeout=0.3)))

        Webhook.objects.filter(id=webhook.id).update(log_count=5, target_url="http://x.example/")
        assert heard() == 0
        Webhook.objects.filter(id=webhook.id).update(active=False)
        assert heard() == 1
        Webhook.objects.filter(id=webhook.id).update(address="crew@alice.example")
        assert heard() == 1
        policy = make_policy(alice, allowed_source_ips="192.0.2.0/24")
        assert heard() >= 1
        Webhook.objects.filter(id=webhook.id).update(smtp_security_policy=policy)
        assert heard() == 1
        # A route carries the webhook's account, whose list shows the message.
        Webhook.objects.filter(id=webhook.id).update(account=bob)
        assert heard() == 1
        hook(alice, alice_domain, "http://127.0.0.1:9/", "new@alice.example")
        assert heard() == 1
        Webhook.objects.filter(address="new@alice.example").delete()
        assert heard() == 1


def rcpt(ingress, address: str) -> int:
    with ingress.smtp() as smtp:
        smtp.ehlo()
        smtp.mail("sender@sender.example")
        return smtp.rcpt(address)[0]


@pytest.mark.django_db(transaction=True)
def test_the_ingress_answers_from_memory_until_a_change_is_notified(ingress, alice, alice_domain):
    webhook = hook(alice, alice_domain, "http://127.0.0.1:9/", "team@alice.example")
    wait_for(lambda: ingress.routes.live, timeout=5)

    assert rcpt(ingress, "team@alice.example") == 250
    assert rcpt(ingress, "nobody@alice.example") == 550
    assert ingress.routes.get("team@alice.example")[0]
    assert ingress.routes.get("nobody@alice.example") == (True, None)

    # Writes that cannot change a lookup leave it cached.
    Webhook.objects.filter(id=webhook.id).update(log_count=7)
    time.sleep(0.3)
    assert ingress.routes.get("team@alice.example")[0]

    # Each of these must show at once (well before any expiry), through NOTIFY.
    Webhook.objects.filter(id=webhook.id).update(active=False)
    wait_for(lambda: rcpt(ingress, "team@alice.example") == 550, timeout=2)
    hook(alice, alice_domain, "http://127.0.0.1:9/", "nobody@alice.example")
    wait_for(lambda: rcpt(ingress, "nobody@alice.example") == 250, timeout=2)
    policy = make_policy(alice, allowed_source_ips="192.0.2.0/24")
    Webhook.objects.filter(address="nobody@alice.example").update(smtp_security_policy=policy)
    wait_for(lambda: rcpt(ingress, "nobody@alice.example") == 550, timeout=2)
    policy.allowed_source_ips = "127.0.0.0/8"
    policy.save()
    wait_for(lambda: rcpt(ingress, "nobody@alice.example") == 250, timeout=2)


@pytest.mark.django_db(transaction=True)
def test_a_message_after_its_webhook_moved_account_goes_to_the_new_account(
    ingress, alice, alice_domain, bob
):
    # The cached route carries the webhook's account: the one whose list shows
    # the message. Moving the webhook (the admin can) must reach the cache.
    webhook = hook(alice, alice_domain, "http://127.0.0.1:9/", "team@alice.example")
    wait_for(lambda: ingress.routes.live, timeout=5)

    def send(subject: str) -> None:
        with ingress.smtp() as smtp:
            smtp.sendmail(
                "sender@sender.example",
                ["team@alice.example"],
                f"Subject: {subject}\r\n\r\nHello\r\n".encode(),
            )

    # Cached (the webhook's own creation notifies too, and may land late).
    wait_for(
        lambda: (
            rcpt(ingress, "team@alice.example") == 250
            and ingress.routes.get("team@alice.example")[0]
        ),
        timeout=5,
    )
    send("before")
    generation = ingress.routes.generation
    Webhook.objects.filter(id=webhook.id).update(account=bob)
    wait_for(lambda: ingress.routes.generation != generation, timeout=2)
    send("after")

    def subjects(account) -> list[str]:
        views = AccountMessage.objects.filter(account=account).select_related("message")
        return [view.message.subject for view in views]

    assert subjects(alice) == ["before"]
    assert subjects(bob) == ["after"]
    assert [a.message_count for a in Account.objects.filter(id__in=[alice.id, bob.id])] == [1, 1]
