"""With Redis (cache and broker) stopped, the real web process still signs people in."""

from __future__ import annotations

import pytest
from django.conf import global_settings
from django.db import connection
from django.test import override_settings

from tests.ingress.processes import PrivateRedis, service_database_url
from tests.webserver import web_server

pytestmark = pytest.mark.django_db(transaction=True)

WRONG = "wrong-password-1"


@pytest.fixture
def web_without_redis(alice, password, tmp_path):
    # The suite hashes with MD5 for speed; the web process knows only the real hashers.
    with override_settings(PASSWORD_HASHERS=global_settings.PASSWORD_HASHERS):
        alice.set_password(password)
        alice.save(update_fields=["password"])
    redis_server = PrivateRedis().start()
    try:
        with web_server(
            directory=tmp_path, database_url=service_database_url(), redis_url=redis_server.url
        ) as server:
            assert server.request("GET", "/api/v1/ping").status_code == 200
            redis_server.stop()
            yield server
    finally:
        redis_server.stop()
        with connection.cursor() as cursor:  # the web process's connection
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )


def sign_in(server, password: str, **headers: str):
    body = {"email": "alice@example.com", "password": password}
    return server.request("POST", "/api/v1/sessions", json=body, headers=headers)


def test_it_signs_in_and_takes_reset_requests_with_redis_stopped(web_without_redis, password):
    web = web_without_redis
    r = sign_in(web, WRONG)
    assert r.status_code == 401, r.text
    assert r.json()["code"] == "unauthorized"
    r = sign_in(web, password)
    assert r.status_code == 200, r.text
    assert set(r.json()) == {"access_token", "refresh_token", "expires_in"}
    for email in ("alice@example.com", "nobody@example.com"):
        r = web.request("POST", "/api/v1/accounts/me/password-reset", json={"email": email})
        assert r.status_code == 202, r.text
    output = web.service.output()
    assert "The cache is unreachable" in output
    assert "Password reset request not queued" in output


def test_it_still_throttles_guessing_with_redis_stopped(web_without_redis, password):
    web = web_without_redis
    for _ in range(10):
        assert sign_in(web, WRONG).status_code == 401
    r = sign_in(web, WRONG)
    assert r.status_code == 429, r.text
    assert r.json()["code"] == "rate_limited"
    assert int(r.headers["Retry-After"]) >= 1
