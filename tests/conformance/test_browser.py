"""The pages people open render in a real browser: Debian's headless Chromium, driven
by Playwright, against the live server.

- /api/v1/docs: Swagger UI from drf-spectacular-sidecar (no CDN) shows every operation;
- the admin login page;
- the admin's change page of a webhook, for an operator (staff superuser without 2FA)
  who signed in through that login page;
- the operator's desk at 1280 px: the index's chart, the lists of attempts, deliveries
  and messages, a message's page with every attempt; nothing wider than the window;
- the browsable API's form for simulateWebhook, sent with its POST button.

Each must load without a console error, an uncaught script error, a failed request or
an answer >= 400 (a missing static file shows up as a 404 here).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone
from playwright import sync_api

from domains.models import Domain
from tests.admin_fixtures import make_delivery
from tests.conformance.conftest import load_openapi
from tests.delivery_fixtures import make_webhook
from tests.factories import PASSWORD
from webhooks.models import Delivery, DeliveryLog

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

# .ci/run installs Chromium, so under CI a missing browser fails instead of skipping.
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists() and not os.environ.get("CI"),
    reason="needs Debian's chromium (apt-get install chromium)",
)


def load_openapi_operation_ids() -> list[str]:
    return [
        operation["operationId"]
        for item in load_openapi()["paths"].values()
        for operation in item.values()
    ]


@pytest.fixture(scope="module")
def _orm_beside_playwright() -> Iterator[None]:
    """Playwright's sync API keeps an asyncio loop on this thread, and Django then
    refuses ORM calls (SynchronousOnlyOperation). The test's ORM calls are plain
    synchronous ones between browser steps: the usual Playwright-with-Django setting."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        yield


@pytest.fixture(scope="module")
def browser_context(tmp_path_factory, _orm_beside_playwright: None) -> Iterator[object]:
    """One headless Chromium with a fresh profile; Playwright downloads no browser."""
    home = tmp_path_factory.mktemp("chromium")
    # Chromium also writes crash-report settings and dconf files under the home
    # directory: point it at the temporary folder too.
    env = {
        **os.environ,
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / "config"),
        "XDG_CACHE_HOME": str(home / "cache"),
    }
    with sync_api.sync_playwright() as playwright:
        # Playwright takes the profile directory here rather than as --user-data-dir.
        context = playwright.chromium.launch_persistent_context(
            str(home / "profile"),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            env=env,
        )
        try:
            yield context
        finally:
            context.close()


@dataclass
class PageProblems:
    """Everything that went wrong while a page loaded."""

    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    error_responses: list[str] = field(default_factory=list)

    def watch(self, page) -> None:
        page.on("console", self._on_console)
        page.on("pageerror", lambda exc: self.page_errors.append(str(exc)))
        page.on(
            "requestfailed",
            lambda request: self.failed_requests.append(f"{request.url}: {request.failure}"),
        )
        page.on("response", self._on_response)

    def _on_console(self, message) -> None:
        # Chromium asks every site for /favicon.ico on its own; the admin's pages name
        # no icon, so that probe's 404 is the browser's habit, not a page's broken link.
        if message.type != "error" or message.location.get("url", "").endswith("/favicon.ico"):
            return
        self.console_errors.append(f"{message.text} ({message.location})")

    def _on_response(self, response) -> None:
        if response.status >= 400:
            self.error_responses.append(f"{response.status} {response.url}")

    def assert_none(self) -> None:
        assert self == PageProblems(), self


@pytest.fixture
def page(browser_context, live_server, transactional_db) -> Iterator[tuple[object, PageProblems]]:
    tab = browser_context.new_page()
    problems = PageProblems()
    problems.watch(tab)
    try:
        yield tab, problems
    finally:
        tab.close()


def sign_in(tab, live_server, operator) -> None:
    """Through the admin's login page, as an operator does."""
    tab.goto(f"{live_server.url}/admin/login/?next=/admin/", wait_until="networkidle")
    tab.fill("#id_username", operator.email)
    tab.fill("#id_password", PASSWORD)
    with tab.expect_navigation(wait_until="networkidle"):
        tab.click("input[type=submit]")
    assert tab.locator("#user-tools").is_visible(), tab.content()[:2000]


def test_the_api_docs_render_every_operation(page, live_server):
    tab, problems = page
    tab.goto(f"{live_server.url}/api/v1/docs", wait_until="networkidle")
    tab.wait_for_selector(".swagger-ui .opblock", timeout=15_000)
    assert "Conduit API" in tab.inner_text(".swagger-ui .info .title")
    # One block per operation and tag (completeTOTPSession is under Sessions and 2FA).
    block_ids = tab.eval_on_selector_all(".swagger-ui .opblock", "nodes => nodes.map(n => n.id)")
    shown = {block_id.rsplit("-", 1)[-1] for block_id in block_ids}
    assert shown == set(load_openapi_operation_ids()), shown
    assert tab.locator(".swagger-ui .opblock-tag", has_text="SMTP Policies").count() == 1
    # The assets come from this install (drf-spectacular-sidecar), never from a CDN.
    scripts = tab.eval_on_selector_all("script[src]", "nodes => nodes.map(n => n.src)")
    assert scripts and all(src.startswith(live_server.url) for src in scripts), scripts
    problems.assert_none()


