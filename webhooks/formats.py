"""The body of a delivery in each payload format, one builder per format (docs/payload.md).

A webhook's ``payload_format`` chooses what its target receives:

* ``conduit``: the default JSON payload (webhooks/payload.py), or the webhook's template;
* ``raw``: the original message, byte for byte, as ``message/rfc822``, with the envelope
  and the authentication results in ``X-Conduit-*`` headers;
* ``multipart``: ``multipart/form-data``, the payload's fields as form fields and the
  attachments as file parts;
* ``postmark``, ``mailgun``, ``sendgrid``: the inbound webhook POSTs of those services, field
  for field as their receivers (django-anymail's inbound views, for one) read them.

Every builder reads the same parsed message (``Source.payload``, built once) or, for
``raw``, the original bytes; none of them imports Django, except the template render of
``conduit``. Signing is the caller's: the Standard Webhooks headers go with every format,
Mailgun's own signature is part of its body.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import mimetypes
import secrets
import time
import uuid
from base64 import b64decode
from collections.abc import Callable
from dataclasses import dataclass, field

from urllib3.fields import RequestField
from urllib3.filepost import encode_multipart_formdata

from webhooks.mail.charsets import decode_mixed
from webhooks.mail.headers import header_block_end
from webhooks.payload import AttachmentLinks, AuthResults, Envelope, build_payload
from webhooks.templating import JSON_CONTENT_TYPE, render_payload

FORMATS = ("conduit", "raw", "multipart", "postmark", "mailgun", "sendgrid")
"""The known payload formats, the default first."""

RAW_CONTENT_TYPE = "message/rfc822"
# The headers of a `raw` delivery (README, "Payload formats").
MAIL_FROM_HEADER = "X-Conduit-Mail-From"
RCPT_TO_HEADER = "X-Conduit-Rcpt-To"
CLIENT_IP_HEADER = "X-Conduit-Client-Ip"
HELO_HEADER = "X-Conduit-Helo"
AUTHENTICATION_RESULTS_HEADER = "X-Conduit-Authentication-Results"
SIMULATED_HEADER = "X-Conduit-Simulated"

# Header fields Postmark gives as fields of their own, not in its Headers list
# (a receiver building the message from both would get them twice).
_POSTMARK_OWN_FIELDS = frozenset(
    {
        "from",
        "to",
        "cc",
        "bcc",
        "subject",
        "date",
        "reply-to",
        "content-type",
        "content-transfer-encoding",
        "return-path",
    }
)


class FormatProblem(ValueError):
    """The webhook lacks what its format needs; the message says what to set."""


@dataclass(frozen=True)
class Source:
    """One delivery's message: the original bytes and what the SMTP session knew.
    ``payload`` is the parsed message (the default payload), built on first use."""

    raw: bytes
    envelope: Envelope
    auth: AuthResults
    simulated: bool = False
    # Large attachments as links: the conduit format only (the others carry files).
    links: AttachmentLinks | None = None

    @functools.cached_property
    def payload(self) -> dict:
        return build_payload(
            self.raw,
            envelope=self.envelope,
            auth=self.auth,
            simulated=self.simulated,
            links=self.links,
        )


@dataclass(frozen=True)
class Options:
    """What a delivery adds to its format: the webhook's template (conduit) and Mailgun
    signing key, the name receivers see as the verifier of the authentication results,
    and the delivery's id (Postmark's MessageID), the same on every retry."""

    template: str = ""
    mailgun_signing_key: str | None = None
    authserv_id: str = "conduit"
    event_id: str = ""


@dataclass(frozen=True)
class Rendered:
    """A body ready to sign and POST, with the headers its format adds."""

    body: bytes
    content_type: str
    headers: dict[str, str | bytes] = field(default_factory=dict)


def render(payload_format: str, source: Source, options: Options) -> Rendered:
    """The body of ``source`` in ``payload_format`` (one of FORMATS). A failing template
    raises webhooks.templating.TemplateRenderProblem, a webhook missing what its format
    needs FormatProblem."""
    return _BUILDERS[payload_format](source, options)


# --- conduit -----------------------------------------------------------------------


def conduit(source: Source, options: Options) -> Rendered:
    """The default JSON payload, or what the webhook's template renders it to."""
    body, content_type = render_payload(template=options.template or None, payload=source.payload)
    return Rendered(body, content_type)


