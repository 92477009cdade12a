"""The schema carries exactly the operations of the contract's endpoints.tsv, with the
reference's bodies, and the committed openapi.json is the schema the code generates."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from django.core.management import call_command
from drf_spectacular.generators import SchemaGenerator

from tests import contract_bodies as ref

ROOT = Path(__file__).resolve().parents[1]
ENDPOINTS = ROOT / "docs" / "contract" / "endpoints.tsv"
COMMITTED_SCHEMA = ROOT / "openapi.json"
REGENERATE = (
    "SECRET_KEY=x .venv/bin/python manage.py spectacular --format openapi-json "
    "--file openapi.json --validate --fail-on-warn"
)
METHODS = {"get", "post", "put", "patch", "delete"}

COMPONENTS = {
    "Error",
    "SessionResponse",
    "AccountResponse",
    "DomainResponse",
    "SmtpSecurityPolicyResponse",
    "WebhookResponse",
    "DeliveryLogResponse",
    "SimulateWebhookResponse",
    "SetupTOTPResponse",
    "BackupCodesResponse",
    "APITokenResponse",
}


def contract() -> dict[str, dict]:
    assert ENDPOINTS.exists(), f"the contract is missing: {ENDPOINTS}"
    with ENDPOINTS.open() as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return {row["operation_id"]: row for row in rows}


@pytest.fixture(scope="module")
def schema() -> dict:
    return SchemaGenerator().get_schema(request=None, public=True)


def operations(schema: dict) -> dict[str, tuple[str, str, dict]]:
    found = {}
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                found[operation["operationId"]] = (method.upper(), path, operation)
    return found


# --- Reading the schema ------------------------------------------------------------


def resolve(schema: dict, node: dict) -> dict:
    while "$ref" in node or len(node.get("allOf", ())) == 1:
        if "allOf" in node:  # a described enum: {"allOf": [{"$ref": ...}], "description"}
            node = node["allOf"][0]
            continue
        name = node["$ref"].removeprefix("#/components/schemas/")
        node = schema["components"]["schemas"][name]
    return node


def component_name(node: dict) -> str | None:
    ref_ = node.get("$ref")
    return ref_.removeprefix("#/components/schemas/") if ref_ else None


def type_of(schema: dict, node: dict) -> str:
    """The reference's name for a property's type (see tests/contract_bodies.py)."""
    node = resolve(schema, node)
    kind = node.get("type")
    if kind == "string":
        return ref.DATETIME if node.get("format") == "date-time" else ref.S
    if kind == "array":
        return f"array<{type_of(schema, node['items'])}>"
    if kind in ("integer", "boolean", "object"):
        return {"integer": ref.INT, "boolean": ref.BOOL, "object": ref.OBJECT}[kind]
    raise AssertionError(f"no reference type for {node}")


def fields_of(schema: dict, node: dict) -> dict[str, str]:
    node = resolve(schema, node)
    assert node.get("type") == "object", node
    return {name: type_of(schema, prop) for name, prop in node.get("properties", {}).items()}


def expected_fields(node: dict, reference: dict) -> dict[str, str]:
    return {**reference, **ref.DOCUMENTED_EXTRAS.get(component_name(node) or "", {})}


def json_body(content: dict | None, where: str) -> dict:
    assert content and set(content) == {"application/json"}, f"{where}: {content}"
    return content["application/json"]["schema"]


# --- The operations ----------------------------------------------------------------


def test_it_documents_every_operation_of_the_contract(schema):
    assert set(operations(schema)) == set(contract()) | ref.BEYOND_THE_CONTRACT
    assert len(contract()) == 38
    assert not ref.BEYOND_THE_CONTRACT & set(contract())


def test_the_attachment_link_is_its_own_credential(schema):
    method, path, operation = operations(schema)["downloadAttachment"]
    assert (method, path) == ("GET", "/api/v1/attachments/{token}")
    assert operation.get("security") in (None, [], [{}])
    assert set(operation["responses"]) == {"200", "403", "404", "410", "503"}


# The message operations: each its own path and method, none the contract's.
MESSAGE_ROUTES = {
    "listMessages": ("GET", "/api/v1/messages"),
    "getMessage": ("GET", "/api/v1/messages/{id}"),
    "deleteMessage": ("DELETE", "/api/v1/messages/{id}"),
    "downloadMessageRaw": ("GET", "/api/v1/messages/{id}/raw"),
    "redeliverMessage": ("POST", "/api/v1/messages/{id}/redeliver"),
}


def test_the_message_operations_are_beyond_the_contract_with_their_own_routes(schema):
    assert set(MESSAGE_ROUTES) <= ref.BEYOND_THE_CONTRACT
    contract_routes = {(row["method"], row["path"]) for row in contract().values()}
    for operation_id, route in MESSAGE_ROUTES.items():
        method, path, operation = operations(schema)[operation_id]
        assert (method, path) == route, operation_id
        assert route not in contract_routes, operation_id
        assert operation["tags"] == ["Messages"] and operation["summary"], operation_id
        assert {"bearerAuth": []} in operation["security"], operation_id
        assert {} not in operation["security"], operation_id
        assert "401" in operation["responses"] and "404" in operation["responses"], operation_id


def test_it_matches_the_contract_for_every_operation(schema):
    expected = contract()
    found = operations(schema)
    for operation_id, row in expected.items():
        method, path, operation = found[operation_id]
        assert (method, path) == (row["method"], row["path"]), operation_id
        assert operation["tags"] == row["tags"].split(","), operation_id
        statuses = sorted(operation["responses"], key=int)
        assert statuses == row["statuses"].split(","), operation_id
        assert operation["summary"] == row["summary"], operation_id
        if row["auth"] == "none":
            assert operation.get("security") in (None, [], [{}]), operation_id
        else:
            assert {"bearerAuth": []} in operation["security"], operation_id
            assert {} not in operation["security"], operation_id


def test_the_operations_beyond_the_contract_follow_its_conventions(schema):
    """Tagged, summarised, signed in with a bearer token (except the attachment link,
    its own credential), under /api/v1, with the error statuses in the Error shape and
    no path the contract already uses."""
    contract_routes = {(row["method"], row["path"]) for row in contract().values()}
    for operation_id in ref.BEYOND_THE_CONTRACT:
        method, path, operation = operations(schema)[operation_id]
        assert path.startswith("/api/v1/"), operation_id
        assert (method, path) not in contract_routes, operation_id
        assert operation["tags"] and operation["summary"], operation_id
        assert operation["description"], operation_id
        if operation_id == "downloadAttachment":
            continue
        assert {"bearerAuth": []} in operation["security"], operation_id
        assert "401" in operation["responses"], operation_id


def test_it_names_components_as_in_the_contract(schema):
    assert set(schema["components"]["schemas"]) >= COMPONENTS
    error_responses = [
        response
        for _, _, operation in operations(schema).values()
        for status, response in operation["responses"].items()
        if int(status) >= 400
    ]
    assert error_responses
    for response in error_responses:
        ref_ = response["content"]["application/json"]["schema"]["$ref"]
        assert ref_ == "#/components/schemas/Error"


# --- The bodies, field by field ----------------------------------------------------


def test_the_transcribed_reference_covers_the_contract():
    rows = contract()
    assert set(ref.BODIES) == set(rows)
    for operation_id, (_, responses) in ref.BODIES.items():
        statuses = [str(status) for status in responses]
        assert statuses == rows[operation_id]["statuses"].split(","), operation_id


@pytest.mark.parametrize("operation_id", sorted(ref.BODIES))
def test_it_documents_the_reference_request_body(schema, operation_id):
    _, _, operation = operations(schema)[operation_id]
    reference, _ = ref.BODIES[operation_id]
    if reference is None:
        assert "requestBody" not in operation, f"{operation_id} documents a body"
        return
    body = json_body(operation["requestBody"]["content"], operation_id)
    assert fields_of(schema, body) == expected_fields(body, reference), operation_id


@pytest.mark.parametrize("operation_id", sorted(ref.BODIES))
def test_it_documents_the_reference_response_bodies(schema, operation_id):
    _, _, operation = operations(schema)[operation_id]
    _, responses = ref.BODIES[operation_id]
    for status, reference in responses.items():
        where = f"{operation_id} {status}"
        content = operation["responses"][str(status)].get("content")
        if reference is None:
            assert content is None, f"{where} documents a body"
        elif reference == ref.ANY:
            shapes = resolve(schema, json_body(content, where))["oneOf"]
            assert [fields_of(schema, shape) for shape in shapes] == ref.SIGN_IN_SHAPES, where
        elif isinstance(reference, list):
            body = resolve(schema, json_body(content, where))
            assert body["type"] == "array", where
            items = body["items"]
            assert fields_of(schema, items) == expected_fields(items, reference[0]), where
        else:
            body = json_body(content, where)
            assert fields_of(schema, body) == expected_fields(body, reference), where


@pytest.mark.parametrize("operation_id", sorted(ref.BODIES))
def test_it_documents_the_reference_parameters(schema, operation_id):
    _, _, operation = operations(schema)[operation_id]
    found = {
        parameter["name"]: type_of(schema, parameter["schema"])
        for parameter in operation.get("parameters", [])
        if parameter["in"] in ("path", "query")
    }
    expected = {
        **ref.PARAMETERS.get(operation_id, {}),
        **ref.DOCUMENTED_EXTRAS.get(f"{operation_id}:parameters", {}),
    }
    assert found == expected


def test_it_requires_every_field_of_every_response(schema):
    """Every response carries all its fields (null or not): clients need not guess."""
    names = set()
    for operation_id, (_, _, operation) in operations(schema).items():
        for status, response in operation["responses"].items():
            if int(status) < 400 and response.get("content"):
                if operation_id == "downloadAttachment":  # the attachment's bytes, not JSON
                    assert set(response["content"]) == {"application/octet-stream"}
                    continue
                if operation_id == "downloadMessageRaw":  # the message's bytes, not JSON
                    assert set(response["content"]) == {"message/rfc822"}
                    continue
                body = json_body(response["content"], operation_id)
                names.add(component_name(body.get("items", body)))
    assert {"WebhookResponse", "CreateSessionResponse", "PingResponse", "MessageResponse"} <= names
    for name in names:
        component = schema["components"]["schemas"][name]
        for alternative in component.get("oneOf", [component]):
            alternative = resolve(schema, alternative)
            optional = set(alternative["properties"]) - set(alternative.get("required", []))
            assert not optional, f"{name}: {sorted(optional)} not required"


# --- The committed file ------------------------------------------------------------


def test_the_committed_schema_is_the_generated_one(tmp_path):
    """openapi.json at the top level is what the code generates, validated, warning-free."""
    generated = tmp_path / "openapi.json"
    call_command(
        "spectacular",
        "--format",
        "openapi-json",
        "--file",
        str(generated),
        "--validate",
        "--fail-on-warn",
    )
    assert COMMITTED_SCHEMA.exists(), f"openapi.json is missing; generate it: {REGENERATE}"
    committed = json.loads(COMMITTED_SCHEMA.read_text())
    assert json.loads(generated.read_text()) == committed, (
        f"openapi.json differs from the schema the code generates; regenerate it: {REGENERATE}"
    )
