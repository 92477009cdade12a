"""What a webhook may be configured with, checked when it is written (create and
update), before any delivery: private targets in every spelling, local names,
malformed hosts, header values HTTP cannot carry."""

from __future__ import annotations

import pytest

from tests.delivery_fixtures import make_webhook

pytestmark = pytest.mark.django_db

PRIVATE_TARGETS = [
    ("http://10.0.0.1/in", "10.0.0.1"),
    ("http://169.254.169.254/latest/meta-data/", "169.254.169.254"),
    ("http://127.0.0.1:9100/", "127.0.0.1"),
    ("http://[::ffff:10.0.0.1]/", "10.0.0.1"),  # IPv4-mapped
    ("http://[::127.0.0.1]/", "127.0.0.1"),  # IPv4-compatible
    ("http://[::1]/", "::1"),
    ("http://[fe80::1]/", "fe80::1"),
    ("http://[fc00::1]/", "fc00::1"),
    ("http://2130706433/", "127.0.0.1"),  # decimal
    ("http://0x7f.1/", "127.0.0.1"),  # hex + short form
    ("http://017700000001/", "127.0.0.1"),  # octal
    ("http://0x7f000001/", "127.0.0.1"),  # hex
    ("http://0177.0.0.1/", "127.0.0.1"),  # octal label
    ("http://10.1/", "10.0.0.1"),  # short form
    ("http://0/", "0.0.0.0"),
    ("http://[2002:a00:1::]/", "10.0.0.1"),  # 6to4 of 10.0.0.1
    ("http://[64:ff9b::a00:1]/", "10.0.0.1"),  # NAT64 of 10.0.0.1
    ("http://[64:ff9b::a9fe:a9fe]/", "169.254.169.254"),  # NAT64 of the metadata service
    ("http://100.64.0.1/", "100.64.0.1"),  # shared address space
]

LOCAL_NAMES = [
    "http://localhost:8000/in",
    "http://LOCALHOST./in",
    "http://api.localhost/in",
    "http://printer.local/in",
    "http://metadata.google.internal/in",
    "http://router.home.arpa/in",
    "http://nas.lan/in",
    "http://box.localdomain/in",
    "http://intranet/in",  # single label
    "http://hooks/in",
]

MALFORMED = [
    "http://a b.example/",
    "http://a\tb.example/",
    "http://-bad-.example/",
    "http://a..b.example/",
    "http://example.123/",
    "http://256.1.1.1/",
    "http://1.2.3.4.5/",
    "http://hooks.example.com:99999/",
    "http://hooks.example.com:0/",
    "http://[fe80::1%25eth0]/",
]


@pytest.fixture
def strict_settings(settings, delivery_settings):
    """Production rules for targets (http still allowed, so http:// forms get this far)."""
    settings.CONDUIT_ALLOW_PRIVATE_TARGETS = False
    settings.DEBUG = False
    return settings


@pytest.fixture
def body(alice_domain, strict_settings):
    return {"address": "inbox@alice.example", "target_url": "https://hooks.example.com/in"}


def create(client, body, **extra):
    return client.post("/api/v1/webhooks", {**body, **extra}, format="json")


def details(response, field):
    assert response.status_code == 422, response.content
    data = response.json()
    assert data["code"] == "validation_error"
    assert list(data["details"]) == [field], data
    return data["details"][field][0]


@pytest.mark.parametrize(("url", "meaning"), PRIVATE_TARGETS)
def test_it_refuses_private_ip_literals_in_every_form(alice_api, body, url, meaning):
    message = details(create(alice_api, body, target_url=url), "target_url")
    assert "is not a public internet address" in message
    assert meaning in message  # what the literal means, so the user sees the problem
    assert "webhook targets must be public internet addresses" in message
    assert "CONDUIT_ALLOW_PRIVATE_TARGETS" not in message  # DEBUG is off


@pytest.mark.parametrize(("url", "meaning"), PRIVATE_TARGETS)
def test_it_refuses_private_ip_literals_on_update(
    alice_api, alice, alice_domain, body, url, meaning
):
    hook = make_webhook(alice, alice_domain, "https://hooks.example.com/in")
    r = alice_api.put(f"/api/v1/webhooks/{hook.id}", {"target_url": url}, format="json")
    assert "is not a public internet address" in details(r, "target_url")
    hook.refresh_from_db()
    assert hook.target_url == "https://hooks.example.com/in"


@pytest.mark.parametrize("url", LOCAL_NAMES)
def test_it_refuses_local_names(alice_api, body, url):
    message = details(create(alice_api, body, target_url=url), "target_url")
    assert "local network" in message
    assert message.endswith("webhook targets must be public internet addresses")


