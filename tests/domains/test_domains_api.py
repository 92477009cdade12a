from __future__ import annotations

import uuid

import pytest
from django.apps import apps
from django.core.exceptions import ImproperlyConfigured
from django.db import IntegrityError, transaction

from accounts.models import AuditLogEntry
from domains import services
from domains.models import Domain

pytestmark = pytest.mark.django_db

FIELDS = {
    "account_id",
    "created_at",
    "id",
    "is_public",
    "name",
    "updated_at",
    "verification_token",
    "verified",
}


def claim(client, name="example.com"):
    return client.post("/api/v1/domains", {"name": name}, format="json")


def verified_domain(account, name="example.com", **extra):
    return Domain.objects.create(account=account, name=name, verified=True, **extra)


# --- claim --------------------------------------------------------------------------


def test_it_claims_a_domain(alice_api, alice):
    r = claim(alice_api)

    assert r.status_code == 201
    body = r.json()
    assert set(body) == FIELDS
    assert body["name"] == "example.com"
    assert body["account_id"] == str(alice.id)
    assert body["verified"] is False
    assert body["is_public"] is False
    assert body["verification_token"].startswith("conduit-verify=")
    assert body["created_at"].endswith("Z")
    domain = Domain.objects.get(id=body["id"])
    assert domain.account == alice
    assert domain.verification_token == body["verification_token"]
    entry = AuditLogEntry.objects.get(account=alice, action="domain.claimed")
    assert entry.metadata == {"domain_id": body["id"], "name": "example.com"}
    assert entry.ip == "127.0.0.1"


def test_it_stores_an_international_name_in_idna_form(alice_api):
    r = claim(alice_api, "Bücher.Example")

    assert r.status_code == 201
    assert r.json()["name"] == "xn--bcher-kva.example"


def test_it_lower_cases_and_drops_the_trailing_dot(alice_api):
    r = claim(alice_api, " Mail.Example.COM. ")

    assert r.status_code == 201
    assert r.json()["name"] == "mail.example.com"


def test_it_gives_each_claim_a_random_token(alice_api, bob_api):
    first = claim(alice_api, "one.example").json()["verification_token"]
    second = claim(alice_api, "two.example").json()["verification_token"]
    third = claim(bob_api, "one.example").json()["verification_token"]

    assert len({first, second, third}) == 3
    assert len(first) > len("conduit-verify=") + 20


def test_it_ignores_is_public_in_a_claim(alice_api):
    r = alice_api.post("/api/v1/domains", {"name": "example.com", "is_public": True})

    assert r.status_code == 201
    assert r.json()["is_public"] is False
    assert Domain.objects.get().is_public is False


@pytest.mark.parametrize(
    "name",
    [
        "example",
        "-bad-.com",
        "a..b.com",
        "192.0.2.1",
        "2001:db8::1",
        ".".join(["a" * 63] * 4) + ".com",
        "a" * 64 + ".com",
        "exa mple.com",
        "*.example.com",
        "",
    ],
)
def test_it_refuses_an_invalid_domain_name(alice_api, name):
    r = claim(alice_api, name)

    assert r.status_code == 422
    body = r.json()
    assert body["code"] == "validation_error"
    assert list(body["details"]) == ["name"]
    assert not Domain.objects.exists()


def test_it_refuses_a_claim_without_a_name(alice_api):
    r = alice_api.post("/api/v1/domains", {})

    assert r.status_code == 422
    assert r.json()["details"]["name"] == ["This field is required."]


def test_it_refuses_to_claim_the_same_name_twice(alice_api):
    claim(alice_api, "example.com")

    r = claim(alice_api, "EXAMPLE.com")

    assert r.status_code == 409
    assert r.json()["code"] == "conflict"
    assert "already claimed example.com" in r.json()["error"]
    assert Domain.objects.count() == 1


def test_it_refuses_a_name_another_account_has_verified(alice_api, bob):
    verified_domain(bob)

    r = claim(alice_api, "example.com")

    assert r.status_code == 409
    assert r.json()["code"] == "conflict"
    assert "verified by another account" in r.json()["error"]
    assert not Domain.objects.filter(account__email="alice@example.com").exists()


def test_it_allows_a_name_another_account_has_only_claimed(alice_api, bob_api, alice):
    claim(bob_api, "example.com")

    r = claim(alice_api, "example.com")

    assert r.status_code == 201
    assert Domain.objects.filter(name="example.com").count() == 2


def test_it_answers_401_without_credentials(api):
    r = api.post("/api/v1/domains", {"name": "example.com"})

    assert r.status_code == 401
    assert r.json()["code"] == "unauthorized"


