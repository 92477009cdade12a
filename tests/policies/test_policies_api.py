from __future__ import annotations

import json
import uuid

import pytest
from django.contrib.auth.hashers import check_password

from accounts.models import AuditLogEntry
from policies.checks import credentials_valid
from policies.models import SmtpCredential, SmtpSecurityPolicy

pytestmark = pytest.mark.django_db

FIELDS = {
    "allowed_dkim_domains",
    "allowed_source_ips",
    "allowed_spf_domains",
    "created_at",
    "id",
    "name",
    "require_dkim",
    "require_dmarc",
    "require_smtp_auth",
    "require_spf",
    "smtp_credentials",
    "updated_at",
}
ALICE_PASSWORD = "alice-password-1"
BOB_PASSWORD = "bob-password-22"


def create(client, **body):
    body.setdefault("name", "office")
    return client.post("/api/v1/smtp-policies", body, format="json")


def update(client, policy_id, **body):
    return client.put(f"/api/v1/smtp-policies/{policy_id}", body, format="json")


def hashes(policy_id) -> dict[str, str]:
    return SmtpSecurityPolicy.objects.get(id=policy_id).credential_hashes()


def assert_no_password_in(*texts: str) -> None:
    for text in texts:
        assert ALICE_PASSWORD not in text
        assert BOB_PASSWORD not in text


# --- create --------------------------------------------------------------------------


def test_it_creates_a_policy_with_every_field(alice_api, alice):
    r = create(
        alice_api,
        name="office",
        require_smtp_auth=True,
        require_spf=True,
        require_dkim=True,
        require_dmarc=True,
        allowed_source_ips="192.0.2.1, 10.1.2.3/8\n2001:DB8::/32 192.0.2.1",
        allowed_spf_domains="Example.COM, Bücher.example",
        allowed_dkim_domains="mail.example.com\nexample.org",
        smtp_credentials=f"alice:{ALICE_PASSWORD}\nbob:{BOB_PASSWORD}",
    )

    assert r.status_code == 201
    body = r.json()
    assert set(body) == FIELDS
    assert body["name"] == "office"
    assert body["require_smtp_auth"] is True
    assert body["require_spf"] is True
    assert body["require_dkim"] is True
    assert body["require_dmarc"] is True
    assert body["allowed_source_ips"] == "192.0.2.1,10.0.0.0/8,2001:db8::/32"
    assert body["allowed_spf_domains"] == "example.com,xn--bcher-kva.example"
    assert body["allowed_dkim_domains"] == "mail.example.com,example.org"
    assert body["smtp_credentials"] == "alice:********,bob:********"
    assert body["created_at"].endswith("Z")
    stored = hashes(body["id"])
    assert list(stored) == ["alice", "bob"]
    assert check_password(ALICE_PASSWORD, stored["alice"])
    assert check_password(BOB_PASSWORD, stored["bob"])
    entry = AuditLogEntry.objects.get(account=alice, action="policy.created")
    assert entry.metadata == {"policy_id": body["id"], "name": "office"}
    assert_no_password_in(r.content.decode(), json.dumps(entry.metadata))


def test_it_creates_a_policy_with_defaults(alice_api):
    r = create(alice_api, name="open")

    assert r.status_code == 201
    body = r.json()
    assert body["require_smtp_auth"] is False
    assert body["require_spf"] is False
    assert body["require_dkim"] is False
    assert body["require_dmarc"] is False
    assert body["allowed_source_ips"] == ""
    assert body["allowed_spf_domains"] == ""
    assert body["allowed_dkim_domains"] == ""
    assert body["smtp_credentials"] == ""


def test_it_gives_the_ingress_the_stored_hashes(alice_api):
    policy_id = create(alice_api, smtp_credentials=f"alice:{ALICE_PASSWORD}").json()["id"]
    stored = hashes(policy_id)

    assert credentials_valid(
        username="alice", password=ALICE_PASSWORD, stored=stored, verify=check_password
    )
    assert not credentials_valid(
        username="alice", password="wrong-password-x", stored=stored, verify=check_password
    )
    assert not credentials_valid(
        username="mallory", password=ALICE_PASSWORD, stored=stored, verify=check_password
    )


