"""The API reference's bodies, transcribed: field names and types of every operation.

Copied by hand from the API reference (its full edition, and the edition that adds
`ping`, `listAuditLog`, `revoke_api_tokens` on changePassword and `name` on
webhooks), so that the test reads
a plain table rather than parsing prose. The reference writes types as sample values;
they are named here as

    "string"     -> S         0        -> INT      true          -> BOOL
    "2026-..."   -> DATETIME  {"k":"v"} -> OBJECT   ["string"]    -> STRINGS

and a string id may be documented as string/uuid. `ANY` is the reference's "any"
(sign-in answers a session or a TOTP challenge).

Each operation maps to (request fields or None, {status: response}), where a
response is a dict of fields, a one-element list holding the fields of an array's
items, None for no body, or ANY.

`DOCUMENTED_EXTRAS` lists what Conduit serves beyond the reference, per component or
operation; the test requires the schema to document exactly reference + extras.
`BEYOND_THE_CONTRACT` names the operations Conduit serves beyond the contract's 38:
they are in the schema with their own operationIds, and leave the 38 as they are.
"""

from __future__ import annotations

S = "string"
INT = "integer"
BOOL = "boolean"
DATETIME = "date-time"
OBJECT = "object"
STRINGS = "array<string>"
ANY = "any"

ERROR = {"code": S, "error": S}

SESSION = {"access_token": S, "expires_in": INT, "refresh_token": S}

ACCOUNT = {
    "created_at": DATETIME,
    "email": S,
    "id": S,
    "timezone": S,
    "updated_at": DATETIME,
}

AUDIT_LOG_ENTRY = {
    "action": S,
    "created_at": DATETIME,
    "id": S,
    "ip": S,
    "metadata": OBJECT,
}

DOMAIN = {
    "account_id": S,
    "created_at": DATETIME,
    "id": S,
    "is_public": BOOL,
    "name": S,
    "updated_at": DATETIME,
    "verification_token": S,
    "verified": BOOL,
}

POLICY = {
    "allowed_dkim_domains": S,
    "allowed_source_ips": S,
    "allowed_spf_domains": S,
    "created_at": DATETIME,
    "id": S,
    "name": S,
    "require_dkim": BOOL,
    "require_smtp_auth": BOOL,
    "require_spf": BOOL,
    "smtp_credentials": S,
    "updated_at": DATETIME,
}

POLICY_REQUEST = {
    "allowed_dkim_domains": S,
    "allowed_source_ips": S,
    "allowed_spf_domains": S,
    "name": S,
    "require_dkim": BOOL,
    "require_smtp_auth": BOOL,
    "require_spf": BOOL,
    "smtp_credentials": S,
}

WEBHOOK = {
    "active": BOOL,
    "address": S,
    "created_at": DATETIME,
    "custom_headers": OBJECT,
    "id": S,
    "name": S,  # seed 000
    "payload_template": S,
    "rate_limit": INT,
    "secret": S,
    "smtp_security_policy_id": S,
    "target_url": S,
    "updated_at": DATETIME,
}

WEBHOOK_CREATE = {
    "active": BOOL,
    "address": S,
    "custom_headers": OBJECT,
    "name": S,  # seed 000
    "payload_template": S,
    "rate_limit": INT,
    "secret": S,
    "smtp_security_policy_id": S,
    "target_url": S,
}

WEBHOOK_UPDATE = {**WEBHOOK_CREATE, "clear_security_policy": BOOL}

DELIVERY_LOG = {
    "attempted_at": DATETIME,
    "duration_ms": INT,
    "error": S,
    "http_status": INT,
    "id": S,
    "sender": S,
    "simulated": BOOL,
    "smtp_message_id": S,
    "webhook_id": S,
}

SIMULATE_RESULT = {"duration_ms": INT, "error": S, "http_status": INT, "simulated": BOOL}

BACKUP_CODES = {"backup_codes": STRINGS}

SETUP_TOTP = {"otpauth_url": S, "qr_code_png": S, "secret": S}

API_TOKEN = {
    "allowed_ips": STRINGS,
    "created_at": DATETIME,
    "expires_at": DATETIME,
    "id": S,
    "last_used_at": DATETIME,
    "name": S,
    "token": S,
}

