from django.urls import path

from accounts import views, views_2fa

urlpatterns = [
    path("ping", views.PingView.as_view(), name="ping"),
    path("accounts", views.AccountsView.as_view(), name="accounts"),
    path("accounts/me", views.AccountMeView.as_view(), name="account-me"),
    path("accounts/me/timezone", views.TimezoneView.as_view(), name="account-timezone"),
    path("accounts/me/password", views.PasswordView.as_view(), name="account-password"),
    path(
        "accounts/me/password-reset",
        views.PasswordResetView.as_view(),
        name="account-password-reset",
    ),
    path("accounts/me/api-tokens", views.ApiTokensView.as_view(), name="api-tokens"),
    path("accounts/me/api-tokens/<uuid:id>", views.ApiTokenView.as_view(), name="api-token"),
    path("accounts/me/audit-log", views.AuditLogView.as_view(), name="audit-log"),
    path("sessions", views.SessionsView.as_view(), name="sessions"),
    path("sessions/refresh", views.RefreshSessionView.as_view(), name="sessions-refresh"),
    path("accounts/me/2fa", views_2fa.TotpView.as_view(), name="totp"),
    path("accounts/me/2fa/setup", views_2fa.TotpSetupView.as_view(), name="totp-setup"),
    path("accounts/me/2fa/enable", views_2fa.TotpEnableView.as_view(), name="totp-enable"),
    path(
        "accounts/me/2fa/backup-codes",
        views_2fa.BackupCodesView.as_view(),
        name="totp-backup-codes",
    ),
    path("sessions/2fa", views_2fa.TotpSessionView.as_view(), name="sessions-2fa"),
]
