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


# --- Strings stay strings (conduit/strict.py) ---------------------------------------------


def test_it_refuses_a_number_sent_for_a_text_field(api):
    from conduit.strict import NOT_TEXT

    r = api.post(
        "/api/v1/accounts",
        {"email": "dana@example.com", "password": 123456789012345},
        format="json",
    )

    body = assert_error(r, 422, "validation_error")
    assert body["details"] == {"password": [NOT_TEXT]}


def test_it_refuses_numbers_for_text_fields_across_the_api(alice_api, alice):
    from conduit.strict import NOT_TEXT
    from domains.models import Domain

    Domain.objects.create(account=alice, name="alice.example", verified=True)
    cases = [
        ("/api/v1/domains", {"name": 42}, "name"),
        ("/api/v1/smtp-policies", {"name": 7}, "name"),
        ("/api/v1/webhooks", {"address": 1, "target_url": "https://h.example/"}, "address"),
        ("/api/v1/webhooks", {"address": "a@alice.example", "target_url": 2.5}, "target_url"),
        ("/api/v1/accounts/me/api-tokens", {"name": 3}, "name"),
        ("/api/v1/accounts/me/api-tokens", {"name": "ci", "allowed_ips": [10]}, "allowed_ips.0"),
    ]
    for path, payload, field in cases:
        body = assert_error(alice_api.post(path, payload, format="json"), 422, "validation_error")
        assert field in body["details"], (path, body)
        assert NOT_TEXT in str(body["details"][field]), (path, body)


def _request_serializers() -> list[type]:
    import importlib

    from rest_framework import serializers

    found = []
    for app in ("accounts", "domains", "policies", "webhooks"):
        module = importlib.import_module(f"{app}.serializers")
        for name, value in vars(module).items():
            if (
                name.endswith("RequestSerializer")
                and isinstance(value, type)
                and issubclass(value, serializers.Serializer)
            ):
                found.append(value)
    return found


def test_every_text_field_of_every_request_takes_only_strings():
    from rest_framework import serializers

    from conduit import strict

    loose = []
    serializer_classes = _request_serializers()
    assert len(serializer_classes) > 15
    for serializer_class in serializer_classes:
        for name, field in serializer_class().fields.items():
            for each in (field, getattr(field, "child", None)):
                if isinstance(each, serializers.CharField) and not isinstance(
                    each, strict.CharField | strict.EmailField
                ):
                    loose.append(f"{serializer_class.__name__}.{name}")
    assert loose == []


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


# --- Request limits ------------------------------------------------------------------------


def test_it_answers_413_to_a_10_mb_body(api):
    body = '{"email": "a@example.com", "password": "' + "x" * (10 * 1024 * 1024) + '"}'
    r = api.post("/api/v1/accounts", data=body, content_type="application/json")
    assert "2621440 bytes" in assert_error(r, 413, "payload_too_large")["error"]


def test_it_answers_400_to_json_nested_1000_deep(api):
    body = "[" * 1000 + "]" * 1000
    r = api.post("/api/v1/accounts", data=body, content_type="application/json")
    assert "nested" in assert_error(r, 400, "bad_request")["error"]


def test_it_answers_400_to_json_nested_just_past_the_limit(api):
    body = '{"email": ' + "[" * 40 + "]" * 40 + "}"
    r = api.post("/api/v1/accounts", data=body, content_type="application/json")
    assert_error(r, 400, "bad_request")


def test_it_answers_414_to_an_overlong_request_line(api):
    assert_error(api.get("/api/v1/ping?x=" + "a" * 9000), 414, "uri_too_long")


def test_it_answers_431_to_a_9_kb_header(api):
    assert_error(api.get("/api/v1/ping", HTTP_X_NAME="a" * 9 * 1024), 431, "header_too_large")


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    from tests.webserver import web_server

    with web_server(directory=tmp_path_factory.mktemp("web")) as server:
        yield server