CODE = {"code": S}

# operationId -> (request fields, {status: response})
BODIES: dict[str, tuple[dict | None, dict[int, object]]] = {
    # --- General (seed 000)
    "ping": (None, {200: {"status": S}}),
    # --- Sessions
    "createSession": ({"email": S, "password": S}, {200: ANY, 401: ERROR}),
    "deleteSession": ({"refresh_token": S}, {204: None, 401: ERROR}),
    "completeTOTPSession": ({"code": S, "totp_token": S}, {200: SESSION, 401: ERROR}),
    "refreshSession": ({"refresh_token": S}, {200: SESSION, 401: ERROR}),
    # --- Accounts
    "createAccount": ({"email": S, "password": S}, {201: ACCOUNT, 409: ERROR, 422: ERROR}),
    "getAccount": (None, {200: ACCOUNT, 401: ERROR}),
    "deleteAccount": ({"confirm": BOOL, "password": S}, {204: None, 401: ERROR, 422: ERROR}),
    "updateTimezone": ({"timezone": S}, {204: None, 401: ERROR, 422: ERROR}),
    "requestPasswordReset": ({"email": S}, {202: None}),
    "changePassword": (
        # revoke_api_tokens: seed 000
        {"current_password": S, "new_password": S, "revoke_api_tokens": BOOL},
        {204: None, 401: ERROR, 422: ERROR},
    ),
    "confirmPasswordReset": (
        {"new_password": S, "token": S},
        {204: None, 401: ERROR, 422: ERROR},
    ),
    "listAuditLog": (None, {200: [AUDIT_LOG_ENTRY], 401: ERROR}),  # seed 000
    # --- Domains
    "listDomains": (None, {200: [DOMAIN], 401: ERROR}),
    "createDomainClaim": (
        {"name": S},
        {201: DOMAIN, 401: ERROR, 409: ERROR, 422: ERROR},
    ),
    "getDomain": (None, {200: DOMAIN, 401: ERROR, 404: ERROR}),
    "deleteDomain": (None, {204: None, 401: ERROR, 404: ERROR}),
    "verifyDomain": (None, {200: DOMAIN, 401: ERROR, 404: ERROR, 422: ERROR}),
    # --- SMTP policies
    "listSmtpSecurityPolicies": (None, {200: [POLICY], 401: ERROR}),
    "createSmtpSecurityPolicy": (POLICY_REQUEST, {201: POLICY, 401: ERROR, 422: ERROR}),
    "getSmtpSecurityPolicy": (None, {200: POLICY, 401: ERROR, 404: ERROR}),
    "updateSmtpSecurityPolicy": (
        POLICY_REQUEST,
        {200: POLICY, 401: ERROR, 404: ERROR, 422: ERROR},
    ),
    "deleteSmtpSecurityPolicy": (None, {204: None, 401: ERROR, 404: ERROR}),
    # --- Webhooks
    "listWebhooks": (None, {200: [WEBHOOK], 401: ERROR}),
    "createWebhook": (WEBHOOK_CREATE, {201: WEBHOOK, 401: ERROR, 409: ERROR, 422: ERROR}),
    "getWebhook": (None, {200: WEBHOOK, 401: ERROR, 404: ERROR}),
    "updateWebhook": (
        WEBHOOK_UPDATE,
        {200: WEBHOOK, 401: ERROR, 404: ERROR, 409: ERROR, 422: ERROR},
    ),
    "deleteWebhook": (None, {204: None, 401: ERROR, 404: ERROR}),
    "listDeliveryLogs": (None, {200: [DELIVERY_LOG], 401: ERROR, 404: ERROR}),
    "getDeliveryLog": (None, {200: DELIVERY_LOG, 401: ERROR, 404: ERROR}),
    "simulateWebhook": (
        {"from": S, "subject": S, "text": S},
        {200: SIMULATE_RESULT, 401: ERROR, 404: ERROR},
    ),
    # --- 2FA
    "disableTOTP": (CODE, {204: None, 401: ERROR, 422: ERROR}),
    "regenerateBackupCodes": (CODE, {200: BACKUP_CODES, 401: ERROR, 422: ERROR}),
    "enableTOTP": (CODE, {200: BACKUP_CODES, 401: ERROR, 409: ERROR, 422: ERROR}),
    "setupTOTP": (None, {200: SETUP_TOTP, 401: ERROR}),
    # --- API tokens
    "listAPITokens": (None, {200: [API_TOKEN], 401: ERROR}),
    "createAPIToken": (
        {"allowed_ips": STRINGS, "expires_in": INT, "name": S},
        {201: API_TOKEN, 401: ERROR, 422: ERROR},
    ),
    "deleteAPIToken": (None, {204: None, 401: ERROR, 404: ERROR}),
}

