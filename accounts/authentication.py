"""``Authorization: Bearer <token>`` for session access tokens and API tokens."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone
from rest_framework import authentication
from rest_framework.request import Request

from accounts.models import Account, ApiToken, AuthSession
from accounts.tokens import API_TOKEN_PREFIX, hash_token
from conduit.errors import Unauthorized
from conduit.ipnets import ip_in_networks, to_networks
from conduit.net import client_ip

# last_used_at is written at most this often per token, not on every request.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def _ip_allowed(ip: str | None, allowed: list[str]) -> bool:
    return not allowed or ip_in_networks(ip, to_networks(allowed))


class BearerTokenAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[Account, AuthSession | ApiToken] | None:
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer":
            return None
        token = token.strip()
        if not token:
            raise Unauthorized("The Authorization header has no token after 'Bearer'.")
        if token.startswith(API_TOKEN_PREFIX):
            return self._api_token(request, token)
        return self._session(token)

    def authenticate_header(self, request: Request) -> str:
        return self.keyword

    def _session(self, token: str) -> tuple[Account, AuthSession]:
        session = (
            AuthSession.objects.select_related("account")
            .filter(access_token_hash=hash_token(token))
            .first()
        )
        if (
            session is None
            or not session.is_live
            or session.access_expires_at <= timezone.now()
            or not session.account.is_active
        ):
            raise Unauthorized("The access token is invalid, expired or signed out.")
        return session.account, session

    def _api_token(self, request: Request, token: str) -> tuple[Account, ApiToken]:
        api_token = (
            ApiToken.objects.select_related("account").filter(token_hash=hash_token(token)).first()
        )
        now = timezone.now()
        if api_token is None or not api_token.account.is_active:
            raise Unauthorized("The API token is invalid or revoked.")
        if api_token.expires_at is not None and api_token.expires_at <= now:
            raise Unauthorized("The API token has expired; create a new one.")
        ip = client_ip(request)
        if not _ip_allowed(ip, api_token.allowed_ips):
            raise Unauthorized(f"The API token may not be used from {ip}.")
        if api_token.last_used_at is None or now - api_token.last_used_at > LAST_USED_RESOLUTION:
            ApiToken.objects.filter(id=api_token.id).update(last_used_at=now)
            api_token.last_used_at = now
        return api_token.account, api_token


class TwoFactorSessionAuthentication(authentication.SessionAuthentication):
    """A Django session (admin or browsable-API login) counts only once it passed 2FA.

    /api-auth/login/ asks for the password alone; without this, an account with
    2FA on could use the API (and create API tokens) with its password only.
    The admin login asks for the code, and OTPMiddleware marks such a session
    verified.
    """

    def authenticate(self, request: Request) -> tuple[Account, None] | None:
        result = super().authenticate(request)
        if result is None:
            return None
        # Imported here: twofactor imports the services, which import conduit.errors.
        from accounts.twofactor import totp_is_enabled

        account = result[0]
        if not account.is_verified() and totp_is_enabled(account=account):
            return None
        return result
