"""The browsable API's forms for the POST-only actions (simulateWebhook, verifyDomain):
a signed-in browser gets a form where it used to get a bare 405; API clients see
no change."""

from __future__ import annotations

import json
import re
from html import unescape

import pytest
from django.test import Client

from domains.models import Domain
from tests.delivery_fixtures import make_webhook

pytestmark = pytest.mark.django_db

HTML = {"HTTP_ACCEPT": "text/html,application/xhtml+xml,*/*;q=0.8"}


@pytest.fixture
def browser(alice) -> Client:
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    return client


def raw_form_content(html: str) -> dict:
    """The JSON the browsable API's raw-data form would POST."""
    match = re.search(r'<textarea name="_content"[^>]*>(.*?)</textarea>', html, re.S)
    assert match, html[:3000]
    return json.loads(unescape(match.group(1)))


def test_it_offers_a_browser_a_form_for_simulate(browser, webhook):
    r = browser.get(f"/api/v1/webhooks/{webhook.id}/simulate", **HTML)
    assert r.status_code == 200
    assert r["Content-Type"].startswith("text/html")
    html = r.content.decode()
    assert "Simulate Webhook" in html
    assert webhook.address in html  # what the action applies to
    assert raw_form_content(html) == {
        "from": "sender@example.com",
        "subject": "Test message",
        "text": "This is a simulated message from Conduit.",
    }
    assert re.search(r'<form action="/api/v1/webhooks/[^"]+/simulate" method="POST"', html)


def test_it_runs_the_simulation_the_form_sends(browser, webhook, httpserver):
    httpserver.expect_request("/hook", method="POST").respond_with_data("thanks", status=202)
    page = browser.get(f"/api/v1/webhooks/{webhook.id}/simulate", **HTML)
    body = raw_form_content(page.content.decode()) | {"subject": "From the form"}
    # What the browsable API's script sends: the form's JSON, with the CSRF token.
    r = browser.post(
        f"/api/v1/webhooks/{webhook.id}/simulate",
        json.dumps(body),
        content_type="application/json",
        HTTP_X_CSRFTOKEN=page.cookies["csrftoken"].value,
        **HTML,
    )
    assert r.status_code == 200
    assert "&quot;simulated&quot;: true" in r.content.decode()
    [(request, _)] = httpserver.log
    assert json.loads(request.data)["subject"] == "From the form"


def test_it_offers_a_browser_a_form_for_domain_verification(browser, alice):
    domain = Domain.objects.create(account=alice, name="new.example")
    r = browser.get(f"/api/v1/domains/{domain.id}/verify", **HTML)
    assert r.status_code == 200
    html = r.content.decode()
    assert domain.verification_token in html  # what to publish before pressing POST
    assert raw_form_content(html) == {}
    assert re.search(r'<form action="/api/v1/domains/[^"]+/verify" method="POST"', html)


@pytest.mark.parametrize("path", ["webhooks/{webhook}/simulate", "domains/{domain}/verify"])
def test_it_still_answers_405_to_api_clients_on_get(alice_api, alice, webhook, path):
    domain = Domain.objects.create(account=alice, name="new.example")
    url = "/api/v1/" + path.format(webhook=webhook.id, domain=domain.id)
    r = alice_api.get(url)
    assert r.status_code == 405
    assert r.json()["code"] == "method_not_allowed"
    assert r["Allow"] == "POST, OPTIONS"


def test_it_still_hides_another_accounts_webhook_from_a_browser(browser, bob, httpserver):
    bob_domain = Domain.objects.create(account=bob, name="bob.example", verified=True)
    hook = make_webhook(bob, bob_domain, httpserver.url_for("/hook"))
    r = browser.get(f"/api/v1/webhooks/{hook.id}/simulate", **HTML)
    assert r.status_code == 404
    assert r.json()["code"] == "not_found"


def test_the_form_pages_are_no_operations_of_the_api():
    from drf_spectacular.generators import SchemaGenerator

    from conduit.schema import ConduitAutoSchema  # noqa: F401  (the schema's generator)

    paths = SchemaGenerator().get_schema(request=None, public=True)["paths"]
    assert set(paths["/api/v1/webhooks/{id}/simulate"]) == {"post"}
    assert set(paths["/api/v1/domains/{id}/verify"]) == {"post"}
