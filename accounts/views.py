"""Accounts, sessions, passwords, API tokens and the audit log."""

from __future__ import annotations

import uuid

from drf_spectacular.utils import OpenApiResponse, PolymorphicProxySerializer, extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts import selectors, services, tasks, twofactor
from accounts.models import AuthSession
from accounts.serializers import (
    AccountResponseSerializer,
    APITokenResponseSerializer,
    AuditLogEntryResponseSerializer,
    ChangePasswordRequestSerializer,
    ConfirmPasswordResetRequestSerializer,
    CreateAccountRequestSerializer,
    CreateAPITokenRequestSerializer,
    CreateSessionRequestSerializer,
    DeleteAccountRequestSerializer,
    DeleteSessionRequestSerializer,
    PingResponseSerializer,
    RefreshSessionRequestSerializer,
    RequestPasswordResetRequestSerializer,
    SessionResponseSerializer,
    TOTPChallengeResponseSerializer,
    UpdateTimezoneRequestSerializer,
)
from accounts.throttling import ScopedRateThrottleOrOpen
from conduit.errors import Unauthorized
from conduit.net import client_ip
from conduit.pagination import PAGE_PARAMETERS_NOTE, paginate
from conduit.schema import PAGE_PARAMETERS, error, errors, no_content


def _user_agent(request: Request) -> str:
    return request.META.get("HTTP_USER_AGENT", "")


def _session_body(issued: services.IssuedSession) -> dict:
    return SessionResponseSerializer(
        {
            "access_token": issued.access_token,
            "refresh_token": issued.refresh_token,
            "expires_in": issued.expires_in,
        }
    ).data


def _credentials(serializer_class: type[serializers.Serializer], request: Request) -> dict:
    """Validate a credential exchange; anything malformed is simply not a credential (401)."""
    serializer = serializer_class(data=request.data)
    if not serializer.is_valid():
        fields = ", ".join(sorted(serializer.errors))
        raise Unauthorized(f"Missing or malformed credentials ({fields}).")
    return serializer.validated_data


