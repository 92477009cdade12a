"""A Python client generated from the committed openapi.json drives a real flow.

openapi-python-client writes the client into a temporary folder; its method names come
from the operationIds (createSession -> create_session, ...). With it a new user signs
up, signs in, claims a domain and verifies it through the loopback DNS server, creates
a policy and a webhook, simulates a delivery to a local HTTP server and reads the
delivery log. The client raises on any status the schema does not document.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from django.conf import settings
from django.utils import timezone
from standardwebhooks import Webhook as StandardWebhook

from domains.dns import VERIFY_LABEL
from domains.services import MX_PRIORITY
from tests.conformance.conftest import OPENAPI_JSON
from tests.delivery_fixtures import RAW
from webhooks import accept

PACKAGE = "conduit_client"
CLIENT_CONFIG = Path(__file__).resolve().parents[2] / "openapi-client.yml"
GENERATOR = Path(sys.executable).with_name("openapi-python-client")


@pytest.fixture(scope="module")
def client_package(tmp_path_factory) -> Iterator[SimpleNamespace]:
    """Generate the client into a temporary folder and import what the flow needs."""
    assert GENERATOR.exists(), "openapi-python-client is a dev dependency: pip install -e '.[dev]'"
    folder = tmp_path_factory.mktemp("generated-client")
    config = folder / "config.yml"
    # No formatter run: nothing outside tmp is touched. The original of a message
    # (message/rfc822) comes back as bytes, the way the README generates the client.
    config.write_text(CLIENT_CONFIG.read_text())
    generated = subprocess.run(
        [
            str(GENERATOR),
            "generate",
            "--path",
            str(OPENAPI_JSON),
            "--output-path",
            str(folder / PACKAGE),
            "--meta",
            "none",
            "--config",
            str(config),
            "--fail-on-warning",
        ],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert generated.returncode == 0, generated.stdout + generated.stderr
    sys.path.insert(0, str(folder))
    try:

        def load(name: str):
            return importlib.import_module(f"{PACKAGE}.{name}")

        yield SimpleNamespace(
            package=importlib.import_module(PACKAGE),
            models=load("models"),
            create_account=load("api.accounts.create_account"),
            create_session=load("api.sessions.create_session"),
            get_account=load("api.accounts.get_account"),
            create_domain_claim=load("api.domains.create_domain_claim"),
            verify_domain=load("api.domains.verify_domain"),
            create_smtp_security_policy=load("api.smtp_policies.create_smtp_security_policy"),
            create_webhook=load("api.webhooks.create_webhook"),
            simulate_webhook=load("api.webhooks.simulate_webhook"),
            list_delivery_logs=load("api.webhooks.list_delivery_logs"),
            get_delivery_log=load("api.webhooks.get_delivery_log"),
            pause_webhook=load("api.webhooks.pause_webhook"),
            resume_webhook=load("api.webhooks.resume_webhook"),
            list_messages=load("api.messages.list_messages"),
            get_message=load("api.messages.get_message"),
            download_message_raw=load("api.messages.download_message_raw"),
            redeliver_message=load("api.messages.redeliver_message"),
            delete_message=load("api.messages.delete_message"),
            create_recovery=load("api.webhooks.create_recovery"),
            list_recoveries=load("api.webhooks.list_recoveries"),
            get_recovery=load("api.webhooks.get_recovery"),
            cancel_recovery=load("api.webhooks.cancel_recovery"),
        )
    finally:
        sys.path.remove(str(folder))
        for name in [name for name in sys.modules if name.split(".")[0] == PACKAGE]:
            del sys.modules[name]


def test_the_methods_are_named_after_the_operation_ids(client_package):
    for module in ("create_session", "simulate_webhook", "list_delivery_logs"):
        api = getattr(client_package, module)
        assert callable(api.sync) and callable(api.sync_detailed), module


def sign_up_and_sign_in(api: SimpleNamespace, base_url: str) -> str:
    """A new account through the API; its access token."""
    models = api.models
    # Closed after use: a kept-alive connection keeps a live-server thread (and its
    # database connection) alive.
    with api.package.Client(base_url=base_url, raise_on_unexpected_status=True) as anonymous:
        account = api.create_account.sync(
            client=anonymous,
            body=models.CreateAccountRequest(
                email="Carol@Client.example", password="carols-pass-4471"
            ),
        )
        assert isinstance(account, models.AccountResponse)
        assert account.email == "carol@client.example" and account.timezone == "UTC"
        session = api.create_session.sync(
            client=anonymous,
            body=models.CreateSessionRequest(
                email="carol@client.example", password="carols-pass-4471"
            ),
        )
    assert isinstance(session, models.SessionResponse), session
    assert session.expires_in == settings.CONDUIT_ACCESS_TOKEN_TTL
    return session.access_token


def test_a_generated_client_runs_the_whole_flow(
    client_package, live_server, conformance_settings, dns_server, httpserver
):
    api, models = client_package, client_package.models
    token = sign_up_and_sign_in(api, live_server.url)
    with api.package.AuthenticatedClient(
        base_url=live_server.url, token=token, raise_on_unexpected_status=True
    ) as carol:
        assert api.get_account.sync(client=carol).email == "carol@client.example"

        domain = api.create_domain_claim.sync(
            client=carol, body=models.CreateDomainClaimRequest(name="client.example")
        )
        assert isinstance(domain, models.DomainResponse) and not domain.verified
        # DNS is the loopback server: publish the records the way the user would.
        dns_server.add_txt(f"{VERIFY_LABEL}.client.example", domain.verification_token)
        dns_server.add_mx("client.example", MX_PRIORITY, settings.CONDUIT_MX_HOST)
        domain = api.verify_domain.sync(domain.id, client=carol)
        assert isinstance(domain, models.DomainResponse) and domain.verified, domain

        policy = api.create_smtp_security_policy.sync(
            client=carol,
            body=models.CreateSmtpSecurityPolicyRequest(
                name="Our relay only", allowed_source_ips="192.0.2.0/24, 2001:db8::/32"
            ),
        )
        assert isinstance(policy, models.SmtpSecurityPolicyResponse)
        assert policy.allowed_source_ips == "192.0.2.0/24,2001:db8::/32"

        httpserver.expect_request("/hook", method="POST").respond_with_json(
            {"ok": True}, status=202
        )
        webhook = api.create_webhook.sync(
            client=carol,
            body=models.CreateWebhookRequest(
                address="inbox@client.example",
                target_url=httpserver.url_for("/hook"),
                name="Inbox",
                custom_headers=models.CreateWebhookRequestCustomHeaders.from_dict(
                    {"X-Team": "ops"}
                ),
                smtp_security_policy_id=policy.id,
            ),
        )
        assert isinstance(webhook, models.WebhookResponse), webhook
        assert webhook.secret.startswith("whsec_")
        assert webhook.smtp_security_policy_id == policy.id

        result = api.simulate_webhook.sync(
            webhook.id,
            client=carol,
            body=models.SimulateWebhookRequest(
                from_="dave@example.net", subject="Hello Carol", text="Testing the hook."
            ),
        )
        assert isinstance(result, models.SimulateWebhookResponse), result
        assert (result.http_status, result.error, result.simulated) == (202, None, True)

        # The target got a Standard Webhooks signed POST that the secret verifies.
        (request, _response), *_ = httpserver.log
        assert request.headers["X-Team"] == "ops"
        payload = StandardWebhook(webhook.secret).verify(request.get_data(), dict(request.headers))
        assert payload["subject"] == "Hello Carol" and payload["simulated"] is True

        listed = api.list_delivery_logs.sync_detailed(webhook.id, client=carol, page_size=10)
        assert listed.status_code == 200 and listed.headers["X-Total-Count"] == "1"
        (log,) = listed.parsed
        assert isinstance(log, models.DeliveryLogResponse)
        assert (log.webhook_id, log.http_status, log.simulated) == (webhook.id, 202, True)
        assert log.sender == "dave@example.net"
        assert api.get_delivery_log.sync(webhook.id, log.id, client=carol).id == log.id

        paused = api.pause_webhook.sync(webhook.id, client=carol)
        assert isinstance(paused, models.WebhookResponse), paused
        assert paused.paused is True and paused.paused_at is not None and paused.active
        resumed = api.resume_webhook.sync(webhook.id, client=carol)
        assert (resumed.paused, resumed.paused_at) == (False, None)

        # A message the webhook received: listed, read, downloaded, sent again, deleted.
        stored = accept.message_accept(
            raw=RAW,
            mail_from="dave@example.net",
            recipients={webhook.id: ["inbox@client.example"]},
            accounts={webhook.id: api.get_account.sync(client=carol).id},
            client_ip="192.0.2.10",
            helo="mail.example.net",
            message_id_header="<abc123@example.net>",
            subject="Hello there",
        )
        stored_at = timezone.now()
        messages = api.list_messages.sync_detailed(client=carol, q="hello")
        assert messages.status_code == 200 and messages.headers["X-Total-Count"] == "1"
        (summary,) = messages.parsed
        assert isinstance(summary, models.MessageSummaryResponse)
        assert (summary.id, summary.subject) == (stored.message_id, "Hello there")
        message = api.get_message.sync(stored.message_id, client=carol)
        assert isinstance(message, models.MessageResponse), message
        (received,) = message.deliveries
        assert received.webhook_id == webhook.id
        assert received.payload["subject"] == "Hello there"
        raw = api.download_message_raw.sync_detailed(stored.message_id, client=carol)
        assert raw.status_code == 200 and raw.content == RAW
        again = api.redeliver_message.sync(
            stored.message_id,
            client=carol,
            body=models.RedeliverMessageRequest(webhook_id=webhook.id),
        )
        assert isinstance(again, models.RedeliverMessageResponse), again
        assert [d.id for d in again.deliveries] == stored.delivery_ids

        # A recovery of the webhook's waiting deliveries: started, followed, cancelled.
        started = api.create_recovery.sync_detailed(
            webhook.id,
            client=carol,
            body=models.CreateRecoveryRequest(
                since=stored_at - timedelta(minutes=5),
                statuses=[models.RecoverableStatusEnum.PENDING],
            ),
        )
        assert started.status_code == 201, started.content
        job = started.parsed
        assert isinstance(job, models.RecoveryResponse), job
        assert (job.matched, job.state) == (1, models.RecoveryStateEnum.RUNNING)
        listed = api.list_recoveries.sync_detailed(webhook.id, client=carol)
        assert [item.id for item in listed.parsed] == [job.id]
        assert listed.headers["X-Total-Count"] == "1"
        assert api.get_recovery.sync(webhook.id, job.id, client=carol).id == job.id
        cancelled = api.cancel_recovery.sync(webhook.id, job.id, client=carol)
        assert cancelled.state == models.RecoveryStateEnum.CANCELLED
        deleted = api.delete_message.sync_detailed(stored.message_id, client=carol)
        assert deleted.status_code == 204
