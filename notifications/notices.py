"""What each notice says: its one-line summary and the calls that fix or recover.

Plain functions of plain data, so that the email, the operational webhook's
JSON and the API's list say the same thing, and can be read (and tested) here.
A "fix" is one API operation a user can run as written: its operationId, method,
path and body.
"""

from __future__ import annotations

from typing import Any

from webhooks.health import Event

API = "/api/v1"


def _call(operation: str, method: str, path: str, body: dict | None = None) -> dict[str, Any]:
    call: dict[str, Any] = {"operation": operation, "method": method, "path": f"{API}{path}"}
    if body is not None:
        call["body"] = body
    return call


def webhook_fixes(event: Event, *, webhook_id: str, since: str | None) -> list[dict[str, Any]]:
    """The calls that help with ``event`` on a webhook, most useful first."""
    logs = _call("listDeliveryLogs", "GET", f"/webhooks/{webhook_id}/logs")
    test = _call("simulateWebhook", "POST", f"/webhooks/{webhook_id}/simulate", {})
    recover = _call(
        "createRecovery",
        "POST",
        f"/webhooks/{webhook_id}/recoveries",
        {"since": since, "statuses": ["failed"]} if since else {"statuses": ["failed"]},
    )
    if event == Event.WEBHOOK_FAILING:
        return [logs, test]
    if event == Event.DELIVERY_GAVE_UP:
        return [logs, test, recover]
    if event == Event.WEBHOOK_DEACTIVATED:
        reactivate = _call("updateWebhook", "PUT", f"/webhooks/{webhook_id}", {"active": True})
        return [logs, reactivate, recover]
    if event == Event.WEBHOOK_RECOVERED:
        return [recover]
    if event == Event.MAIL_SILENT:
        window = _call(
            "updateWebhook", "PUT", f"/webhooks/{webhook_id}", {"expect_mail_every_hours": None}
        )
        return [_call("listMessages", "GET", "/messages"), window]
    return []


def domain_fixes(*, domain_id: str) -> list[dict[str, Any]]:
    return [_call("getDomain", "GET", f"/domains/{domain_id}")]


def webhook_summary(event: Event, *, address: str, facts: dict[str, Any]) -> str:
    """One line: what happened to the webhook of ``address``."""
    failures = facts.get("consecutive_failures") or 0
    if event == Event.WEBHOOK_FAILING:
        return f"Webhook {address} is failing: its last {failures} delivery attempts failed"
    if event == Event.DELIVERY_GAVE_UP:
        return f"A delivery to webhook {address} failed for good after its last retry"
    if event == Event.WEBHOOK_DEACTIVATED:
        return f"Webhook {address} was deactivated: mail to it is now refused"
    if event == Event.WEBHOOK_RECOVERED:
        return f"Webhook {address} recovered: deliveries succeed again"
    if event == Event.MAIL_SILENT:
        hours = facts.get("expect_mail_every_hours")
        return f"No mail reached webhook {address} in the last {hours} hours"
    raise ValueError(f"{event} is not an event of a webhook")


def domain_summary(*, name: str) -> str:
    return f"The DNS records of {name} no longer point at this service"