# Path and query parameters of the reference (names and types).
PARAMETERS: dict[str, dict[str, str]] = {
    "getDomain": {"id": S},
    "deleteDomain": {"id": S},
    "verifyDomain": {"id": S},
    "getSmtpSecurityPolicy": {"id": S},
    "updateSmtpSecurityPolicy": {"id": S},
    "deleteSmtpSecurityPolicy": {"id": S},
    "getWebhook": {"id": S},
    "updateWebhook": {"id": S},
    "deleteWebhook": {"id": S},
    "listDeliveryLogs": {"id": S, "page": INT, "page_size": INT},
    "getDeliveryLog": {"id": S, "logId": S},
    "simulateWebhook": {"id": S},
    "deleteAPIToken": {"id": S},
}

_RAW_AND_LINKS = {
    "raw_retention_days": INT,
    "delete_raw_when_delivered": BOOL,
    "attachment_link_threshold": INT,
    # The body's shape (README, "Payload formats") and the Mailgun format's signing key.
    "payload_format": S,
    "mailgun_signing_key": S,
}
# A webhook's silence window ("expect mail every N hours") and its failure
# accounting, for the notifications (issue: know when something is wrong).
_SILENCE = {"expect_mail_every_hours": INT}
_FAILURES = {"failing_since": DATETIME, "consecutive_failures": INT}

# What Conduit documents beyond the reference, and why.
DOCUMENTED_EXTRAS: dict[str, dict[str, str]] = {
    # Validation errors (422) say what is wrong per field (CONTRACT.md, API conventions).
    "Error": {"details": OBJECT},
    # The audit log is paged like the delivery logs (CONTRACT.md: paged lists).
    "listAuditLog:parameters": {"page": INT, "page_size": INT},
    # A paused webhook accepts mail and holds its deliveries (pauseWebhook); raw
    # message retention and attachments delivered as links are chosen per webhook.
    "WebhookResponse": {
        "paused": BOOL,
        "paused_at": DATETIME,
        **_RAW_AND_LINKS,
        **_SILENCE,
        **_FAILURES,
    },
    "CreateWebhookRequest": {**_RAW_AND_LINKS, **_SILENCE},
    "UpdateWebhookRequest": {**_RAW_AND_LINKS, **_SILENCE},
    # Which payload format each attempt was sent in.
    "DeliveryLogResponse": {"payload_format": S},
    # DMARC as an SMTP policy requirement (docs/payload.md, "What the envelope and the
    # headers prove").
    "SmtpSecurityPolicyResponse": {"require_dmarc": BOOL},
    "CreateSmtpSecurityPolicyRequest": {"require_dmarc": BOOL},
    "UpdateSmtpSecurityPolicyRequest": {"require_dmarc": BOOL},
}

BEYOND_THE_CONTRACT = {
    "pauseWebhook",
    "resumeWebhook",
    "downloadAttachment",
    "listMessages",
    "getMessage",
    "deleteMessage",
    "downloadMessageRaw",
    "redeliverMessage",
    "createRecovery",
    "listRecoveries",
    "getRecovery",
    "cancelRecovery",
    "getNotificationSettings",
    "updateNotificationSettings",
    "listNotifications",
}

# The reference's "any" for sign-in: the two shapes it may take (CONTRACT.md, 2FA).
SIGN_IN_SHAPES = [SESSION, {"totp_required": BOOL, "totp_token": S}]
