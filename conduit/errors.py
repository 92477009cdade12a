"""The one error shape of the API, and the handler that produces it.

Every error under /api/ is ``{"code": "<stable_snake_case>", "error": "<message>"}``
with ``details`` (field -> messages) on validation errors. Views raise the
exceptions below; DRF's own exceptions are mapped here too, so that no error
ever leaves in another shape.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.db import InterfaceError, OperationalError
from django.http import Http404
from rest_framework import exceptions as drf
from rest_framework.response import Response

logger = logging.getLogger(__name__)


class ApiError(drf.APIException):
    """Base of the project's API errors: a status, a stable code and a message."""

    status_code = 400
    code = "bad_request"
    message = "The request could not be understood."

    def __init__(
        self,
        message: str | None = None,
        *,
        code: str | None = None,
        details: dict[str, list[str]] | None = None,
    ) -> None:
        self.message = message or self.message
        self.code = code or self.code
        self.details = details
        super().__init__(detail=self.message, code=self.code)


class BadRequest(ApiError):
    status_code = 400
    code = "bad_request"


class Unauthorized(ApiError):
    status_code = 401
    code = "unauthorized"
    message = "Authentication credentials were missing or invalid."


class Forbidden(ApiError):
    status_code = 403
    code = "forbidden"
    message = "You may not do this."


class NotFound(ApiError):
    status_code = 404
    code = "not_found"
    message = "Not found."


class Conflict(ApiError):
    status_code = 409
    code = "conflict"
    message = "This conflicts with an existing resource."


class Gone(ApiError):
    status_code = 410
    code = "gone"
    message = "This is no longer available."


class Unprocessable(ApiError):
    status_code = 422
    code = "validation_error"
    message = "The request has invalid fields."


class RateLimited(ApiError):
    status_code = 429
    code = "rate_limited"
    message = "Too many requests."

    def __init__(self, message: str | None = None, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = max(1, math.ceil(retry_after))


class ServiceUnavailable(ApiError):
    """A service behind the API (e.g. an object store) did not answer; retry shortly."""

    status_code = 503
    code = "service_unavailable"
    message = "The service is temporarily unavailable; retry in a minute."


# Seconds a client is told to wait while the database is unreachable: long
# enough not to hammer it, short enough for a restart or a failover.
DATABASE_RETRY_AFTER = 10


def database_unavailable(exc: BaseException) -> bool:
    """True for the errors of a database that cannot be reached (down, cut, restarting).

    psycopg reports a refused or broken connection, and a server shutting down,
    as OperationalError (and transient server-side failures such as a deadlock,
    for which "retry shortly" is right too); a connection already closed under
    the client gives InterfaceError. Errors caused by the data (IntegrityError, DataError) are
    not these, and stay 4xx or 500.
    """
    return isinstance(exc, OperationalError | InterfaceError)


def service_unavailable() -> tuple[int, dict, dict[str, str]]:
    """The answer while the database is unreachable: 503 with Retry-After."""
    body = error_body(
        "service_unavailable",
        "The service is temporarily unavailable (its database cannot be reached); "
        f"retry in {DATABASE_RETRY_AFTER} seconds.",
    )
    return 503, body, {"Retry-After": str(DATABASE_RETRY_AFTER)}


def payload_too_large() -> dict:
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    return error_body(
        "payload_too_large",
        f"The request body is larger than {limit} bytes; send a smaller body.",
    )


def error_body(code: str, message: str, details: dict[str, list[str]] | None = None) -> dict:
    body: dict[str, Any] = {"code": code, "error": message}
    if details is not None:
        body["details"] = details
    return body


def flatten_validation_detail(detail: Any, prefix: str = "") -> dict[str, list[str]]:
    """Turn DRF's nested error structure into ``{"field.sub": ["message"]}``."""
    flat: dict[str, list[str]] = {}
    if isinstance(detail, dict):
        for key, value in detail.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            for field, messages in flatten_validation_detail(value, name).items():
                flat.setdefault(field, []).extend(messages)
    elif isinstance(detail, list):
        for index, value in enumerate(detail):
            if isinstance(value, dict | list):
                name = f"{prefix}.{index}" if prefix else str(index)
                for field, messages in flatten_validation_detail(value, name).items():
                    flat.setdefault(field, []).extend(messages)
            else:
                flat.setdefault(prefix or "non_field_errors", []).append(str(value))
    else:
        flat.setdefault(prefix or "non_field_errors", []).append(str(detail))
    return flat


def _validation_message(details: dict[str, list[str]]) -> str:
    parts = []
    for field, messages in details.items():
        label = "Request" if field == "non_field_errors" else field
        parts.append(f"{label}: {' '.join(messages)}")
    return "Invalid input. " + " ".join(parts) if parts else "Invalid input."


def _translate(exc: Exception) -> tuple[int, dict, dict[str, str]]:
    """Map an exception to (status, body, extra headers)."""
    headers: dict[str, str] = {}
    if isinstance(exc, RateLimited):
        headers["Retry-After"] = str(exc.retry_after)
        return exc.status_code, error_body(exc.code, exc.message), headers
    if isinstance(exc, ApiError):
        return exc.status_code, error_body(exc.code, exc.message, exc.details), headers
    if isinstance(exc, drf.ValidationError):
        details = flatten_validation_detail(exc.detail)
        return 422, error_body("validation_error", _validation_message(details), details), headers
    if database_unavailable(exc):
        return service_unavailable()
    if isinstance(exc, RequestDataTooBig):
        return 413, payload_too_large(), headers
    if isinstance(exc, drf.ParseError):
        return 400, error_body("bad_request", f"Malformed request body: {exc.detail}"), headers
    if isinstance(exc, drf.UnsupportedMediaType):
        return (
            415,
            error_body(
                "unsupported_media_type",
                f"{exc.detail} Send the body as JSON with Content-Type: application/json.",
            ),
            headers,
        )
    if isinstance(exc, drf.NotAuthenticated | drf.AuthenticationFailed):
        return 401, error_body("unauthorized", str(exc.detail)), headers
    if isinstance(exc, drf.PermissionDenied | DjangoPermissionDenied):
        return 403, error_body("forbidden", "You may not do this."), headers
    if isinstance(exc, drf.NotFound | Http404):
        return 404, error_body("not_found", "Not found."), headers
    if isinstance(exc, drf.MethodNotAllowed):
        return 405, error_body("method_not_allowed", str(exc.detail)), headers
    if isinstance(exc, drf.NotAcceptable):
        return 406, error_body("not_acceptable", str(exc.detail)), headers
    if isinstance(exc, drf.Throttled):
        wait = max(1, math.ceil(exc.wait or 1))
        headers["Retry-After"] = str(wait)
        return (
            429,
            error_body("rate_limited", f"Too many requests; retry in {wait} seconds."),
            headers,
        )
    if isinstance(exc, drf.APIException):
        code = exc.default_code if isinstance(exc.default_code, str) else "error"
        return exc.status_code, error_body(code, str(exc.detail)), headers
    return 500, error_body("internal_error", "Internal server error; it has been logged."), headers


def api_exception_handler(exc: Exception, context: dict) -> Response:
    # Imported here: rest_framework.views imports the authentication classes,
    # which import this module.
    from rest_framework.views import set_rollback

    status, body, headers = _translate(exc)
    if status == 503 and not isinstance(exc, ApiError):
        logger.warning("Database unreachable: %s", exc)
    elif status >= 500:
        view = context.get("view")
        logger.exception("Unhandled error in %s", type(view).__name__ if view else "API view")
    set_rollback()
    response = Response(body, status=status)
    for name, value in headers.items():
        response[name] = value
    return response