def test_the_admin_login_page_renders(page, live_server):
    tab, problems = page
    tab.goto(f"{live_server.url}/admin/login/", wait_until="networkidle")
    assert tab.locator("#id_username").is_visible()
    assert tab.locator("#id_password").is_visible()
    # The admin's stylesheet applied: the header is styled, not a bare page.
    header_color = tab.eval_on_selector("#header", "el => getComputedStyle(el).backgroundColor")
    assert header_color not in ("", "rgba(0, 0, 0, 0)"), header_color
    problems.assert_none()


def test_an_operator_sees_a_webhooks_change_page(page, live_server, django_user_model):
    tab, problems = page
    operator = django_user_model.objects.create_superuser(
        email="operator@conduit.example", password=PASSWORD
    )
    domain = Domain.objects.create(account=operator, name="ops.example", verified=True)
    webhook = make_webhook(operator, domain, "https://hooks.ops.example/in", name="Ops inbox")
    DeliveryLog.objects.create(
        webhook=webhook,
        attempted_at=timezone.now(),
        duration_ms=40,
        http_status=503,
        sender="sender@example.net",
    )

    sign_in(tab, live_server, operator)

    tab.goto(
        f"{live_server.url}/admin/webhooks/webhook/{webhook.id}/change/", wait_until="networkidle"
    )
    assert tab.input_value("#id_address") == "inbox@ops.example"
    assert tab.input_value("#id_name") == "Ops inbox"
    assert "503" in tab.inner_text("#content-main")  # the recent delivery logs inline
    problems.assert_none()


LONG_ERROR = (
    "Could not connect to https://a-rather-long-host-name.hooks.ops.example/receive/email "
    "after 5.0 s: [Errno 111] Connection refused; the next attempt follows the retry "
    "schedule (attempt 3 of 10, in 4 minutes)"
)


def test_the_operators_desk_fits_a_1280px_window(page, live_server, django_user_model):
    tab, problems = page
    tab.set_viewport_size({"width": 1280, "height": 900})
    operator = django_user_model.objects.create_superuser(
        email="operator@conduit.example", password=PASSWORD
    )
    domain = Domain.objects.create(account=operator, name="ops.example", verified=True)
    webhook = make_webhook(
        operator,
        domain,
        "https://a-rather-long-host-name.hooks.ops.example/receive/email?token=" + "x" * 80,
        address="a.rather.long.local.part.for.an.inbox@ops.example",
    )
    now = timezone.now()
    for n in range(6):
        make_delivery(webhook, at=now - timedelta(hours=n, minutes=5))
    failed = make_delivery(
        webhook,
        at=now - timedelta(minutes=30),
        status=Delivery.Status.FAILED,
        attempts=[(503, "HTTP 503 from the target"), (None, LONG_ERROR)],
        message_id="<" + "a-very-long-message-id." * 8 + "@mail.example.net>",
    )
    sign_in(tab, live_server, operator)

    pages = [
        "/admin/",
        "/admin/webhooks/deliverylog/",
        "/admin/webhooks/delivery/",
        "/admin/webhooks/inboundmessage/",
        f"/admin/webhooks/inboundmessage/{failed.message_id}/change/",
        f"/admin/webhooks/delivery/{failed.id}/change/",
        f"/admin/webhooks/webhook/{webhook.id}/change/",
    ]
    for path in pages:
        tab.goto(f"{live_server.url}{path}", wait_until="networkidle")
        widths = tab.evaluate(
            "() => ({page: document.documentElement.scrollWidth, window: window.innerWidth})"
        )
        assert widths["page"] <= widths["window"], (path, widths)
        if path.endswith("/admin/webhooks/deliverylog/"):
            # The list of attempts fits whole: no column hidden behind a scroll bar.
            results = tab.eval_on_selector(
                "#changelist .results", "el => [el.scrollWidth, el.clientWidth]"
            )
            assert results[0] <= results[1], results

    tab.goto(f"{live_server.url}/admin/", wait_until="networkidle")
    chart = tab.locator("#delivery-dashboard svg.delivery-chart")
    assert chart.is_visible()
    box = chart.bounding_box()
    assert box["width"] > 400 and box["height"] > 50, box
    assert tab.locator("#delivery-dashboard rect.outcome-delivered").count() == 6
    assert tab.locator("#delivery-dashboard rect.outcome-failed").count() == 1
    failing = tab.inner_text("#delivery-dashboard table.failing-webhooks")
    assert webhook.address in failing
    problems.assert_none()


def test_a_signed_in_browser_runs_simulate_from_its_form(
    page, live_server, django_user_model, httpserver, delivery_settings
):
    tab, problems = page
    httpserver.expect_request("/hook", method="POST").respond_with_data("ok")
    operator = django_user_model.objects.create_superuser(
        email="operator@conduit.example", password=PASSWORD
    )
    domain = Domain.objects.create(account=operator, name="ops.example", verified=True)
    webhook = make_webhook(operator, domain, httpserver.url_for("/hook"))
    sign_in(tab, live_server, operator)

    tab.goto(f"{live_server.url}/api/v1/webhooks/{webhook.id}/simulate", wait_until="networkidle")
    form = tab.locator("#post-generic-content-form")
    assert "sender@example.com" in form.locator("textarea").input_value()
    form.locator("button", has_text="POST").click()
    # The page's script posts the form's JSON and replaces the page with the answer.
    tab.wait_for_function(
        """() => (document.querySelector('.response-info') || {innerText: ''})
            .innerText.includes('"simulated": true')""",
        timeout=15_000,
    )
    assert "HTTP 200 OK" in tab.inner_text(".response-info")
    assert len(httpserver.log) == 1
    problems.assert_none()
