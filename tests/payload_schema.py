"""Validation of received webhook payloads against the published JSON Schema.

The published schema lets every object carry keys it does not name (version 1 only
grows, and receivers must ignore what they do not know). The tests hold the payload to
more than that: ``assert_valid_payload`` also refuses a key the schema does not
describe, so a field added to the payload without its schema fails here.
"""

from __future__ import annotations

import copy
import functools
import json
from typing import Any

from jsonschema import Draft202012Validator

from webhooks.payload import payload_schema

__all__ = ["assert_valid_payload", "is_conduit_payload"]


def _closed(node: Any) -> Any:
    """The schema with ``additionalProperties: false`` on every object it describes."""
    if isinstance(node, dict):
        node = {key: _closed(value) for key, value in node.items()}
        if "properties" in node:
            node.setdefault("additionalProperties", False)
        return node
    if isinstance(node, list):
        return [_closed(item) for item in node]
    return node


@functools.cache
def _validator() -> Draft202012Validator:
    schema = _closed(copy.deepcopy(payload_schema()))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def assert_valid_payload(payload: Any) -> None:
    errors = sorted(_validator().iter_errors(payload), key=lambda e: list(e.absolute_path))
    assert not errors, "payload does not match the published schema:\n" + "\n".join(
        f"- {'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in errors[:20]
    )


def is_conduit_payload(body: bytes, content_type: str) -> Any:
    """The decoded body when it is a payload in the default format, else None.

    A webhook with a template sends its own shape; a body counts as the default format
    when it is a JSON object with the payload's envelope and authentication blocks.
    """
    if not content_type.startswith("application/json"):
        return None
    try:
        decoded = json.loads(body)
    except ValueError:
        return None
    if isinstance(decoded, dict) and "envelope" in decoded and "authentication" in decoded:
        return decoded
    return None