class PingView(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(
        operation_id="ping",
        tags=["General"],
        summary="Health check",
        description="Returns a simple status response to confirm the API is reachable. "
        "No authentication required.",
        auth=[],
        responses={200: OpenApiResponse(PingResponseSerializer, description="The API is up")},
    )
    def get(self, request: Request) -> Response:
        return Response({"status": "ok"})


class AccountsView(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes = [ScopedRateThrottleOrOpen]
    throttle_scope = "signup"

    @extend_schema(
        operation_id="createAccount",
        tags=["Accounts"],
        summary="Sign up",
        description="Creates an account. The email is compared case-insensitively and stored "
        "lower-case; the password must pass the password rules (at least 10 characters, "
        "not common, not all digits, not like the email).",
        auth=[],
        request=CreateAccountRequestSerializer,
        responses={
            201: OpenApiResponse(AccountResponseSerializer, description="Account created"),
            409: error(409, "Email already registered"),
            422: error(422),
        },
    )
    def post(self, request: Request) -> Response:
        serializer = CreateAccountRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        account = services.account_create(
            email=serializer.validated_data["email"],
            password=serializer.validated_data["password"],
            ip=client_ip(request),
        )
        return Response(AccountResponseSerializer(account).data, status=status.HTTP_201_CREATED)


class AccountMeView(APIView):
    @extend_schema(
        operation_id="getAccount",
        tags=["Accounts"],
        summary="Get current account",
        responses={
            200: OpenApiResponse(AccountResponseSerializer, description="Account details"),
            **errors(401),
        },
    )
    def get(self, request: Request) -> Response:
        return Response(AccountResponseSerializer(request.user).data)

    @extend_schema(
        operation_id="deleteAccount",
        tags=["Accounts"],
        summary="Delete account",
        description="Deletes the account and everything it owns (domains, policies, webhooks, "
        "messages, logs, tokens). Needs `confirm: true` and the password.",
        request=DeleteAccountRequestSerializer,
        responses={
            204: no_content("Account deleted"),
            401: error(401, "Unauthorized or wrong password"),
            422: error(422, "Validation error (confirm not set to true)"),
        },
    )
    def delete(self, request: Request) -> Response:
        serializer = DeleteAccountRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        services.account_delete(
            account=request.user,
            password=serializer.validated_data["password"],
            ip=client_ip(request),
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


class TimezoneView(APIView):
    @extend_schema(
        operation_id="updateTimezone",
        tags=["Accounts"],
        summary="Update timezone",
        request=UpdateTimezoneRequestSerializer,
        responses={
            204: no_content("Timezone updated"),
            **errors(401),
            422: error(422, "Invalid timezone"),
        },
    )
    def put(self, request: Request) -> Response:
        serializer = UpdateTimezoneRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        services.account_update_timezone(
            account=request.user,
            timezone_name=serializer.validated_data["timezone"],
            ip=client_ip(request),
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


class PasswordView(APIView):
    @extend_schema(
        operation_id="changePassword",
        tags=["Accounts"],
        summary="Change password",
        description="Needs the current password. Every other session of the account is signed "
        "out; with `revoke_api_tokens: true` every API token is revoked too.",
        request=ChangePasswordRequestSerializer,
        responses={
            204: no_content("Password changed"),
            401: error(401, "Unauthorized or wrong current password"),
            422: error(422),
        },
    )
    def put(self, request: Request) -> Response:
        serializer = ChangePasswordRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        services.password_change(
            account=request.user,
            current_password=data["current_password"],
            new_password=data["new_password"],
            revoke_api_tokens=data["revoke_api_tokens"],
            current_session=request.auth if isinstance(request.auth, AuthSession) else None,
            ip=client_ip(request),
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


class PasswordResetView(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]

    def get_throttles(self) -> list:
        # Only requesting a reset sends email; confirming is throttled per token.
        return [ScopedRateThrottleOrOpen()] if self.request.method == "POST" else []

    throttle_scope = "password_reset"

    @extend_schema(
        operation_id="requestPasswordReset",
        tags=["Accounts"],
        summary="Request password reset",
        description="Emails a single-use reset token (valid one hour by default) when an "
        "account has this address. Always answers 202, whatever the address, so that it "
        "never reveals which addresses have accounts.",
        auth=[],
        request=RequestPasswordResetRequestSerializer,
        responses={
            202: no_content(
                "Reset email sent (always returned; never reveals whether address exists)"
            )
        },
    )
    def post(self, request: Request) -> Response:
        serializer = RequestPasswordResetRequestSerializer(data=request.data)
        if serializer.is_valid():
            ip = client_ip(request)
            email = serializer.validated_data["email"]
            # The same work for every address, known or not: the lookup and the
            # mail happen in the task, so the answer's timing tells nothing.
            tasks.enqueue_password_reset(email=email, ip=ip)
        return Response(status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        operation_id="confirmPasswordReset",
        tags=["Accounts"],
        summary="Confirm password reset",
        description="Sets a new password with the emailed token. The token works once; every "
        "session of the account is signed out.",
        auth=[],
        request=ConfirmPasswordResetRequestSerializer,
        responses={
            204: no_content("Password reset successful"),
            401: error(401, "Token invalid or expired"),
            422: error(422),
        },
    )
    def put(self, request: Request) -> Response:
        serializer = ConfirmPasswordResetRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        services.password_reset_confirm(
            token=serializer.validated_data["token"],
            new_password=serializer.validated_data["new_password"],
            ip=client_ip(request),
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


class SessionsView(APIView):
    def get_authenticators(self) -> list:
        # Signing in needs no credentials; signing out needs the session's own.
        if self.request is not None and self.request.method == "POST":
            return []
        return super().get_authenticators()

    def get_permissions(self) -> list:
        if self.request.method == "POST":
            return [AllowAny()]
        return super().get_permissions()

    @extend_schema(
        operation_id="createSession",
        tags=["Sessions"],
        summary="Sign in",
        description="Exchanges email and password for an access token (15 minutes) and a "
        "refresh token (30 days). Wrong credentials and unknown emails get the same 401; "
        "after 10 failures for one account (or 50 from one address) within 15 minutes the "
        "answer is 429 with Retry-After.",
        auth=[],
        request=CreateSessionRequestSerializer,
        responses={
            200: OpenApiResponse(
                PolymorphicProxySerializer(
                    component_name="CreateSessionResponse",
                    serializers=[SessionResponseSerializer, TOTPChallengeResponseSerializer],
                    resource_type_field_name=None,
                ),
                description="Either a full session (access_token + refresh_token) or a TOTP "
                "challenge when 2FA is enabled on the account.",
            ),
            401: error(401, "Invalid credentials"),
        },
    )
    def post(self, request: Request) -> Response:
        data = _credentials(CreateSessionRequestSerializer, request)
        result = twofactor.session_sign_in(
            email=data["email"],
            password=data["password"],
            ip=client_ip(request),
            user_agent=_user_agent(request),
        )
        if isinstance(result, twofactor.IssuedTotpChallenge):
            body = {"totp_required": True, "totp_token": result.totp_token}
            return Response(TOTPChallengeResponseSerializer(body).data)
        return Response(_session_body(result))

    @extend_schema(
        operation_id="deleteSession",
        tags=["Sessions"],
        summary="Sign out",
        description="Revokes the session whose access token authenticates the request, and "
        "the session of `refresh_token` when given. The body is optional, and a malformed "
        "one (not an object, `refresh_token` not a string) is ignored: signing out never "
        "fails once the bearer token is good.",
        request=DeleteSessionRequestSerializer,
        responses={204: no_content("Signed out"), **errors(401)},
    )
    def delete(self, request: Request) -> Response:
        # Not validated with the serializer: the contract gives sign-out no 422, and a
        # refresh token that is not a string cannot name a session anyway.
        body = request.data if isinstance(request.data, dict) else {}
        refresh_token = body.get("refresh_token")
        services.session_sign_out(
            account=request.user,
            current=request.auth if isinstance(request.auth, AuthSession) else None,
            refresh_token=refresh_token if isinstance(refresh_token, str) else None,
            ip=client_ip(request),
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


class RefreshSessionView(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(
        operation_id="refreshSession",
        tags=["Sessions"],
        summary="Refresh access token",
        description="Returns a new access token and a new refresh token; the old refresh "
        "token stops working. Presenting an already rotated refresh token again signs out "
        "every session descended from the same sign-in.",
        auth=[],
        request=RefreshSessionRequestSerializer,
        responses={
            200: OpenApiResponse(SessionResponseSerializer, description="New tokens issued"),
            401: error(401, "Invalid or expired refresh token"),
        },
    )
    def post(self, request: Request) -> Response:
        data = _credentials(RefreshSessionRequestSerializer, request)
        issued = services.session_refresh(
            refresh_token=data["refresh_token"],
            ip=client_ip(request),
            user_agent=_user_agent(request),
        )
        return Response(_session_body(issued))


class ApiTokensView(APIView):
    @extend_schema(
        operation_id="listAPITokens",
        tags=["API Tokens"],
        summary="List API tokens",
        description="Tokens are shown masked: only their first characters.",
        responses={
            200: OpenApiResponse(
                APITokenResponseSerializer(many=True), description="List of API tokens"
            ),
            **errors(401),
        },
    )
    def get(self, request: Request) -> Response:
        tokens = selectors.api_token_list(account=request.user)
        return Response(APITokenResponseSerializer(tokens, many=True).data)

    @extend_schema(
        operation_id="createAPIToken",
        tags=["API Tokens"],
        summary="Create an API token",
        description="The token (prefix `cdt_`) is returned whole in this response only; store "
        "it now. Requests with it from outside `allowed_ips` get 401.",
        request=CreateAPITokenRequestSerializer,
        responses={
            201: OpenApiResponse(APITokenResponseSerializer, description="Token created"),
            **errors(401, 422),
        },
    )
    def post(self, request: Request) -> Response:
        serializer = CreateAPITokenRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        issued = services.api_token_create(
            account=request.user,
            name=data["name"],
            expires_in=data.get("expires_in"),
            allowed_ips=data["allowed_ips"],
            ip=client_ip(request),
        )
        body = APITokenResponseSerializer(
            issued.api_token, context={"plain_token": issued.token}
        ).data
        return Response(body, status=status.HTTP_201_CREATED)


class ApiTokenView(APIView):
    @extend_schema(
        operation_id="deleteAPIToken",
        tags=["API Tokens"],
        summary="Revoke an API token",
        responses={204: no_content("Token revoked"), **errors(401, 404)},
    )
    def delete(self, request: Request, id: uuid.UUID) -> Response:
        api_token = selectors.get_api_token_for_account(account=request.user, token_id=id)
        services.api_token_delete(api_token=api_token, ip=client_ip(request))
        return Response(status=status.HTTP_204_NO_CONTENT)


class AuditLogView(APIView):
    @extend_schema(
        operation_id="listAuditLog",
        tags=["Accounts"],
        summary="List account audit log entries",
        description="Returns the most recent account audit log entries in reverse "
        "chronological order. Entries are retained for 180 days. " + PAGE_PARAMETERS_NOTE,
        parameters=PAGE_PARAMETERS,
        responses={
            200: OpenApiResponse(
                AuditLogEntryResponseSerializer(many=True),
                description="Audit log entries, newest first",
            ),
            **errors(401),
        },
    )
    def get(self, request: Request) -> Response:
        page = paginate(request, selectors.audit_log_list(account=request.user))
        return Response(
            AuditLogEntryResponseSerializer(page.items, many=True).data, headers=page.headers
        )
