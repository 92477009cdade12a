"""Keeps every error under /api/ in the API's JSON shape, and the request limits.

DRF's exception handler covers errors raised inside API views. Errors raised
before a view runs (no URL matched, CSRF failure, an exception in middleware)
would otherwise get Django's HTML pages, and in DEBUG mode a traceback.

The request line and header limits are checked here, below gunicorn's own
(``gunicorn.conf.py``), so that an oversized request gets a JSON 414 or 431
rather than gunicorn's plain page.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, JsonResponse

from conduit.errors import database_unavailable, error_body, service_unavailable

logger = logging.getLogger(__name__)

_GENERIC = {
    400: ("bad_request", "The request could not be understood."),
    401: ("unauthorized", "Authentication credentials were missing or invalid."),
    403: ("forbidden", "You may not do this."),
    404: ("not_found", "Not found: no API operation has this path."),
    405: ("method_not_allowed", "This method is not allowed on this path."),
    413: ("payload_too_large", "The request body is too large."),
    414: ("uri_too_long", "The request line is too long; shorten the URL."),
    431: ("header_too_large", "A request header is too large, or there are too many."),
    500: ("internal_error", "Internal server error; it has been logged."),
}


def _is_api(request: HttpRequest) -> bool:
    return request.path.startswith("/api/")


def _is_json(response: HttpResponse) -> bool:
    return response.get("Content-Type", "").startswith("application/json")


class ApiErrorMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if not _is_api(request) or response.status_code < 400:
            return response
        if _is_json(response) and _has_error_shape(response):
            return response
        code, message = _GENERIC.get(
            response.status_code,
            ("internal_error", "Internal server error; it has been logged.")
            if response.status_code >= 500
            else ("bad_request", "The request could not be served."),
        )
        replacement = JsonResponse(error_body(code, message), status=response.status_code)
        for header in ("Retry-After", "Allow", "WWW-Authenticate"):
            if header in response:
                replacement[header] = response[header]
        return replacement

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not _is_api(request):
            return None
        if database_unavailable(exception):
            logger.warning("Database unreachable at %s: %s", request.path, exception)
            status, body, headers = service_unavailable()
            return JsonResponse(body, status=status, headers=headers)
        logger.exception("Unhandled error at %s", request.path)
        return JsonResponse(
            error_body("internal_error", "Internal server error; it has been logged."), status=500
        )


def _has_error_shape(response: HttpResponse) -> bool:
    if getattr(response, "data", None) is not None:
        data = response.data
    else:
        try:
            data = json.loads(response.content or b"null")
        except (ValueError, AttributeError):
            return False
    return isinstance(data, dict) and "code" in data and "error" in data


# Below gunicorn.conf.py's limits (1 MiB line, 64 KiB field, 200 fields), so
# that these answer first; the values are gunicorn's own defaults.
MAX_REQUEST_LINE = 8190
MAX_HEADER_FIELD = 8190
MAX_HEADER_FIELDS = 100


class RequestLimitsMiddleware:
    """414 for an over-long request line, 431 for an over-large header, under /api/."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if _is_api(request):
            refusal = _over_limits(request)
            if refusal is not None:
                return refusal
        return self.get_response(request)


def _over_limits(request: HttpRequest) -> JsonResponse | None:
    # The request line as the client sent it: method, target, version.
    target = request.META.get("RAW_URI") or request.get_full_path()
    line = len(request.method or "") + len(target) + len(" HTTP/1.1 ")
    if line > MAX_REQUEST_LINE:
        return JsonResponse(
            error_body(
                "uri_too_long",
                f"The request line is {line} bytes; at most {MAX_REQUEST_LINE} are accepted. "
                "Shorten the URL.",
            ),
            status=414,
        )
    headers = [(name, value) for name, value in request.headers.items()]
    if len(headers) > MAX_HEADER_FIELDS:
        return JsonResponse(
            error_body(
                "header_too_large",
                f"The request has {len(headers)} header fields; at most {MAX_HEADER_FIELDS} "
                "are accepted.",
            ),
            status=431,
        )
    for name, value in headers:
        size = len(name) + 2 + len(value)
        if size > MAX_HEADER_FIELD:
            return JsonResponse(
                error_body(
                    "header_too_large",
                    f"The header {name} is {size} bytes; at most {MAX_HEADER_FIELD} are "
                    "accepted per header field.",
                ),
                status=431,
            )
    return None