# --- raw ---------------------------------------------------------------------------


def raw(source: Source, options: Options) -> Rendered:
    """The original message as received (not a byte changed), the envelope and the
    verdicts in headers: what SendGrid's and CloudMailin's raw modes and ActionMailbox's
    relay ingress take."""
    envelope = source.envelope
    headers: dict[str, str | bytes] = {
        MAIL_FROM_HEADER: _header_value(envelope.mail_from),
        RCPT_TO_HEADER: _header_value(", ".join(envelope.rcpt_to)),
        AUTHENTICATION_RESULTS_HEADER: _header_value(
            authentication_results(source, authserv_id=options.authserv_id)
        ),
        SIMULATED_HEADER: "true" if source.simulated else "false",
    }
    if envelope.client_ip:
        headers[CLIENT_IP_HEADER] = envelope.client_ip
    if envelope.helo:
        headers[HELO_HEADER] = _header_value(envelope.helo)
    return Rendered(bytes(source.raw), RAW_CONTENT_TYPE, headers)


def authentication_results(source: Source, *, authserv_id: str) -> str:
    """The verdicts as an RFC 8601 Authentication-Results value (``<id>; none`` when
    nothing was checked)."""
    auth, envelope = source.auth, source.envelope
    results = []
    if auth.spf:
        if envelope.mail_from:
            results.append(f"spf={auth.spf} smtp.mailfrom={envelope.mail_from}")
        else:
            results.append(f"spf={auth.spf} smtp.helo={envelope.helo or ''}")
    results.extend(f"dkim=pass header.d={domain}" for domain in auth.dkim)
    if auth.dmarc:
        policy = f" (p={auth.dmarc['policy']})" if auth.dmarc.get("policy") else ""
        results.append(
            f"dmarc={auth.dmarc.get('result')}{policy} header.from={auth.dmarc.get('domain') or ''}"
        )
    if auth.arc:
        results.append(f"arc={auth.arc}")
    if auth.smtp_auth_user:
        results.append(f"auth=pass smtp.auth={auth.smtp_auth_user}")
    return f"{authserv_id}; " + ("; ".join(results) if results else "none")


def _header_value(value: str) -> str | bytes:
    """An HTTP header value: Latin-1 text goes as is, anything else as UTF-8 bytes
    (an SMTPUTF8 address), which is what a receiver decoding UTF-8 reads back."""
    value = value.replace("\r", " ").replace("\n", " ")
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode("utf-8")
    return value


# --- multipart ---------------------------------------------------------------------


def multipart(source: Source, options: Options) -> Rendered:
    """``multipart/form-data``: each key of the default payload a form field (text as
    is, true/false, numbers, "" for null, objects and lists as JSON), each attachment a
    file part ``attachment-<n>``; ``attachments`` lists their entries (without content),
    each naming its part in ``field``."""
    payload = source.payload
    fields: list[RequestField] = []
    files: list[RequestField] = []
    entries = []
    for index, (entry, data) in enumerate(_attachments(payload), start=1):
        name = f"attachment-{index}"
        entries.append({**_without_content(entry), "field": name})
        files.append(_file_field(name, _filename(entry, index), data, entry["content_type"]))
    for key, value in payload.items():
        if key == "attachments":
            value = entries
        fields.append(_text_field(key, _form_value(value)))
    fields.append(_text_field("attachment-count", str(len(files))))
    return _form(fields + files)