def _assert_json_error(r, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["Content-Type"].startswith("application/json"), r.text
    assert r.json()["code"] == code


def test_gunicorn_leaves_an_overlong_request_line_to_the_api(web):
    # gunicorn alone answers a request line over 4,094 bytes with its own page.
    r = web.request("GET", "/api/v1/ping?x=" + "a" * 9000)
    _assert_json_error(r, 414, "uri_too_long")
    assert web.request("GET", "/api/v1/ping?x=" + "a" * 5000).status_code == 200


def test_gunicorn_leaves_a_9_kb_header_to_the_api(web):
    # gunicorn alone answers a header field over 8,190 bytes with its own page.
    r = web.request("GET", "/api/v1/ping", headers={"X-Name": "a" * 9 * 1024})
    _assert_json_error(r, 431, "header_too_large")


def test_gunicorn_passes_on_a_10_mb_body_and_deep_json(web):
    body = b'{"email": "a@example.com", "password": "' + b"x" * (10 * 1024 * 1024) + b'"}'
    headers = {"Content-Type": "application/json"}
    r = web.request("POST", "/api/v1/accounts", data=body, headers=headers)
    _assert_json_error(r, 413, "payload_too_large")
    r = web.request("POST", "/api/v1/accounts", data="[" * 1000 + "]" * 1000, headers=headers)
    _assert_json_error(r, 400, "bad_request")


# --- Paging: schema and behaviour agree ---------------------------------------------------


def test_it_clamps_page_size_201_to_200_as_the_schema_says(alice, alice_api):
    from accounts.models import AuditLogEntry

    AuditLogEntry.objects.bulk_create(
        AuditLogEntry(account=alice, action="test.entry") for _ in range(205)
    )
    r = alice_api.get("/api/v1/accounts/me/audit-log?page_size=201")
    assert r.status_code == 200
    assert len(r.json()) == 200
    assert "page_size=200" in r["Link"]
    schema = alice_api.get("/api/v1/openapi.json").json()
    [page_size] = [
        p
        for p in schema["paths"]["/api/v1/accounts/me/audit-log"]["get"]["parameters"]
        if p["name"] == "page_size"
    ]
    # The schema refuses nothing the API accepts: no maximum, and it says what happens.
    assert "maximum" not in page_size["schema"]
    assert "gives pages of 200" in page_size["description"]


def test_it_documents_the_400_of_a_malformed_body(api):
    schema = api.get("/api/v1/openapi.json").json()
    body = schema["paths"]["/api/v1/accounts"]["post"]["requestBody"]
    assert "400 `bad_request`" in body["description"]
    assert "413 `payload_too_large`" in body["description"]


# --- Database down -------------------------------------------------------------------------


@pytest.fixture
def database_cut(transactional_db):
    """The test's database connection routed through a relay the test can cut."""
    from django.db import connection

    from tests.ingress.processes import TcpProxy

    saved = dict(connection.settings_dict)
    proxy = TcpProxy(target=(saved["HOST"] or "127.0.0.1", int(saved["PORT"] or 5432)))
    connection.close()
    connection.settings_dict.update(HOST="127.0.0.1", PORT=str(proxy.port))
    yield proxy
    proxy.restore()
    connection.close()
    connection.settings_dict.update(HOST=saved["HOST"], PORT=saved["PORT"])
    proxy.close()


def test_it_answers_503_with_retry_after_while_the_database_is_down(alice, database_cut):
    from django.db import connection

    from tests.conftest import client_for

    client = client_for(alice)
    assert client.get("/api/v1/accounts/me").status_code == 200
    database_cut.cut()
    for r in (
        client.get("/api/v1/accounts/me"),
        client.get("/api/v1/webhooks"),
        client.post("/api/v1/sessions", {"email": "alice@example.com", "password": "x" * 12}),
    ):
        body = assert_error(r, 503, "service_unavailable")
        assert r["Retry-After"] == "10"
        assert "retry in 10 seconds" in body["error"]
    database_cut.restore()
    # Django drops a broken connection when a request starts; the test client
    # skips that step, so the test does it.
    connection.close()
    assert client.get("/api/v1/accounts/me").status_code == 200
