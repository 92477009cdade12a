"""Two-factor authentication (TOTP): setup, enable, disable, backup codes, sign-in."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts import twofactor
from accounts.serializers import (
    BackupCodesResponseSerializer,
    CompleteTOTPSessionRequestSerializer,
    SessionResponseSerializer,
    SetupTOTPResponseSerializer,
    TOTPCodeRequestSerializer,
)
from accounts.views import _credentials, _session_body, _user_agent
from conduit.net import client_ip
from conduit.schema import error, no_content

_INVALID_CODE = "Invalid TOTP code (`invalid_totp_code`), or no valid bearer token"
_THROTTLED = (
    " After 10 wrong codes for one account within 15 minutes the answer is 429 "
    "`rate_limited` with Retry-After."
)


def _code(request: Request) -> str:
    serializer = TOTPCodeRequestSerializer(data=request.data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data["code"]


def _backup_codes_body(codes: list[str]) -> dict:
    return BackupCodesResponseSerializer({"backup_codes": codes}).data


class TotpSetupView(APIView):
    @extend_schema(
        operation_id="setupTOTP",
        tags=["2FA"],
        summary="Set up TOTP two-factor authentication",
        description="Creates a new TOTP secret for an authenticator app and returns it as "
        "base32 (`secret`), as an `otpauth://` URL and as a QR code of that URL (base64 "
        "PNG). Two-factor authentication is not on until enableTOTP confirms a code from "
        "the app. Setup can be repeated until then; each call replaces the secret, and the "
        "earlier one stops working.\n\n"
        "While two-factor authentication is on, setup is refused with 401 "
        "`totp_already_enabled`: a new secret would replace the second factor without "
        "proof of holding it. Disable it with a current code first, then set up again.",
        request=None,
        responses={
            200: OpenApiResponse(SetupTOTPResponseSerializer, description="TOTP setup details"),
            401: error(
                401,
                "Unauthorized, or two-factor authentication is already on (`totp_already_enabled`)",
            ),
        },
    )
    def post(self, request: Request) -> Response:
        setup = twofactor.totp_setup(account=request.user)
        body = SetupTOTPResponseSerializer(
            {
                "secret": setup.secret,
                "otpauth_url": setup.otpauth_url,
                "qr_code_png": setup.qr_code_png,
            }
        ).data
        return Response(body)


class TotpEnableView(APIView):
    @extend_schema(
        operation_id="enableTOTP",
        tags=["2FA"],
        summary="Enable TOTP two-factor authentication",
        description="Turns two-factor authentication on with a current code from the app "
        "set up by setupTOTP, and returns 10 single-use backup codes. They are shown only "
        "in this response (Conduit keeps only their hashes): store them now. From then on "
        "sign-in asks for a code." + _THROTTLED,
        request=TOTPCodeRequestSerializer,
        responses={
            200: OpenApiResponse(
                BackupCodesResponseSerializer, description="TOTP enabled; backup codes returned"
            ),
            401: error(401, _INVALID_CODE),
            409: error(409, "TOTP already enabled"),
            422: error(422, "TOTP not set up yet, or no code sent"),
        },
    )
    def post(self, request: Request) -> Response:
        codes = twofactor.totp_enable(
            account=request.user, code=_code(request), ip=client_ip(request)
        )
        return Response(_backup_codes_body(codes))


class TotpView(APIView):
    @extend_schema(
        operation_id="disableTOTP",
        tags=["2FA"],
        summary="Disable TOTP two-factor authentication",
        description="Turns two-factor authentication off. Needs a current TOTP code or an "
        'unused backup code, sent as the JSON body `{"code": "..."}`. The secret and every '
        "backup code are deleted; sign-in asks only for the password again." + _THROTTLED,
        request=TOTPCodeRequestSerializer,
        responses={
            204: no_content("TOTP disabled"),
            401: error(401, _INVALID_CODE),
            422: error(422, "TOTP not enabled, or no code sent"),
        },
    )
    def delete(self, request: Request) -> Response:
        twofactor.totp_disable(account=request.user, code=_code(request), ip=client_ip(request))
        return Response(status=status.HTTP_204_NO_CONTENT)


class BackupCodesView(APIView):
    @extend_schema(
        operation_id="regenerateBackupCodes",
        tags=["2FA"],
        summary="Regenerate TOTP backup codes",
        description="Returns 10 new single-use backup codes; every earlier backup code "
        "stops working. Needs a current TOTP code or an unused backup code." + _THROTTLED,
        request=TOTPCodeRequestSerializer,
        responses={
            200: OpenApiResponse(BackupCodesResponseSerializer, description="New backup codes"),
            401: error(401, _INVALID_CODE),
            422: error(422, "TOTP not enabled, or no code sent"),
        },
    )
    def post(self, request: Request) -> Response:
        codes = twofactor.backup_codes_regenerate(
            account=request.user, code=_code(request), ip=client_ip(request)
        )
        return Response(_backup_codes_body(codes))


class TotpSessionView(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(
        operation_id="completeTOTPSession",
        tags=["Sessions", "2FA"],
        summary="Complete sign-in with TOTP code",
        description="Second step of signing in to an account with two-factor "
        "authentication: exchanges the `totp_token` from createSession and a current TOTP "
        "code (or an unused backup code, which is then used up) for the same tokens a "
        "password-only sign-in returns. A TOTP code is accepted once only.\n\n"
        "The challenge is valid for 5 minutes and works once. A wrong code (401 "
        "`invalid_totp_code`) leaves it usable, so the user can try again; an expired, used "
        "or unknown challenge is 401 `unauthorized`: sign in with the password again." + _THROTTLED,
        auth=[],
        request=CompleteTOTPSessionRequestSerializer,
        responses={
            200: OpenApiResponse(SessionResponseSerializer, description="Session tokens"),
            401: error(401, "Invalid TOTP code or challenge token"),
        },
    )
    def post(self, request: Request) -> Response:
        data = _credentials(CompleteTOTPSessionRequestSerializer, request)
        issued = twofactor.totp_session_complete(
            totp_token=data["totp_token"],
            code=data["code"],
            ip=client_ip(request),
            user_agent=_user_agent(request),
        )
        return Response(_session_body(issued))