@pytest.mark.parametrize(
    "body,field",
    [
        ({"allowed_source_ips": "10.0.0.0/33"}, "allowed_source_ips"),
        ({"allowed_source_ips": "not-an-ip"}, "allowed_source_ips"),
        ({"allowed_source_ips": "192.0.2.1, 300.1.1.1"}, "allowed_source_ips"),
        ({"allowed_spf_domains": "example"}, "allowed_spf_domains"),
        ({"allowed_spf_domains": "a..b.com"}, "allowed_spf_domains"),
        ({"allowed_dkim_domains": "-bad-.com"}, "allowed_dkim_domains"),
        ({"allowed_dkim_domains": "192.0.2.1"}, "allowed_dkim_domains"),
        ({"smtp_credentials": "user"}, "smtp_credentials"),
        ({"smtp_credentials": "user:"}, "smtp_credentials"),
        ({"smtp_credentials": ":long-enough-password"}, "smtp_credentials"),
        (
            {"smtp_credentials": "bob:first-password-1,Bob:second-password-2"},
            "smtp_credentials",
        ),
        ({"smtp_credentials": "bob:short"}, "smtp_credentials"),
        ({"smtp_credentials": "bob:********"}, "smtp_credentials"),
        ({"smtp_credentials": "a" * 255 + ":long-enough-password"}, "smtp_credentials"),
        ({"require_smtp_auth": True}, "smtp_credentials"),
        ({"require_smtp_auth": True, "smtp_credentials": ""}, "smtp_credentials"),
        ({"name": ""}, "name"),
        ({"name": "x" * 101}, "name"),
        ({"require_spf": "perhaps"}, "require_spf"),
    ],
)
def test_it_refuses_bad_policy_input(alice_api, body, field):
    r = create(alice_api, **body)

    assert r.status_code == 422
    assert r.json()["code"] == "validation_error"
    assert list(r.json()["details"]) == [field]
    assert not SmtpSecurityPolicy.objects.exists()


def test_it_reports_every_bad_entry_at_once(alice_api):
    r = create(
        alice_api,
        allowed_source_ips="10.0.0.0/33, not-an-ip",
        smtp_credentials="user, bob:short",
    )

    assert r.status_code == 422
    details = r.json()["details"]
    assert details["allowed_source_ips"] == [
        "'10.0.0.0/33' is not a valid IP address or CIDR network",
        "'not-an-ip' is not a valid IP address or CIDR network",
    ]
    assert details["smtp_credentials"] == [
        "'user' has no password: write it as user:password",
        "password for 'bob' is shorter than 12 characters",
    ]


def test_it_never_repeats_a_password_in_an_error(alice_api):
    r = create(alice_api, smtp_credentials=f"alice:{ALICE_PASSWORD},alice:{BOB_PASSWORD}")

    assert r.status_code == 422
    assert_no_password_in(r.content.decode())


# --- list and get ----------------------------------------------------------------------


def test_it_lists_only_the_accounts_policies(alice_api, bob_api):
    create(alice_api, name="b-policy", smtp_credentials=f"alice:{ALICE_PASSWORD}")
    create(alice_api, name="a-policy")
    create(bob_api, name="bobs")

    r = alice_api.get("/api/v1/smtp-policies")

    assert r.status_code == 200
    assert [p["name"] for p in r.json()] == ["a-policy", "b-policy"]
    assert r.json()[1]["smtp_credentials"] == "alice:********"
    assert_no_password_in(r.content.decode())


def test_it_gets_a_policy(alice_api):
    created = create(alice_api, smtp_credentials=f"alice:{ALICE_PASSWORD}").json()

    r = alice_api.get(f"/api/v1/smtp-policies/{created['id']}")

    assert r.status_code == 200
    assert r.json() == created


def test_it_answers_401_without_credentials(api):
    assert api.get("/api/v1/smtp-policies").status_code == 401
    r = api.post("/api/v1/smtp-policies", {"name": "x"})
    assert r.status_code == 401
    assert r.json()["code"] == "unauthorized"


# --- update --------------------------------------------------------------------------


@pytest.fixture
def policy(alice_api):
    return create(
        alice_api,
        name="office",
        require_smtp_auth=True,
        allowed_source_ips="192.0.2.0/24",
        allowed_spf_domains="example.com",
        smtp_credentials=f"alice:{ALICE_PASSWORD}",
    ).json()


def test_it_updates_only_the_fields_sent(alice_api, alice, policy):
    before = hashes(policy["id"])

    r = update(alice_api, policy["id"], name="head office", require_spf=True)

    assert r.status_code == 200
    body = r.json()
    assert body["name"] == "head office"
    assert body["require_spf"] is True
    assert body["require_smtp_auth"] is True
    assert body["allowed_source_ips"] == "192.0.2.0/24"
    assert body["allowed_spf_domains"] == "example.com"
    assert body["smtp_credentials"] == "alice:********"
    assert hashes(policy["id"]) == before
    entry = AuditLogEntry.objects.get(account=alice, action="policy.updated")
    assert entry.metadata == {"policy_id": policy["id"], "changed": ["name", "require_spf"]}


