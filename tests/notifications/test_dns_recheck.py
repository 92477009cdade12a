"""domain_dns_changed: verified domains' MX and TXT checked again against the
tests' DNS server, a batch at a time; a domain that stops pointing here is told once."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from domains.models import Domain
from notifications import tasks
from notifications.models import Notification
from tests.notifications.helpers import ops_events

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("notify_settings", "eager_tasks")]

MX_HOST = "mx.conduit.email"


@pytest.fixture(autouse=True)
def _dns_settings(settings, dns_server):
    settings.CONDUIT_DNS_SERVERS = dns_server.address
    settings.CONDUIT_DNS_TIMEOUT = 0.5
    settings.CONDUIT_MX_HOST = MX_HOST
    settings.CONDUIT_DNS_RECHECK_HOURS = 24
    settings.CONDUIT_DNS_RECHECK_BATCH = 50


def publish(dns_server, domain, mx_host=MX_HOST):
    dns_server.add_txt(f"_conduit-verify.{domain.name}", domain.verification_token)
    dns_server.add_mx(domain.name, 10, mx_host)


def make_stale(domain):
    Domain.objects.filter(id=domain.id).update(dns_checked_at=timezone.now() - timedelta(hours=25))


def test_a_domain_whose_records_still_point_here_says_nothing(alice_domain, dns_server):
    publish(dns_server, alice_domain)
    assert tasks.recheck_domains() == 0
    alice_domain.refresh_from_db()
    assert alice_domain.dns_checked_at is not None
    assert alice_domain.dns_problem == ""
    assert {(q.name, q.qtype) for q in dns_server.queries} == {
        ("_conduit-verify.alice.example", "TXT"),
        ("alice.example", "MX"),
    }
    # Checked: not asked again before CONDUIT_DNS_RECHECK_HOURS.
    asked = len(dns_server.queries)
    assert tasks.recheck_domains() == 0
    assert len(dns_server.queries) == asked


def test_a_moved_mx_is_told_once_on_both_channels(
    alice_domain, dns_server, smtp_server, ops_webhook, httpserver
):
    publish(dns_server, alice_domain, mx_host="mx.other.net")

    assert tasks.recheck_domains() == 1

    [notice] = Notification.objects.all()
    assert notice.event == "domain_dns_changed"
    assert notice.domain_id == alice_domain.id
    assert notice.details["problem"] == (
        "MX check failed: MX record for alice.example points to mx.other.net (priority 10); "
        "expected mx.conduit.email (priority 10)."
    )
    assert notice.channels == {"email": "sent", "webhook": "sent"}
    [mail] = smtp_server.messages
    assert mail["Subject"] == (
        "[Conduit] The DNS records of alice.example no longer point at this service"
    )
    body = smtp_server.bodies()[0]
    assert "MX  alice.example  10 mx.conduit.email" in body
    assert f'TXT _conduit-verify.alice.example  "{alice_domain.verification_token}"' in body
    [event] = ops_events(httpserver, ops_webhook.webhook_secret)
    assert event["type"] == "domain_dns_changed"
    assert event["data"]["domain_id"] == str(alice_domain.id)

    # Still wrong at the next check: the same news, not told again.
    make_stale(alice_domain)
    assert tasks.recheck_domains() == 0
    alice_domain.refresh_from_db()
    assert alice_domain.verified is True  # the owner decides; nothing is taken back


def test_a_domain_that_broke_again_after_a_fix_is_told_again(alice_domain, dns_server, smtp_server):
    publish(dns_server, alice_domain, mx_host="mx.other.net")
    assert tasks.recheck_domains() == 1
    Notification.objects.update(created_at=timezone.now() - timedelta(hours=2))
    dns_server.clear()
    publish(dns_server, alice_domain)
    make_stale(alice_domain)
    assert tasks.recheck_domains() == 0
    dns_server.clear()
    dns_server.add_mx(alice_domain.name, 10, MX_HOST)  # the TXT record went
    make_stale(alice_domain)

    assert tasks.recheck_domains() == 1

    latest = Notification.objects.order_by("-created_at").first()
    assert latest.details["problem"].startswith("TXT check failed: No TXT record")


def test_a_dns_timeout_is_not_a_change(alice_domain, dns_server, smtp_server):
    dns_server.set_timeout("alice.example")
    dns_server.set_timeout("_conduit-verify.alice.example")
    assert tasks.recheck_domains() == 0
    alice_domain.refresh_from_db()
    assert alice_domain.dns_problem == ""
    assert smtp_server.messages == []


def test_each_run_checks_at_most_a_batch_of_domains(alice, dns_server, settings):
    settings.CONDUIT_DNS_RECHECK_BATCH = 2
    domains = [
        Domain.objects.create(account=alice, name=f"d{n}.example", verified=True) for n in range(3)
    ]
    for domain in domains:
        publish(dns_server, domain)
    tasks.recheck_domains()
    assert len(dns_server.queries) == 4  # two domains, two queries each
    assert Domain.objects.filter(dns_checked_at__isnull=True).count() == 1
    tasks.recheck_domains()
    assert Domain.objects.filter(dns_checked_at__isnull=True).count() == 0


def test_unverified_domains_are_not_checked(alice, dns_server):
    Domain.objects.create(account=alice, name="claimed.example")
    assert tasks.recheck_domains() == 0
    assert dns_server.queries == []
