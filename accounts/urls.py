from django.urls import path

from accounts import views

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
]