# --- list and get ------------------------------------------------------------------


def test_it_lists_own_and_public_domains(alice_api, alice, bob, charlie):
    own = Domain.objects.create(account=alice, name="alice.example")
    public = verified_domain(bob, "public.example", is_public=True)
    verified_domain(bob, "bob.example")
    Domain.objects.create(account=charlie, name="charlie.example")

    r = alice_api.get("/api/v1/domains")

    assert r.status_code == 200
    body = r.json()
    assert [d["name"] for d in body] == ["alice.example", "public.example"]
    assert body[0]["verification_token"] == own.verification_token
    assert body[1]["id"] == str(public.id)
    assert body[1]["is_public"] is True
    assert body[1]["account_id"] == str(bob.id)
    # Another account's token would let its holder re-verify the domain elsewhere.
    assert body[1]["verification_token"] == ""


def test_it_gets_a_domain(alice_api):
    created = claim(alice_api).json()

    r = alice_api.get(f"/api/v1/domains/{created['id']}")

    assert r.status_code == 200
    assert r.json() == created


def test_it_gets_a_public_domain_of_another_account_without_its_token(alice_api, bob):
    public = verified_domain(bob, "public.example", is_public=True)

    r = alice_api.get(f"/api/v1/domains/{public.id}")

    assert r.status_code == 200
    assert r.json()["name"] == "public.example"
    assert r.json()["verification_token"] == ""


def test_it_answers_404_for_another_accounts_domain(alice_api, bob):
    private = verified_domain(bob, "bob.example")

    r = alice_api.get(f"/api/v1/domains/{private.id}")

    assert r.status_code == 404
    assert r.json()["code"] == "not_found"


def test_it_answers_404_for_an_unknown_id(alice_api):
    r = alice_api.get(f"/api/v1/domains/{uuid.uuid4()}")

    assert r.status_code == 404
    assert r.json()["code"] == "not_found"


# --- delete --------------------------------------------------------------------------


def test_it_deletes_a_domain(alice_api, alice):
    created = claim(alice_api).json()

    r = alice_api.delete(f"/api/v1/domains/{created['id']}")

    assert r.status_code == 204
    assert not Domain.objects.exists()
    entry = AuditLogEntry.objects.get(account=alice, action="domain.deleted")
    assert entry.metadata == {"domain_id": created["id"], "name": "example.com"}


@pytest.mark.parametrize("is_public", [False, True])
def test_it_refuses_to_delete_another_accounts_domain(alice_api, bob, is_public):
    domain = verified_domain(bob, is_public=is_public)

    r = alice_api.delete(f"/api/v1/domains/{domain.id}")

    assert r.status_code == 404
    assert r.json()["code"] == "not_found"
    assert Domain.objects.filter(id=domain.id).exists()
    assert not AuditLogEntry.objects.filter(action="domain.deleted").exists()


# --- model rules ---------------------------------------------------------------------


def test_it_allows_one_verified_owner_per_name(alice, bob):
    verified_domain(alice)

    with pytest.raises(IntegrityError), transaction.atomic():
        verified_domain(bob)


def test_it_allows_only_verified_domains_to_be_public(alice):
    with pytest.raises(IntegrityError), transaction.atomic():
        Domain.objects.create(account=alice, name="example.com", is_public=True)


# --- settings ------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["dns.example.com:53", "127.0.0.1:99999", "[::1"])
def test_it_refuses_to_start_with_bad_dns_servers(settings, value):
    settings.CONDUIT_DNS_SERVERS = value

    with pytest.raises(ImproperlyConfigured, match="CONDUIT_DNS_SERVERS"):
        apps.get_app_config("domains").ready()


def test_it_starts_with_good_dns_servers(settings):
    settings.CONDUIT_DNS_SERVERS = "127.0.0.1:5353, [::1]:53"

    apps.get_app_config("domains").ready()

    assert services.dns_servers() == [("127.0.0.1", 5353), ("::1", 53)]


# --- OpenAPI -----------------------------------------------------------------------------


def test_it_documents_the_dns_records_to_publish(api):
    schema = api.get("/api/v1/openapi.json").json()

    assert set(schema["components"]["schemas"]["DomainResponse"]["properties"]) == FIELDS
    verify = schema["paths"]["/api/v1/domains/{id}/verify"]["post"]
    assert "`_conduit-verify.<domain>`" in verify["description"]
    assert "`mx.conduit.email` with priority 10" in verify["description"]
    assert "`verification_failed`" in verify["description"]
    assert verify["parameters"][0]["name"] == "id"
    assert verify["parameters"][0]["description"] == "Domain ID"
