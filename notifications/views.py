"""Notification settings and the list of notices, under the account."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from conduit.net import client_ip
from conduit.pagination import PAGE_PARAMETERS_NOTE, paginate
from conduit.schema import PAGE_PARAMETERS, error, errors
from notifications import selectors, services
from notifications.serializers import (
    NotificationResponseSerializer,
    NotificationSettingsResponseSerializer,
    UpdateNotificationSettingsRequestSerializer,
)

_TAGS = ["Notifications"]


class NotificationSettingsView(APIView):
    @extend_schema(
        operation_id="getNotificationSettings",
        tags=_TAGS,
        summary="Get notification settings",
        description="How the account is told when something is wrong: by mail to its "
        "address, and/or to an operational webhook, for which events, at most how often.",
        responses={
            200: OpenApiResponse(
                NotificationSettingsResponseSerializer, description="Notification settings"
            ),
            **errors(401),
        },
    )
    def get(self, request: Request) -> Response:
        prefs = selectors.notification_settings_for(account=request.user)
        return Response(NotificationSettingsResponseSerializer(prefs).data)

    @extend_schema(
        operation_id="updateNotificationSettings",
        tags=_TAGS,
        summary="Update notification settings",
        description="Fields left out keep their values. A new `webhook_url` gets a new signing "
        "secret, returned whole in this response only (as does `rotate_webhook_secret`), and "
        "must accept a signed `notification.test` event first. Audited as "
        "`notifications.updated`.",
        request=UpdateNotificationSettingsRequestSerializer,
        responses={
            200: OpenApiResponse(
                NotificationSettingsResponseSerializer, description="Notification settings"
            ),
            **errors(401),
            422: error(
                422,
                "Invalid settings: a URL that is not https (in production) or private "
                "(`validation_error`), one that did not accept the test event "
                "(`webhook_url_unreachable`), an interval below the minimum",
            ),
        },
    )
    def put(self, request: Request) -> Response:
        serializer = UpdateNotificationSettingsRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        prefs, new_secret = services.notification_settings_update(
            account=request.user, data=serializer.validated_data, ip=client_ip(request)
        )
        context = {"new_secret": new_secret}
        return Response(NotificationSettingsResponseSerializer(prefs, context=context).data)


class NotificationsView(APIView):
    @extend_schema(
        operation_id="listNotifications",
        parameters=PAGE_PARAMETERS,
        tags=_TAGS,
        summary="List notifications",
        description="The account's notices, newest first: what each was about (`event`, "
        "`webhook_id` or `domain_id`, `summary`, `details`), whether it was sent, cancelled "
        "by a recovery or is still waiting to be sent with others, and how each channel "
        "took it. " + PAGE_PARAMETERS_NOTE,
        responses={
            200: OpenApiResponse(
                NotificationResponseSerializer(many=True), description="List of notifications"
            ),
            **errors(401),
        },
    )
    def get(self, request: Request) -> Response:
        page = paginate(request, selectors.notification_list(account=request.user))
        return Response(
            NotificationResponseSerializer(page.items, many=True).data, headers=page.headers
        )