def _form_value(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    return json.dumps(value, ensure_ascii=False)


_CONTENT_KEYS = frozenset({"content", "content_url", "content_url_expires_at"})


def _without_content(entry: dict) -> dict:
    return {
        k: v
        for k, v in entry.items()
        if k not in ("content", "content_url", "content_url_expires_at")
    }


# --- postmark ----------------------------------------------------------------------


def postmark(source: Source, options: Options) -> Rendered:
    """Postmark's inbound webhook JSON (without "Include raw email content")."""
    payload = source.payload
    envelope = source.envelope
    sender = payload["from"] or {"address": "", "name": ""}
    recipient = envelope.rcpt_to[0] if envelope.rcpt_to else ""
    headers = [{"Name": "Return-Path", "Value": f"<{envelope.mail_from}>"}]
    headers += [
        {"Name": h["name"], "Value": h["value"]}
        for h in payload["headers"]
        if h["name"].lower() not in _POSTMARK_OWN_FIELDS
    ]
    if source.auth.spf:
        headers.append({"Name": "Received-SPF", "Value": _received_spf(source, recipient)})
    headers.append(
        {
            "Name": "Authentication-Results",
            "Value": authentication_results(source, authserv_id=options.authserv_id),
        }
    )
    # As Postmark does: the envelope recipients the headers do not name were Bcc'd.
    named = {a["address"].lower() for a in payload["to"] + payload["cc"]}
    bcc = [{"address": r, "name": ""} for r in envelope.rcpt_to if r.lower() not in named]
    attachments = []
    for index, (entry, data) in enumerate(_attachments(payload), start=1):
        item = {
            "Name": _filename(entry, index),
            "Content": entry["content"],
            "ContentType": entry["content_type"],
            "ContentLength": len(data),
        }
        if _is_inline(entry):
            item["ContentID"] = entry["content_id"]
        attachments.append(item)
    body = {
        "FromName": sender["name"],
        "MessageStream": "inbound",
        "From": sender["address"],
        "FromFull": _postmark_address(sender),
        "To": _address_list(payload["to"]),
        "ToFull": [_postmark_address(a) for a in payload["to"]],
        "Cc": _address_list(payload["cc"]),
        "CcFull": [_postmark_address(a) for a in payload["cc"]],
        "Bcc": _address_list(bcc),
        "BccFull": [_postmark_address(a) for a in bcc],
        "OriginalRecipient": recipient,
        "Subject": payload["subject"],
        "MessageID": str(uuid.uuid5(uuid.NAMESPACE_URL, options.event_id)),
        "ReplyTo": _address_list(payload["reply_to"]),
        "MailboxHash": _mailbox_hash(recipient),
        "Date": _first_header(payload, "date") or "",
        "TextBody": payload["text"],
        "HtmlBody": payload["html"] or "",
        "StrippedTextReply": payload["stripped_text"],
        "Tag": "",
        "Headers": headers,
        "Attachments": attachments,
    }
    return Rendered(json.dumps(body, ensure_ascii=False).encode("utf-8"), JSON_CONTENT_TYPE)


def _postmark_address(address: dict) -> dict:
    return {
        "Email": address["address"],
        "Name": address["name"],
        "MailboxHash": _mailbox_hash(address["address"]),
    }


def _mailbox_hash(address: str) -> str:
    local = address.rpartition("@")[0]
    return local.partition("+")[2]


def _received_spf(source: Source, recipient: str) -> str:
    envelope = source.envelope
    return (
        f"{(source.auth.spf or '').capitalize()} identity=mailfrom; "
        f"client-ip={envelope.client_ip or ''}; helo={envelope.helo or ''}; "
        f"envelope-from={envelope.mail_from}; receiver={recipient}"
    )


# --- mailgun -----------------------------------------------------------------------


def generate_mailgun_signing_key() -> str:
    """A new HTTP webhook signing key (hex, 256 bits)."""
    return secrets.token_hex(32)


def mailgun_signature(*, signing_key: str, timestamp: str, token: str) -> str:
    """Mailgun's signature: hex HMAC-SHA256 of timestamp + token with the signing key."""
    message = f"{timestamp}{token}".encode("ascii")
    return hmac.new(signing_key.encode("utf-8"), message, hashlib.sha256).hexdigest()


def mailgun(source: Source, options: Options) -> Rendered:
    """Mailgun's forward() route POST ("fully parsed"), signed with the webhook's key."""
    if not options.mailgun_signing_key:
        raise FormatProblem(
            "The mailgun format signs with the webhook's mailgun_signing_key and it has none; "
            "set one (updateWebhook)."
        )
    payload = source.payload
    envelope = source.envelope
    timestamp = str(int(time.time()))
    token = secrets.token_hex(25)
    fields = [
        _text_field("recipient", ", ".join(envelope.rcpt_to)),
        _text_field("sender", envelope.mail_from),
        _text_field("from", _address_list([payload["from"]] if payload["from"] else [])),
        _text_field("subject", payload["subject"]),
        _text_field("body-plain", payload["text"]),
        _text_field("stripped-text", payload["stripped_text"]),
        _text_field("stripped-signature", payload["stripped_signature"] or ""),
    ]
    if payload["html"] is not None:
        fields.append(_text_field("body-html", payload["html"]))
        fields.append(_text_field("stripped-html", payload["html"]))
    headers = [[h["name"], h["value"]] for h in payload["headers"]]
    headers += _mailgun_verdicts(source)
    fields.append(_text_field("message-headers", json.dumps(headers, ensure_ascii=False)))
    files = []
    content_ids = {}
    for index, (entry, data) in enumerate(_attachments(payload), start=1):
        name = f"attachment-{index}"
        if _is_inline(entry):
            content_ids[f"<{entry['content_id']}>"] = name
        files.append(_file_field(name, _filename(entry, index), data, entry["content_type"]))
    fields.append(_text_field("attachment-count", str(len(files))))
    fields.append(_text_field("content-id-map", json.dumps(content_ids, ensure_ascii=False)))
    # Last, as Mailgun does: a receiver reads the last value of each.
    signature = mailgun_signature(
        signing_key=options.mailgun_signing_key, timestamp=timestamp, token=token
    )
    fields += [
        _text_field("timestamp", timestamp),
        _text_field("token", token),
        _text_field("signature", signature),
    ]
    return _form(fields + files)


def _mailgun_verdicts(source: Source) -> list[list[str]]:
    """Mailgun's own verdict headers, for the checks that were made."""
    verdicts = []
    if source.auth.spf:
        verdicts.append(["X-Mailgun-Spf", source.auth.spf.capitalize()])
    if source.auth.dkim:
        verdicts.append(["X-Mailgun-Dkim-Check-Result", "Pass"])
    verdicts.append(["X-Mailgun-Incoming", "Yes"])
    return verdicts


# --- sendgrid ----------------------------------------------------------------------


def sendgrid(source: Source, options: Options) -> Rendered:
    """SendGrid's Inbound Parse POST (the default, parsed fields; not "Send Raw")."""
    payload = source.payload
    envelope = source.envelope
    fields = [
        _text_field("headers", _raw_header_block(source.raw)),
        _text_field("dkim", _sendgrid_dkim(source.auth)),
    ]
    files = []
    info = {}
    content_ids = {}
    for index, (entry, data) in enumerate(_attachments(payload), start=1):
        name = f"attachment{index}"
        filename = _filename(entry, index)
        info[name] = {"filename": filename, "name": filename, "type": entry["content_type"]}
        if _is_inline(entry):
            info[name]["content-id"] = entry["content_id"]
            content_ids[entry["content_id"]] = name
        files.append(_file_field(name, filename, data, entry["content_type"]))
    if content_ids:
        fields.append(_text_field("content-ids", json.dumps(content_ids, ensure_ascii=False)))
    fields += [
        _text_field("to", _address_list(payload["to"])),
        _text_field("from", _address_list([payload["from"]] if payload["from"] else [])),
    ]
    if payload["cc"]:
        fields.append(_text_field("cc", _address_list(payload["cc"])))
    fields.append(_text_field("text", payload["text"]))
    if payload["html"] is not None:
        fields.append(_text_field("html", payload["html"]))
    fields += [
        _text_field("sender_ip", envelope.client_ip or ""),
        _text_field(
            "envelope",
            json.dumps({"to": list(envelope.rcpt_to), "from": envelope.mail_from}),
        ),
        _text_field("attachments", str(len(files))),
        _text_field("subject", payload["subject"]),
    ]
    if info:
        fields.append(_text_field("attachment-info", json.dumps(info, ensure_ascii=False)))
    charsets = {
        "to": "UTF-8",
        "html": "UTF-8",
        "subject": "UTF-8",
        "from": "UTF-8",
        "text": "UTF-8",
    }
    fields.append(_text_field("charsets", json.dumps(charsets)))
    if source.auth.spf:
        fields.append(_text_field("SPF", source.auth.spf))
    return _form(fields + files)


def _sendgrid_dkim(auth: AuthResults) -> str:
    # SendGrid's own not-quite-JSON: "{@example.org : pass}".
    if not auth.dkim:
        return "none"
    return "{" + ", ".join(f"@{domain} : pass" for domain in auth.dkim) + "}"


def _raw_header_block(raw: bytes) -> str:
    """The message's header block as sent (folded lines and encoded words kept)."""
    return decode_mixed(bytes(raw[: header_block_end(bytes(raw))])).rstrip("\r\n") + "\n"


# --- shared ------------------------------------------------------------------------


def _attachments(payload: dict) -> list[tuple[dict, bytes]]:
    """Each attachment entry with its decoded bytes."""
    return [(entry, b64decode(entry["content"] or "")) for entry in payload["attachments"]]


def _is_inline(entry: dict) -> bool:
    return bool(entry["content_id"]) and entry["disposition"] == "inline"


def _filename(entry: dict, index: int) -> str:
    """The attachment's name; one made up when it has none (receivers drop file parts
    without a name)."""
    if entry["filename"]:
        return entry["filename"]
    content_type = entry["content_type"]
    extension = (
        ".eml" if content_type == "message/rfc822" else mimetypes.guess_extension(content_type)
    )
    return f"attachment-{index}{extension}"


def _address_list(items: list[dict]) -> str:
    return ", ".join(_address(item) for item in items)


def _address(item: dict) -> str:
    """``"Name" <address>``, the name quoted where it needs it, in UTF-8 (decoded)."""
    name, address = item["name"], item["address"]
    if not name:
        return address
    if any(ch in name for ch in '()<>[]:;@\\,."'):
        name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{name} <{address}>"


def _first_header(payload: dict, name: str) -> str | None:
    for header in payload["headers"]:
        if header["name"].lower() == name:
            return header["value"]
    return None


def _text_field(name: str, value: str) -> RequestField:
    part = RequestField(name=name, data=value.encode("utf-8"))
    part.make_multipart()
    return part


def _file_field(name: str, filename: str, data: bytes, content_type: str) -> RequestField:
    part = RequestField(name=name, data=data, filename=filename)
    part.make_multipart(content_type=content_type)
    return part


def _form(parts: list[RequestField]) -> Rendered:
    body, content_type = encode_multipart_formdata(parts)
    return Rendered(body, content_type)


_BUILDERS: dict[str, Callable[[Source, Options], Rendered]] = {
    "conduit": conduit,
    "raw": raw,
    "multipart": multipart,
    "postmark": postmark,
    "mailgun": mailgun,
    "sendgrid": sendgrid,
}
