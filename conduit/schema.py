"""Shared OpenAPI pieces: the Error component and ready-made error responses.

Each API method declares its operationId, tags and every status it documents
with ``@extend_schema``; these helpers keep the error part of that short and
identical everywhere.
"""

from __future__ import annotations

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse
from rest_framework import serializers


class ErrorSerializer(serializers.Serializer):
    code = serializers.CharField(help_text="Stable, snake_case error code, e.g. `not_found`.")
    error = serializers.CharField(help_text="Human-readable message saying what to do.")
    details = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()),
        required=False,
        help_text="On validation errors (422): messages per field.",
    )


_DEFAULT_DESCRIPTIONS = {
    400: "Malformed request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    409: "Conflict",
    410: "Gone",
    422: "Validation error",
    429: "Too many requests; see the Retry-After header",
}


def error(status: int, description: str | None = None) -> OpenApiResponse:
    return OpenApiResponse(
        response=ErrorSerializer, description=description or _DEFAULT_DESCRIPTIONS[status]
    )


def errors(*statuses: int) -> dict[int, OpenApiResponse]:
    """``{status: Error response}`` for each status, with the default description."""
    return {status: error(status) for status in statuses}


def no_content(description: str) -> OpenApiResponse:
    return OpenApiResponse(response=None, description=description)


# The query parameters of a paged list and the headers its 200 answer carries.
PAGE_PARAMETERS = [
    OpenApiParameter(
        "page",
        # No minimum: a value out of range is clamped, not refused.
        {"type": "integer", "default": 1},
        OpenApiParameter.QUERY,
        description="Page number (1-based); a value below 1 or not a number gives page 1.",
    ),
    OpenApiParameter(
        "page_size",
        # No minimum or maximum: the contract gives paged lists no 422, so a value
        # out of range is clamped rather than refused, and the schema says so.
        {"type": "integer", "default": 50},
        OpenApiParameter.QUERY,
        description="Number of results per page (default 50, at most 200): a larger value "
        "gives pages of 200, a value below 1 pages of 1, and one that is not a number the "
        "default.",
    ),
    OpenApiParameter(
        "X-Total-Count",
        {"type": "integer", "minimum": 0},
        OpenApiParameter.HEADER,
        response=[200],
        required=True,
        description="How many entries the whole list has.",
    ),
    OpenApiParameter(
        "Link",
        str,
        OpenApiParameter.HEADER,
        response=[200],
        required=True,
        description="RFC 8288 links to the `first`, `prev`, `next` and `last` pages, e.g. "
        '`<https://…/logs?page=2&page_size=50>; rel="next"`.',
    ),
]


# Said on every request body: the contract's status lists leave 400 out.
REQUEST_BODY_NOTE = (
    "A JSON object. A body that is not valid JSON, or nests deeper than 32 levels, gets "
    "400 `bad_request`; one over 2.5 MB gets 413 `payload_too_large`; one that is not "
    "JSON (another Content-Type) gets 415 `unsupported_media_type`."
)


class ConduitAutoSchema(AutoSchema):
    """Documents request bodies on DELETE too, and the errors of a malformed body.

    Sign-out, account deletion and disabling 2FA take a JSON body (a refresh
    token, a confirmation, a code); drf-spectacular leaves DELETE bodies out by
    default, which would hide them from generated clients.
    """

    def get_request_serializer(self) -> object:
        # Reached only when extend_schema(request=...) did not name one: a
        # DELETE then has no body (instead of a guessed serializer).
        if self.method == "DELETE":
            return None
        return super().get_request_serializer()

    def _get_request_body(self, direction: str = "request") -> dict | None:
        if self.method != "DELETE" or self.get_request_serializer() is None:
            body = super()._get_request_body(direction)
        else:
            self.method = "POST"
            try:
                body = super()._get_request_body(direction)
            finally:
                self.method = "DELETE"
        if body is not None:
            body.setdefault("description", REQUEST_BODY_NOTE)
        return body
