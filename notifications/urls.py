from django.urls import path

from notifications import views

urlpatterns = [
    path(
        "accounts/me/notification-settings",
        views.NotificationSettingsView.as_view(),
        name="notification-settings",
    ),
    path("accounts/me/notifications", views.NotificationsView.as_view(), name="notifications"),
]
