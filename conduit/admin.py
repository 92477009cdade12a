"""The project's admin site (Django's admin, made the default by conduit.apps).

Apps register their models on ``django.contrib.admin.site`` as usual; this module
registers nothing itself, so that loading the site class never imports an app's
admin module.
"""

from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import get_permission_codename
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import reverse_lazy
from django.utils import timezone

from accounts import twofactor
from accounts.forms import TwoFactorAdminAuthenticationForm
from webhooks.dashboard import delivery_dashboard


class ConduitAdminSite(admin.AdminSite):
    """The operator's desk.

    Staff with 2FA on enter only after giving a code at login; unlike
    django_otp.admin.OTPAdminSite, staff without 2FA still get in with their
    password alone. The index shows the last 24 hours of deliveries; "View site"
    opens the API documentation.
    """

    site_header = "Conduit administration"
    site_title = "Conduit admin"
    site_url = reverse_lazy("api-docs")
    login_form = TwoFactorAdminAuthenticationForm
    # django-otp's login template: the admin's own shows no field beyond the password.
    login_template = "otp/admin111/login.html"
    # The lists are wide (webhook, status, error, sender, duration, ...): at 1280 px
    # they need the room the navigation sidebar would take; breadcrumbs and the
    # index lead everywhere.
    enable_nav_sidebar = False

    def has_permission(self, request: HttpRequest) -> bool:
        if not super().has_permission(request):
            return False
        # is_verified() comes from OTPMiddleware: true once a code was given at login.
        # Without it, a password-only session (e.g. from /api-auth/login/) would do.
        return request.user.is_verified() or not twofactor.totp_is_enabled(account=request.user)

    def index(self, request: HttpRequest, extra_context: dict | None = None) -> TemplateResponse:
        context = {"delivery_dashboard": delivery_dashboard(now=timezone.now())}
        return super().index(request, {**context, **(extra_context or {})})


class ReadOnlyAdminMixin:
    """For records only the service writes (messages, attempts, audit entries, ...):
    the admin shows them, with no add form and no SAVE button.

    An action that changes such a record through a service declares
    ``permissions=["operate"]``: it asks for the model's change permission, which
    the admin's own edit form no longer offers.
    """

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_operate_permission(self, request: HttpRequest) -> bool:
        opts = self.opts  # type: ignore[attr-defined]
        return request.user.has_perm(f"{opts.app_label}.{get_permission_codename('change', opts)}")
