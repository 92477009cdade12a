"""The conventions every API operation shares: error shape, status codes, docs."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["code"] == code
    assert isinstance(body["error"], str) and body["error"]
    assert "Traceback" not in response.content.decode()
    return body


def test_it_pings(api):
    r = api.get("/api/v1/ping")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}


def test_it_answers_json_404_for_unknown_paths(api, settings):
    assert_error(api.get("/api/v1/nope"), 404, "not_found")
    assert_error(api.get("/api/v2/ping"), 404, "not_found")
    settings.DEBUG = True  # no HTML technical page either
    assert_error(api.get("/api/v1/nope"), 404, "not_found")


def test_it_answers_json_405(api):
    body = assert_error(api.patch("/api/v1/ping", {}), 405, "method_not_allowed")
    assert "PATCH" in body["error"]


def test_it_answers_400_to_malformed_json(api):
    r = api.post("/api/v1/accounts", data="{not json", content_type="application/json")
    assert_error(r, 400, "bad_request")


def test_it_answers_415_to_a_non_json_body(api):
    r = api.post("/api/v1/accounts", data="email=a@b.c", content_type="text/plain")
    body = assert_error(r, 415, "unsupported_media_type")
    assert "application/json" in body["error"]
    r = api.post("/api/v1/accounts", {"email": "a@example.com"}, format="multipart")
    assert_error(r, 415, "unsupported_media_type")


def test_it_answers_422_with_details(api):
    body = assert_error(api.post("/api/v1/accounts", {}), 422, "validation_error")
    assert set(body["details"]) == {"email", "password"}
    assert all(isinstance(m, str) for m in body["details"]["email"])


def test_it_hides_uncaught_exceptions(alice_api, monkeypatch, settings):
    def explode(**kwargs):
        raise RuntimeError("secret internals")

    monkeypatch.setattr("accounts.services.account_update_timezone", explode)
    for debug in (False, True):
        settings.DEBUG = debug
        r = alice_api.put("/api/v1/accounts/me/timezone", {"timezone": "UTC"})
        assert_error(r, 500, "internal_error")
        assert "secret internals" not in r.content.decode()


def test_it_throttles_with_retry_after(api, alice):
    for _ in range(5):
        api.post("/api/v1/accounts/me/password-reset", {"email": "x@example.com"})
    r = api.post("/api/v1/accounts/me/password-reset", {"email": "x@example.com"})
    assert_error(r, 429, "rate_limited")
    assert int(r["Retry-After"]) > 0


def test_it_serves_the_openapi_schema_and_docs(api):
    r = api.get("/api/v1/openapi.json")
    assert r.status_code == 200
    schema = r.json()
    assert schema["openapi"].startswith("3.")
    assert "/api/v1/ping" in schema["paths"]
    r = api.get("/api/v1/docs")
    assert r.status_code == 200
    assert b"swagger-ui" in r.content


def test_it_serves_the_browsable_api_to_an_admin_session(client, alice):
    client.force_login(alice)
    r = client.get("/api/v1/accounts/me", HTTP_ACCEPT="text/html")
    assert r.status_code == 200
    assert r["Content-Type"].startswith("text/html")
    assert b"alice@example.com" in r.content
    assert b"Get current account" in r.content or b"Account Me" in r.content


def test_it_enforces_csrf_for_browsable_api_writes(alice):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    r = client.put(
        "/api/v1/accounts/me/timezone", '{"timezone": "UTC"}', content_type="application/json"
    )
    assert_error(r, 403, "forbidden")
