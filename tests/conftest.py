"""Fixtures shared by every test: the cast (alice owns, bob is another account,
charlie has nothing) and API clients signed in as them."""

from __future__ import annotations

import os

import pytest
from django.core.cache import cache
from django.test import override_settings
from rest_framework.test import APIClient

from accounts import services
from accounts.models import Account
from tests.delivery_fixtures import (  # noqa: F401  (fixtures)
    alice_domain,
    celery_worker,
    delivery_settings,
    public_domain,
    storage_half,
    webhook,
)
from tests.dns_fixtures import dns_server  # noqa: F401  (a fixture)
from tests.factories import PASSWORD, AccountFactory
from tests.payload_schema import assert_valid_payload, is_conduit_payload
from tests.s3_fixtures import raw_in_s3, s3_server  # noqa: F401  (fixtures)


@pytest.fixture(scope="session", autouse=True)
def _real_services_under_ci(django_db_blocker: object) -> None:
    """Under CI the suite must run on PostgreSQL and Redis, never the embedded fallback."""
    from django.conf import settings

    from webhooks import storage

    if os.environ.get("CI"):
        assert storage.on_postgresql(), "CI must run the tests on PostgreSQL"
        assert settings.REDIS_URL, "CI must run the tests with Redis"


@pytest.fixture(scope="session", autouse=True)
def _fast_password_hashing() -> object:
    """Production hashing costs ~0.3 s a password; the tests hash hundreds."""
    with override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"]):
        yield


@pytest.fixture(autouse=True)
def _clean_cache() -> None:
    cache.clear()


@pytest.fixture
def httpserver(httpserver):  # pytest-httpserver's, extended
    """The local webhook receiver, which checks what it received after the test: every
    payload in the default format must match the published JSON Schema."""
    yield httpserver
    for request, _response in httpserver.log:
        payload = is_conduit_payload(request.get_data(), request.content_type or "")
        if payload is not None:
            assert_valid_payload(payload)


@pytest.fixture
def password() -> str:
    return PASSWORD


@pytest.fixture
def alice(db: None) -> Account:
    return AccountFactory(email="alice@example.com")


@pytest.fixture
def bob(db: None) -> Account:
    return AccountFactory(email="bob@example.org")


@pytest.fixture
def charlie(db: None) -> Account:
    return AccountFactory(email="charlie@example.net")


@pytest.fixture
def api() -> APIClient:
    return APIClient()


def client_for(account: Account) -> APIClient:
    issued = services.session_issue(account=account, ip="127.0.0.1", user_agent="tests")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {issued.access_token}")
    client.issued = issued  # type: ignore[attr-defined]
    return client


@pytest.fixture
def alice_api(alice: Account) -> APIClient:
    return client_for(alice)


@pytest.fixture
def bob_api(bob: Account) -> APIClient:
    return client_for(bob)
