"""Fixtures for the conformance tests: the live server, settings that keep the
throttles and the SSRF guard out of the way, and one account with something of
everything (a verified domain, a policy, a webhook with a delivery log, API tokens).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from functools import cached_property
from pathlib import Path

import pyotp
import pytest
from django.utils import timezone
from hypothesis.configuration import set_hypothesis_home_dir
from rest_framework.throttling import SimpleRateThrottle

from accounts import services as account_services
from accounts import twofactor
from accounts.models import Account, AuditLogEntry, PasswordResetToken
from accounts.tokens import RESET_PREFIX, new_token
from domains.models import Domain
from policies import services as policy_services
from tests.delivery_fixtures import RAW, make_webhook
from tests.factories import PASSWORD, AccountFactory
from webhooks import accept as webhook_accept
from webhooks import attachments
from webhooks import services as webhook_services
from webhooks.models import DeliveryLog, Webhook

OPENAPI_JSON = Path(__file__).resolve().parents[2] / "openapi.json"


def load_openapi() -> dict:
    return json.loads(OPENAPI_JSON.read_text())


@pytest.fixture(scope="session", autouse=True)
def _hypothesis_files_in_tmp(tmp_path_factory) -> Iterator[None]:
    """Hypothesis keeps caches (e.g. constants it extracted) in ./.hypothesis: keep them
    in a temporary folder instead, so that a run leaves nothing in the work tree."""
    set_hypothesis_home_dir(tmp_path_factory.mktemp("hypothesis"))
    yield
    set_hypothesis_home_dir(None)


@pytest.fixture(scope="session", autouse=True)
def _database_before_live_server(django_db_setup: None) -> None:
    """Set the test database up before the (session-wide) live server starts, so that
    the server and its connections are gone before the database is dropped."""


@pytest.fixture
def conformance_settings(settings, monkeypatch, dns_server):
    """Throttles out of reach, local webhook targets allowed, DNS on the local server.

    429 applies to every operation and is not in the contract's status lists, so the
    limits are raised rather than the answers excused.
    """
    settings.CONDUIT_SIGNIN_MAX_FAILURES_PER_ACCOUNT = 1_000_000
    settings.CONDUIT_SIGNIN_MAX_FAILURES_PER_IP = 1_000_000
    # DRF's throttles read their rates once, at import: patch the class attribute.
    monkeypatch.setattr(
        SimpleRateThrottle,
        "THROTTLE_RATES",
        {
            **SimpleRateThrottle.THROTTLE_RATES,
            "signup": "100000/hour",
            "password_reset": "100000/hour",
        },
    )
    settings.CONDUIT_ALLOW_PRIVATE_TARGETS = True
    settings.CONDUIT_ALLOW_HTTP_TARGETS = True
    settings.CONDUIT_DELIVERY_TIMEOUT = 2.0
    settings.CONDUIT_DELIVERY_CONNECT_TIMEOUT = 1.0
    # Never the machine's resolver: domain verification asks the loopback DNS server.
    settings.CONDUIT_DNS_SERVERS = dns_server.address
    settings.CONDUIT_DNS_TIMEOUT = 0.5
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    return settings


@dataclass
class World:
    """Alice's account with one of everything, and the token she signs in with."""

    account: Account
    password: str
    token: str
    domain: Domain
    webhook: Webhook
    log: DeliveryLog
    spare_token_id: str
    policy_id: str
    refresh_token: str
    target_url: str
    attachment_token: str
    message_id: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def path_ids(self, path: str) -> dict[str, str]:
        """Real ids for an operation's path, so that generated requests reach real objects."""
        if path.startswith("/api/v1/domains/"):
            return {"id": str(self.domain.id)}
        if path.startswith("/api/v1/smtp-policies/"):
            return {"id": self.policy_id}
        if path.startswith("/api/v1/accounts/me/api-tokens/"):
            # Never the token the requests are signed with.
            return {"id": self.spare_token_id}
        if path.startswith("/api/v1/messages/"):
            return {"id": self.message_id}
        if path.startswith("/api/v1/webhooks/"):
            ids = {"id": str(self.webhook.id)}
            if "{logId}" in path:
                ids["logId"] = str(self.log.id)
            if "{recoveryId}" in path:
                ids["recoveryId"] = str(self.running_recovery.id)
            return ids
        if path.startswith("/api/v1/attachments/"):
            return {"token": self.attachment_token}
        return {}

    @cached_property
    def running_recovery(self):
        """The webhook's running recovery, started on first use (createRecovery
        must find none running)."""
        job, _ = webhook_services.recovery_create(
            webhook=self.webhook,
            since=timezone.now() - timedelta(hours=1),
            until=None,
            statuses=["failed"],
            ip=None,
        )
        return job

    def _enable_totp(self) -> list[str]:
        """Turn 2FA on for the account; the backup codes it returns."""
        setup = twofactor.totp_setup(account=self.account)
        code = pyotp.TOTP(setup.secret).now()
        return twofactor.totp_enable(account=self.account, code=code, ip=None)

    def valid_body(self, operation_id: str) -> dict | None:
        """The body of a request that must succeed, after preparing what it needs (2FA
        on, a reset token); so that every success answer is checked too."""
        if operation_id in ("disableTOTP", "regenerateBackupCodes"):
            return {"code": self._enable_totp()[0]}
        if operation_id == "enableTOTP":
            setup = twofactor.totp_setup(account=self.account)
            return {"code": pyotp.TOTP(setup.secret).now()}
        if operation_id == "completeTOTPSession":
            backup_code = self._enable_totp()[0]
            challenge = twofactor.totp_challenge_create(account=self.account, ip=None)
            return {"totp_token": challenge.totp_token, "code": backup_code}
        if operation_id == "confirmPasswordReset":
            token, token_hash = new_token(RESET_PREFIX)
            PasswordResetToken.objects.create(
                account=self.account,
                token_hash=token_hash,
                expires_at=timezone.now() + timedelta(hours=1),
            )
            return {"token": token, "new_password": "reset-pass-90210"}
        bodies = {
            "createSession": {"email": self.account.email, "password": self.password},
            "refreshSession": {"refresh_token": self.refresh_token},
            "deleteSession": {"refresh_token": self.refresh_token},
            "createAccount": {"email": "new@conformance.example", "password": "fresh-pass-7781"},
            "changePassword": {
                "current_password": self.password,
                "new_password": "another-pass-8812",
                "revoke_api_tokens": False,
            },
            "updateTimezone": {"timezone": "Europe/Paris"},
            "createRecovery": {"since": (timezone.now() - timedelta(hours=2)).isoformat()},
            "requestPasswordReset": {"email": self.account.email},
            "createAPIToken": {"name": "ci", "expires_in": 3600, "allowed_ips": ["10.0.0.0/8"]},
            "createDomainClaim": {"name": "Bücher.example"},
            "createSmtpSecurityPolicy": {
                "name": "Relay",
                "require_smtp_auth": True,
                "require_spf": True,
                "smtp_credentials": "relay:a-long-relay-secret",
                "allowed_source_ips": "192.0.2.1, 2001:db8::/32",
                "allowed_spf_domains": "example.net",
            },
            "updateSmtpSecurityPolicy": {"name": "Renamed", "allowed_dkim_domains": "example.org"},
            "createWebhook": {
                "address": "new@conformance.example",
                "target_url": self.target_url,
                "name": "New",
                "custom_headers": {"X-Source": "conduit"},
                "rate_limit": 5,
                "smtp_security_policy_id": self.policy_id,
            },
            "updateWebhook": {
                "clear_security_policy": True,
                "active": False,
                "rate_limit": 0,
                "expect_mail_every_hours": 24,
            },
            "updateNotificationSettings": {
                "email_enabled": True,
                "webhook_url": self.target_url,
                "events": ["webhook_failing", "webhook_recovered"],
                "interval_minutes": 30,
            },
            "simulateWebhook": {"from": "a@example.net", "subject": "Hi", "text": "Hello"},
            "deleteAccount": {"confirm": True, "password": self.password},
        }
        return bodies.get(operation_id)