@pytest.mark.parametrize("url", LOCAL_NAMES[:3])
def test_it_refuses_local_names_on_update(alice_api, alice, alice_domain, body, url):
    hook = make_webhook(alice, alice_domain, "https://hooks.example.com/in")
    r = alice_api.put(f"/api/v1/webhooks/{hook.id}", {"target_url": url}, format="json")
    assert "local network" in details(r, "target_url")


@pytest.mark.parametrize("url", MALFORMED)
def test_it_refuses_malformed_hosts(alice_api, body, url):
    details(create(alice_api, body, target_url=url), "target_url")


def test_it_says_what_is_wrong_with_a_space_in_the_host(alice_api, body):
    message = details(create(alice_api, body, target_url="http://a b.example/"), "target_url")
    assert message == (
        "The target URL contains spaces or control characters: a host name cannot contain "
        "them, and in the path or query write a space as %20"
    )


def test_it_asks_for_the_dotted_form_of_an_odd_public_address(alice_api, body):
    message = details(create(alice_api, body, target_url="http://134744072/"), "target_url")
    assert message == (
        "The target URL's host 134744072 is an unusual spelling of 8.8.8.8; "
        "write the address as 8.8.8.8"
    )


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com/in",
        "https://8.8.8.8/in",
        "https://[2606:4700:4700::1111]/in",
        "https://bücher.example/in",
        "https://my_service.example.com/in",
        "http://hooks.example.com:8080/in",
    ],
)
def test_it_accepts_public_targets(alice_api, body, url):
    assert create(alice_api, body, target_url=url).status_code == 201


@pytest.mark.parametrize(
    "url", ["http://10.0.0.1/", "http://localhost:9100/", "http://2130706433/", "http://intranet/"]
)
def test_it_accepts_private_targets_when_allowed(alice_api, body, settings, url):
    settings.CONDUIT_ALLOW_PRIVATE_TARGETS = True
    assert create(alice_api, body, target_url=url).status_code == 201


def test_it_names_the_setting_in_development(alice_api, body, settings):
    settings.DEBUG = True
    message = details(create(alice_api, body, target_url="http://127.0.0.1:9100/"), "target_url")
    assert message == (
        "The target URL's host 127.0.0.1 is not a public internet address; webhook targets "
        "must be public internet addresses (set CONDUIT_ALLOW_PRIVATE_TARGETS=true to allow "
        "private targets in development)"
    )


# --- custom headers -------------------------------------------------------------------


def test_it_refuses_a_header_value_outside_latin1(alice_api, body):
    r = create(alice_api, body, custom_headers={"X-Name": "用户"})
    assert details(r, "custom_headers") == (
        "The value of 'X-Name' contains characters that HTTP headers cannot carry (用户); "
        "header values must be Latin-1: percent-encode or base64-encode the text"
    )


def test_it_refuses_a_header_value_outside_latin1_on_update(alice_api, alice, alice_domain, body):
    hook = make_webhook(alice, alice_domain, "https://hooks.example.com/in")
    r = alice_api.put(
        f"/api/v1/webhooks/{hook.id}", {"custom_headers": {"X-Name": "用户"}}, format="json"
    )
    assert "cannot carry" in details(r, "custom_headers")
    hook.refresh_from_db()
    assert hook.custom_headers == {}


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("a\rb", "contains a line break or NUL"),
        ("a\nb", "contains a line break or NUL"),
        ("a\x07b", "contains a control character"),
        ("a\x7fb", "contains a control character"),
        (" leading", "starts with whitespace; remove it"),
    ],
)
def test_it_refuses_header_values_that_cannot_be_sent(alice_api, body, value, problem):
    r = create(alice_api, body, custom_headers={"X-Value": value})
    assert details(r, "custom_headers") == f"The value of 'X-Value' {problem}"


@pytest.mark.parametrize("name", ["X Name", "X-Name:", "Ünicode", "X\r\nY", ""])
def test_it_refuses_invalid_header_names(alice_api, body, name):
    r = create(alice_api, body, custom_headers={name: "x"})
    assert "is not a valid header name" in details(r, "custom_headers")


def test_it_accepts_latin1_and_tabs_in_header_values(alice_api, body):
    r = create(alice_api, body, custom_headers={"X-Name": "Jörg\tMüller"})
    assert r.status_code == 201
    assert r.json()["custom_headers"] == {"X-Name": "Jörg\tMüller"}
