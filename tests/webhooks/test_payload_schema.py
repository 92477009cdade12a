"""The published JSON Schema of the default payload: served beside the API docs, linked
from them, and describing exactly what build_payload produces."""

from __future__ import annotations

import pytest
from jsonschema import Draft202012Validator

from tests.payload_schema import assert_valid_payload
from webhooks.payload import AuthResults, Envelope, build_payload, payload_schema

ENVELOPE = Envelope(
    mail_from="a@example.com", rcpt_to=["b@hooks.example"], client_ip=None, helo=None
)


def test_it_serves_the_schema_without_signing_in(client):
    r = client.get("/api/v1/schemas/payload/v1.json")

    assert r.status_code == 200
    assert r["Content-Type"] == "application/schema+json"
    assert r.json() == payload_schema(1)
    Draft202012Validator.check_schema(r.json())


@pytest.mark.django_db
def test_it_answers_404_for_an_unpublished_version(client):
    r = client.get("/api/v1/schemas/payload/v2.json")

    assert r.status_code == 404
    assert r.json()["code"] == "not_found"


def test_it_is_linked_from_the_api_description(client):
    description = client.get("/api/v1/openapi.json").json()["info"]["description"]

    assert "(/api/v1/schemas/payload/v1.json)" in description


def test_it_requires_every_key_the_payload_has():
    payload = build_payload(b"Subject: hi\r\n\r\nhello\r\n", envelope=ENVELOPE, auth=AuthResults())

    assert set(payload_schema()["required"]) == set(payload)
    assert set(payload_schema()["properties"]["authentication"]["required"]) == set(
        payload["authentication"]
    )


def test_the_tests_refuse_a_key_the_schema_does_not_describe():
    payload = build_payload(b"Subject: hi\r\n\r\nhello\r\n", envelope=ENVELOPE, auth=AuthResults())
    assert_valid_payload(payload)

    with pytest.raises(AssertionError, match="surprise"):
        assert_valid_payload({**payload, "surprise": 1})
    with pytest.raises(AssertionError, match="thread_id"):
        assert_valid_payload({**payload, "thread_id": "not hex"})
