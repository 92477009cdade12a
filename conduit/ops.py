"""The web process's operator endpoints, and the API's request metrics.

``OpsMiddleware`` comes first in MIDDLEWARE, so that these paths answer before
anything else runs: no session, CSRF, host check, authentication or
throttling, and a probe costs nothing but the probe.

- ``/healthz``: liveness, no dependencies (200 while gunicorn serves).
- ``/readyz``: the database and the broker answer (503 naming the one that does not).
- ``/metrics``: Prometheus text for every gunicorn worker (conduit.metrics), and
  the delivery queue's gauges read from the database. With
  ``CONDUIT_METRICS_TOKEN`` set it needs ``Authorization: Bearer <token>``; without
  it, it answers loopback clients only. Anything else: 401 ``metrics_token_required``.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import time
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone

from conduit import health, metrics
from conduit.celery import app as celery_app
from conduit.errors import error_body
from conduit.net import client_ip
from webhooks.selectors import DeliveryBacklog, delivery_backlog

logger = logging.getLogger(__name__)

# Methods counted by name; anything else is "other", so a client cannot grow the label set.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _read_backlog() -> DeliveryBacklog:
    return delivery_backlog(now=timezone.now())


class GuardedCollector(metrics.DeliveryQueueCollector):
    """The queue's gauges, left out of the scrape (and logged) while the database is down:
    the counters still answer, and /readyz tells why."""

    def collect(self) -> list[Any]:
        try:
            return list(super().collect())
        except Exception as exc:
            logger.warning("Delivery queue gauges left out of the scrape: %s", exc)
            return []


def metrics_refusal(request: HttpRequest) -> JsonResponse | None:
    """None if this request may read /metrics; else the 401 that says how it may."""
    token = settings.CONDUIT_METRICS_TOKEN
    if token:
        given = request.headers.get("Authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(value.strip(), token):
            return None
        message = (
            "Scraping /metrics needs the header Authorization: Bearer <CONDUIT_METRICS_TOKEN>; "
            "the token was missing or wrong."
        )
    else:
        if _is_loopback(client_ip(request)):
            return None
        message = (
            "/metrics answers only on this machine (loopback) while CONDUIT_METRICS_TOKEN is "
            "unset: scrape it from here, or set CONDUIT_METRICS_TOKEN and send "
            "Authorization: Bearer <token>."
        )
    response = JsonResponse(error_body("metrics_token_required", message), status=401)
    response["WWW-Authenticate"] = 'Bearer realm="metrics"'
    return response


def _is_loopback(address: str | None) -> bool:
    try:
        return address is not None and ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def _method_not_allowed() -> JsonResponse:
    response = JsonResponse(
        error_body("method_not_allowed", "Only GET and HEAD are allowed on this path."),
        status=405,
    )
    response["Allow"] = "GET, HEAD"
    return response


class OpsMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.scrape = metrics.registry(extra=[GuardedCollector(_read_backlog)])

    def __call__(self, request: HttpRequest) -> HttpResponse:
        path = request.path_info
        if path in ("/healthz", "/readyz", "/metrics"):
            if request.method not in ("GET", "HEAD"):
                return _method_not_allowed()
            if path == "/healthz":
                return JsonResponse(health.LIVE)
            if path == "/readyz":
                status, body = health.readiness(
                    [health.check_database(), health.check_broker(celery_app)]
                )
                response = JsonResponse(body, status=status)
                # Django would log a 503 as an error (and Sentry report it) on every probe.
                response._has_been_logged = True  # type: ignore[attr-defined]
                return response
            refusal = metrics_refusal(request)
            if refusal is not None:
                return refusal
            return HttpResponse(metrics.exposition(self.scrape), content_type=metrics.CONTENT_TYPE)
        if not path.startswith("/api/"):
            return self.get_response(request)
        started = time.perf_counter()
        response = self.get_response(request)
        method = request.method if request.method in _METHODS else "other"
        metrics.api_request_answered(
            method=method, status=response.status_code, seconds=time.perf_counter() - started
        )
        return response