def test_it_accepts_the_full_body_of_the_reference(alice_api, policy):
    r = update(
        alice_api,
        policy["id"],
        name="office",
        require_smtp_auth=False,
        require_spf=True,
        require_dkim=True,
        allowed_source_ips="",
        allowed_spf_domains="example.org",
        allowed_dkim_domains="example.org",
        smtp_credentials="alice:********",
    )

    assert r.status_code == 200
    body = r.json()
    assert body["require_smtp_auth"] is False
    assert body["allowed_source_ips"] == ""
    assert body["allowed_spf_domains"] == "example.org"
    assert body["allowed_dkim_domains"] == "example.org"
    assert body["smtp_credentials"] == "alice:********"


def test_it_keeps_a_masked_password_and_adds_a_new_user(alice_api, alice, policy):
    before = hashes(policy["id"])

    r = update(alice_api, policy["id"], smtp_credentials=f"alice:********\nbob:{BOB_PASSWORD}")

    assert r.status_code == 200
    assert r.json()["smtp_credentials"] == "alice:********,bob:********"
    assert r.json()["updated_at"] > policy["updated_at"]
    after = hashes(policy["id"])
    assert after["alice"] == before["alice"]
    assert check_password(BOB_PASSWORD, after["bob"])
    entry = AuditLogEntry.objects.get(account=alice, action="policy.updated")
    assert entry.metadata["changed"] == ["smtp_credentials"]
    assert_no_password_in(r.content.decode(), json.dumps(entry.metadata))


def test_it_changes_a_password(alice_api, policy):
    r = update(alice_api, policy["id"], smtp_credentials="alice:a-brand-new-password")

    assert r.status_code == 200
    assert check_password("a-brand-new-password", hashes(policy["id"])["alice"])


def test_it_removes_credentials_left_out(alice_api, policy):
    update(alice_api, policy["id"], smtp_credentials=f"alice:********,bob:{BOB_PASSWORD}")

    r = update(alice_api, policy["id"], smtp_credentials="bob:********")

    assert r.status_code == 200
    assert r.json()["smtp_credentials"] == "bob:********"
    assert list(hashes(policy["id"])) == ["bob"]


def test_it_records_no_change_when_nothing_changed(alice_api, alice, policy):
    r = update(alice_api, policy["id"], name="office", smtp_credentials="alice:********")

    assert r.status_code == 200
    assert not AuditLogEntry.objects.filter(account=alice, action="policy.updated").exists()


def test_it_refuses_a_masked_password_for_an_unknown_user(alice_api, policy):
    r = update(alice_api, policy["id"], smtp_credentials="alice:********,carol:********")

    assert r.status_code == 422
    assert r.json()["code"] == "validation_error"
    assert r.json()["details"]["smtp_credentials"] == [
        "'carol' has no stored password to keep: send carol:<password> instead of carol:********"
    ]
    assert list(hashes(policy["id"])) == ["alice"]


@pytest.mark.parametrize(
    "body",
    [
        {"smtp_credentials": ""},
        {"require_smtp_auth": True, "smtp_credentials": ""},
    ],
)
def test_it_refuses_to_remove_the_last_credential_while_auth_is_required(alice_api, policy, body):
    r = update(alice_api, policy["id"], **body)

    assert r.status_code == 422
    assert r.json()["code"] == "validation_error"
    assert list(r.json()["details"]) == ["smtp_credentials"]
    assert list(hashes(policy["id"])) == ["alice"]


def test_it_refuses_to_require_auth_on_a_policy_without_credentials(alice_api):
    policy = create(alice_api).json()

    r = update(alice_api, policy["id"], require_smtp_auth=True)

    assert r.status_code == 422
    assert list(r.json()["details"]) == ["smtp_credentials"]
    assert SmtpSecurityPolicy.objects.get(id=policy["id"]).require_smtp_auth is False


