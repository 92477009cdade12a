"""Keeps every error under /api/ in the API's JSON shape.

DRF's exception handler covers errors raised inside API views. Errors raised
before a view runs (no URL matched, CSRF failure, an exception in middleware)
would otherwise get Django's HTML pages, and in DEBUG mode a traceback.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, JsonResponse

from conduit.errors import error_body

logger = logging.getLogger(__name__)

_GENERIC = {
    400: ("bad_request", "The request could not be understood."),
    401: ("unauthorized", "Authentication credentials were missing or invalid."),
    403: ("forbidden", "You may not do this."),
    404: ("not_found", "Not found: no API operation has this path."),
    405: ("method_not_allowed", "This method is not allowed on this path."),
    413: ("payload_too_large", "The request body is too large."),
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
