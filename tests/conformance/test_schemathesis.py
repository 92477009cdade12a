"""Fuzzing the live API with schemathesis against the committed openapi.json.

Every operation gets generated requests, signed in with a real API token of an
account that owns a verified domain, a policy, a webhook and a delivery log:

- valid requests (positive data) with random ids, then with the ids of the real
  objects, so that the happy paths answer too;
- invalid requests (negative data) wherever there is something to make invalid.

Each answer must be no 5xx, have a documented status (the contract's status list,
nothing more), the documented content type, headers and body schema. Hypothesis is
derandomized (a fixed seed per test) and bounded, and keeps no example database.

Statuses that apply to every operation are not in the contract's lists: 429 is kept
out of reach by raising the throttles (see conftest.py), 405 and 415 cannot happen
since only documented methods and JSON are sent; a body that is not JSON at all
(negative data can be raw bytes) must get 400 `bad_request` in the Error shape,
unless the request fails before its body is read (401, 404).
"""

from __future__ import annotations

import json
import os

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conformance.conftest import OPENAPI_JSON, load_openapi

# Per strategy (random ids, real ids, invalid data). Raise it for a deeper run:
# CONDUIT_FUZZ_EXAMPLES=200 bin/test tests/conformance/test_schemathesis.py
EXAMPLES = int(os.environ.get("CONDUIT_FUZZ_EXAMPLES", "10"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]

SCHEMA = schemathesis.openapi.from_path(OPENAPI_JSON)
# The bearer token is ours to send: a generated Authorization header would only test 401.
SCHEMA.config.generation.update(with_security_parameters=False)

RAW = load_openapi()
OPERATIONS = {
    operation["operationId"]: operation
    for item in RAW["paths"].values()
    for operation in item.values()
    if isinstance(operation, dict) and "operationId" in operation
}


def is_json(body: object) -> bool:
    if not isinstance(body, bytes):
        return True
    try:
        json.loads(body)
    except ValueError:
        return False
    return True


def run(strategy, *, base_url: str, headers: dict[str, str], session: requests.Session) -> int:
    calls = 0

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def check(case) -> None:
        nonlocal calls
        calls += 1
        if is_json(case.body):
            case.call_and_validate(
                base_url=base_url, headers=headers, session=session, checks=CHECKS, timeout=15
            )
            return
        # Not JSON: 400 `bad_request` when the body is read, else (401, 404 before
        # the body matters) a documented answer like any other.
        response = case.call(base_url=base_url, headers=headers, session=session, timeout=15)
        if response.status_code != 400:
            case.validate_response(response, checks=CHECKS)
            return
        assert response.json()["code"] == "bad_request", response.text
        case.validate_response(response, checks=[not_a_server_error, content_type_conformance])

    check()
    return calls


def strategies(operation_id: str, world) -> list:
    """Valid data with random and with real ids, then invalid data."""
    operation = SCHEMA.find_operation_by_id(operation_id)
    raw = OPERATIONS[operation_id]
    real_ids = world.path_ids(operation.path)
    has_body_or_query = "requestBody" in raw or any(
        parameter["in"] == "query" for parameter in raw.get("parameters", [])
    )
    found = [operation.as_strategy(generation_mode=GenerationMode.POSITIVE)]
    if real_ids:
        found.append(
            operation.as_strategy(generation_mode=GenerationMode.POSITIVE, path_parameters=real_ids)
        )
    if raw.get("parameters") or "requestBody" in raw:
        found.append(operation.as_strategy(generation_mode=GenerationMode.NEGATIVE))
    if real_ids and has_body_or_query:
        # With a random id most requests stop at 404 before the body or query is read.
        found.append(
            operation.as_strategy(generation_mode=GenerationMode.NEGATIVE, path_parameters=real_ids)
        )
    return found


# Its request that must succeed deletes the account the requests are signed with.
SUCCEEDS_LAST = {"deleteAccount"}


def call_must_succeed(operation_id: str, world, **transport) -> None:
    """A valid request for real objects, checked like the others and expected to succeed:
    random data rarely get past validation, and their success answers need checking too."""
    operation = SCHEMA.find_operation_by_id(operation_id)
    body = world.valid_body(operation_id)
    case = operation.Case(
        path_parameters=world.path_ids(operation.path) or None,
        **({} if body is None else {"body": body}),
    )
    response = case.call_and_validate(headers=world.headers, checks=CHECKS, **transport)
    assert response.status_code < 300, (operation_id, response.status_code, response.text)


@pytest.mark.parametrize("operation_id", sorted(OPERATIONS))
def test_it_answers_as_documented(operation_id, live_server, world):
    calls = 0
    with requests.Session() as session:
        transport = {"base_url": live_server.url, "session": session}
        if operation_id not in SUCCEEDS_LAST:
            call_must_succeed(operation_id, world, **transport)
        for strategy in strategies(operation_id, world):
            calls += run(strategy, headers=world.headers, **transport)
        if operation_id in SUCCEEDS_LAST:
            call_must_succeed(operation_id, world, **transport)
    assert calls > 0