@pytest.mark.parametrize(
    "body,field",
    [
        ({"allowed_source_ips": "10.0.0.0/33"}, "allowed_source_ips"),
        ({"allowed_source_ips": "not-an-ip"}, "allowed_source_ips"),
        ({"allowed_spf_domains": "example"}, "allowed_spf_domains"),
        ({"smtp_credentials": "alice"}, "smtp_credentials"),
        ({"smtp_credentials": "bob:short"}, "smtp_credentials"),
        ({"name": ""}, "name"),
    ],
)
def test_it_refuses_a_bad_update(alice_api, policy, body, field):
    r = update(alice_api, policy["id"], **body)

    assert r.status_code == 422
    assert r.json()["code"] == "validation_error"
    assert list(r.json()["details"]) == [field]
    assert alice_api.get(f"/api/v1/smtp-policies/{policy['id']}").json() == policy


# --- delete -----------------------------------------------------------------------------


def test_it_deletes_a_policy_and_its_credentials(alice_api, alice, policy):
    r = alice_api.delete(f"/api/v1/smtp-policies/{policy['id']}")

    assert r.status_code == 204
    assert not SmtpSecurityPolicy.objects.exists()
    assert not SmtpCredential.objects.exists()
    entry = AuditLogEntry.objects.get(account=alice, action="policy.deleted")
    assert entry.metadata == {"policy_id": policy["id"], "name": "office"}


# --- another account's policy -------------------------------------------------------------


@pytest.mark.parametrize(
    "method,body",
    [("get", None), ("put", {"name": "mine now"}), ("delete", None)],
)
def test_it_answers_404_for_another_accounts_policy(alice_api, bob_api, method, body):
    bobs = create(bob_api, name="bobs", smtp_credentials=f"bob:{BOB_PASSWORD}").json()

    r = getattr(alice_api, method)(f"/api/v1/smtp-policies/{bobs['id']}", body, format="json")

    assert r.status_code == 404
    assert r.json()["code"] == "not_found"
    assert bob_api.get(f"/api/v1/smtp-policies/{bobs['id']}").json() == bobs


def test_it_answers_404_for_an_unknown_policy(alice_api):
    r = alice_api.get(f"/api/v1/smtp-policies/{uuid.uuid4()}")

    assert r.status_code == 404
    assert r.json()["code"] == "not_found"


# --- admin ------------------------------------------------------------------------------


def test_it_shows_usernames_but_never_password_hashes_in_the_admin(admin_client, alice_api):
    policy = create(alice_api, name="office", smtp_credentials=f"alice:{ALICE_PASSWORD}").json()
    stored = hashes(policy["id"])["alice"]

    listing = admin_client.get("/admin/policies/smtpsecuritypolicy/", {"q": "alice"})
    detail = admin_client.get(f"/admin/policies/smtpsecuritypolicy/{policy['id']}/change/")

    assert listing.status_code == 200
    assert detail.status_code == 200
    for page in (listing.content.decode(), detail.content.decode()):
        assert "office" in page
        assert ">alice<" in page or "alice</" in page
        assert stored not in page
        assert stored.split("$")[-1] not in page
        assert ALICE_PASSWORD not in page


# --- OpenAPI -----------------------------------------------------------------------------


def test_it_documents_partial_updates(api):
    schema = api.get("/api/v1/openapi.json").json()

    components = schema["components"]["schemas"]
    assert set(components["SmtpSecurityPolicyResponse"]["properties"]) == FIELDS
    assert components["CreateSmtpSecurityPolicyRequest"]["required"] == ["name"]
    assert "required" not in components["UpdateSmtpSecurityPolicyRequest"]
    put = schema["paths"]["/api/v1/smtp-policies/{id}"]["put"]
    assert "fields left out keep their values" in put["description"]


def test_it_turns_require_dmarc_on_and_off(alice_api, alice, policy):
    r = update(alice_api, policy["id"], require_dmarc=True)

    assert r.status_code == 200
    assert r.json()["require_dmarc"] is True
    assert SmtpSecurityPolicy.objects.get(id=policy["id"]).require_dmarc is True
    entry = AuditLogEntry.objects.get(account=alice, action="policy.updated")
    assert entry.metadata["changed"] == ["require_dmarc"]
    assert update(alice_api, policy["id"], require_dmarc=False).json()["require_dmarc"] is False
    assert alice_api.get(f"/api/v1/smtp-policies/{policy['id']}").json()["require_dmarc"] is False


def test_it_refuses_a_require_dmarc_that_is_no_boolean(alice_api, policy):
    r = update(alice_api, policy["id"], require_dmarc="sometimes")

    assert r.status_code == 422
    assert r.json()["code"] == "validation_error"
    assert "require_dmarc" in r.json()["details"]
