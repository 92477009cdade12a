from django.urls import path

from webhooks import views

urlpatterns = [
    path("webhooks", views.WebhooksView.as_view(), name="webhooks"),
    path("webhooks/<uuid:id>", views.WebhookView.as_view(), name="webhook"),
    path("webhooks/<uuid:id>/logs", views.DeliveryLogsView.as_view(), name="delivery-logs"),
    path(
        "webhooks/<uuid:id>/logs/<uuid:logId>",
        views.DeliveryLogView.as_view(),
        name="delivery-log",
    ),
    path("webhooks/<uuid:id>/pause", views.PauseWebhookView.as_view(), name="pause"),
    path("webhooks/<uuid:id>/resume", views.ResumeWebhookView.as_view(), name="resume"),
    path("webhooks/<uuid:id>/recoveries", views.RecoveriesView.as_view(), name="recoveries"),
    path(
        "webhooks/<uuid:id>/recoveries/<uuid:recoveryId>",
        views.RecoveryView.as_view(),
        name="recovery",
    ),
    path(
        "webhooks/<uuid:id>/recoveries/<uuid:recoveryId>/cancel",
        views.CancelRecoveryView.as_view(),
        name="recovery-cancel",
    ),
    path("webhooks/<uuid:id>/simulate", views.SimulateWebhookView.as_view(), name="simulate"),
    # Beside openapi.json: a document, not an operation of the API.
    path("schemas/payload/v<int:version>.json", views.payload_schema_view, name="payload-schema"),
    path("attachments/<str:token>", views.AttachmentView.as_view(), name="attachment"),
    path("messages", views.MessagesView.as_view(), name="messages"),
    path("messages/<uuid:id>", views.MessageView.as_view(), name="message"),
    path("messages/<uuid:id>/raw", views.MessageRawView.as_view(), name="message-raw"),
    path(
        "messages/<uuid:id>/redeliver",
        views.RedeliverMessageView.as_view(),
        name="message-redeliver",
    ),
]