@pytest.fixture
def world(transactional_db, conformance_settings, httpserver) -> World:
    httpserver.expect_request("/hook").respond_with_json({"ok": True})
    account = AccountFactory(email="alice@conformance.example")
    issued = account_services.api_token_create(
        account=account, name="conformance", expires_in=None, allowed_ips=[], ip=None
    )
    spare = account_services.api_token_create(
        account=account, name="spare", expires_in=3600, allowed_ips=["127.0.0.1"], ip=None
    )
    domain = Domain.objects.create(
        account=account, name="conformance.example", verified=True, verified_at=timezone.now()
    )
    policy = policy_services.smtp_policy_create(
        account=account, name="Only our relay", ip=None, allowed_source_ips="192.0.2.0/24"
    )
    webhook = make_webhook(
        account,
        domain,
        httpserver.url_for("/hook"),
        name="Inbox",
        smtp_security_policy=policy,
        custom_headers={"X-Team": "conformance"},
        rate_limit=100,
    )
    log = DeliveryLog.objects.create(
        webhook=webhook,
        attempted_at=timezone.now(),
        duration_ms=12,
        http_status=200,
        sender="sender@example.net",
        smtp_message_id="<abc@example.net>",
    )
    Webhook.objects.filter(id=webhook.id).update(log_count=1)
    [message] = webhook_accept.messages_accept(
        [
            webhook_accept.NewMessage(
                raw=RAW,
                mail_from="sender@example.net",
                recipients={webhook.id: [webhook.address]},
                accounts={webhook.id: webhook.account_id},
                client_ip="192.0.2.10",
                helo="mail.example.net",
                message_id_header="<abc123@example.net>",
                subject="Hello there",
            )
        ],
        enqueue=False,
    )
    AuditLogEntry.objects.create(account=account, action="test.seeded", metadata={"a": 1})
    session = account_services.session_issue(account=account, ip="127.0.0.1", user_agent="tests")
    # A message with an attachment, and the link a delivery would carry to it.
    new = webhook_accept.NewMessage(
        raw=b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nHi\r\n--b\r\n"
        b"Content-Disposition: attachment; filename=a.txt\r\n\r\nfile\r\n--b--\r\n",
        mail_from="sender@example.net",
        recipients={webhook.id: [webhook.address]},
        accounts={webhook.id: webhook.account_id},
        client_ip="192.0.2.10",
        helo="mail.example.net",
        message_id_header="<abc@example.net>",
    )
    [accepted] = webhook_accept.messages_accept([new], enqueue=False)
    link, _ = attachments.link_for(message_id=accepted.message_id, index=0, now=timezone.now())
    return World(
        account=account,
        password=PASSWORD,
        token=issued.token,
        domain=domain,
        webhook=webhook,
        log=log,
        spare_token_id=str(spare.api_token.id),
        policy_id=str(policy.id),
        refresh_token=session.refresh_token,
        target_url=httpserver.url_for("/hook"),
        attachment_token=link.rsplit("/", 1)[1],
        message_id=str(message.message_id),
    )
