"""What the receiving app got, kept in its process and read back by the tests as JSON.

Every inbound message is described from anymail's AnymailInboundMessage, the object a
Django app's signal handler gets; a `raw` delivery from what the standard library's
email package reads in its body.
"""

from __future__ import annotations

import base64
import email
import email.policy
import os
from typing import Any

from anymail.inbound import AnymailInboundMessage
from anymail.signals import AnymailInboundEvent
from anymail.utils import get_request_basic_auth
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.crypto import constant_time_compare

RECEIVED: list[dict[str, Any]] = []


def on_inbound(sender: type, event: AnymailInboundEvent, esp_name: str, **kwargs: Any) -> None:
    """The app's handler of anymail's `inbound` signal."""
    RECEIVED.append(describe(event, esp_name))


def _address(address: Any) -> dict[str, str]:
    return {"name": address.display_name, "address": address.addr_spec}


def _part(part: AnymailInboundMessage) -> dict[str, Any]:
    return {
        "filename": part.get_filename(),
        "content_type": part.get_content_type(),
        "content": base64.b64encode(part.get_content_bytes()).decode("ascii"),
    }


def describe(event: AnymailInboundEvent, esp_name: str) -> dict[str, Any]:
    message = event.message
    sender = message.from_email
    esp_event = event.esp_event
    if isinstance(esp_event, HttpRequest):
        fields = {name: esp_event.POST.getlist(name)[-1] for name in esp_event.POST}
    else:
        fields = {k: v for k, v in esp_event.items() if k != "Attachments"}
    return {
        "esp_name": esp_name,
        "event_id": event.event_id,
        "timestamp": event.timestamp.isoformat() if event.timestamp else None,
        "from": _address(sender) if sender else None,
        "to": [_address(a) for a in message.to],
        "cc": [_address(a) for a in message.cc],
        "subject": message.subject,
        "date": message.date.isoformat() if message.date else None,
        "text": message.text,
        "html": message.html,
        "attachments": [_part(part) for part in message.attachments],
        "inlines": {cid: _part(part) for cid, part in message.content_id_map.items()},
        "envelope_sender": message.envelope_sender,
        "envelope_recipient": message.envelope_recipient,
        "stripped_text": message.stripped_text,
        "spam_detected": message.spam_detected,
        "spam_score": message.spam_score,
        "headers": [[name, str(value)] for name, value in message.items()],
        "fields": fields,
    }


def raw_view(request: HttpRequest) -> HttpResponse:
    """A `raw` receiver: the body is the message; the standard library reads it."""
    if not constant_time_compare(
        get_request_basic_auth(request) or "", os.environ["RECEIVER_BASIC_AUTH"]
    ):
        return HttpResponse(status=401)
    body = request.body
    message = email.message_from_bytes(body, policy=email.policy.default)
    RECEIVED.append(
        {
            "esp_name": "raw",
            "content_type": request.content_type,
            "body": base64.b64encode(body).decode("ascii"),
            "subject": str(message["Subject"]),
            "attachments": [
                {
                    "filename": part.get_filename(),
                    "content": base64.b64encode(part.get_content()).decode("ascii"),
                }
                for part in message.iter_attachments()
            ],
            "headers": {
                name: value
                for name, value in request.headers.items()
                if name.lower().startswith("x-conduit-")
            },
        }
    )
    return HttpResponse("ok")


def received_view(request: HttpRequest) -> JsonResponse:
    return JsonResponse(RECEIVED, safe=False)
