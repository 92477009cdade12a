"""How the processes log: plain lines (default) or one JSON object per line, and errors
to Sentry when SENTRY_DSN is set.

``CONDUIT_LOG_FORMAT=json`` makes every line an object with ``time`` (UTC, ISO
8601), ``level``, ``logger`` and ``message``, the traceback as ``exception``, and
``message_id``, ``delivery_id`` and ``webhook_id`` when the code that logged
passed them (``extra=log_ids(...)``), so a log store can find every line
about one message or webhook. The worker logs through Celery's handlers,
which get the same formatter (conduit.celery).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from django.core.exceptions import ImproperlyConfigured

# The ids a log line may carry, as extra= of the logging call.
ID_FIELDS = ("message_id", "delivery_id", "webhook_id")


def log_ids(**ids: Any) -> dict[str, str]:
    """``extra=`` for a logging call: the ids given, as text, the None ones left out."""
    return {name: str(value) for name, value in ids.items() if value is not None}


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in ID_FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                entry[name] = str(value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def use_json(logger: logging.Logger) -> None:
    """Give every handler of ``logger`` the JSON formatter (Celery's own handlers)."""
    for handler in logger.handlers:
        handler.setFormatter(JsonFormatter())


def init_sentry(dsn: str) -> None:
    """Errors (logged at ERROR, or raised in a request or a task) to Sentry.

    The SDK is an optional extra: SENTRY_DSN without it stops the start, saying
    how to install it, rather than dropping the errors it was set to report.
    """
    try:
        import sentry_sdk
        from sentry_sdk.integrations.celery import CeleryIntegration
        from sentry_sdk.integrations.django import DjangoIntegration
    except ImportError as exc:
        raise ImproperlyConfigured(
            f"SENTRY_DSN is set but the Sentry SDK cannot be imported ({exc}): install it "
            "with pip install 'conduit[sentry]' (or sentry-sdk), or unset SENTRY_DSN."
        ) from None
    sentry_sdk.init(
        dsn=dsn,
        integrations=[DjangoIntegration(), CeleryIntegration()],
        # No request bodies, addresses or user details: mail content stays here.
        send_default_pii=False,
    )
