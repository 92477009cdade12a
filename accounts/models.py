from __future__ import annotations

import uuid

from django.contrib.auth.models import AbstractBaseUser, BaseUserManager, PermissionsMixin
from django.db import models
from django.db.models.functions import Lower
from django_otp.plugins.otp_totp.models import TOTPDevice

from conduit.fields import EncryptedTextField


class AccountManager(BaseUserManager["Account"]):
    use_in_migrations = True

    def create_user(self, email: str, password: str | None = None, **extra: object) -> Account:
        account = self.model(email=normalise_email(email), **extra)
        account.set_password(password)
        account.save(using=self._db)
        return account

    def create_superuser(self, email: str, password: str | None = None, **extra: object) -> Account:
        extra.setdefault("is_staff", True)
        extra.setdefault("is_superuser", True)
        return self.create_user(email, password, **extra)


def normalise_email(email: str) -> str:
    """Addresses are compared case-insensitively, so they are stored lower-case."""
    return email.strip().lower()


class Account(AbstractBaseUser, PermissionsMixin):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    email = models.EmailField(unique=True, max_length=254)
    timezone = models.CharField(max_length=64, default="UTC")
    is_active = models.BooleanField(default=True)
    is_staff = models.BooleanField(default=False, help_text="May sign in to the admin.")
    # How many inbound messages the account can see (its message list's total),
    # kept in the statement that stores them, so the list never runs COUNT(*).
    message_count = models.BigIntegerField(default=0, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = AccountManager()

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"
    REQUIRED_FIELDS: list[str] = []

    class Meta:
        constraints = [
            models.UniqueConstraint(Lower("email"), name="account_email_case_insensitive_unique")
        ]

    def __str__(self) -> str:
        return self.email


class AuthSession(models.Model):
    """One signed-in session: an access token and the refresh token that renews it.

    Refreshing creates a new row in the same ``chain_id`` and marks this one
    rotated. Presenting a rotated refresh token again means it was copied, so
    the whole chain is revoked.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="auth_sessions")
    chain_id = models.UUIDField(default=uuid.uuid4, db_index=True)
    access_token_hash = models.CharField(max_length=64, unique=True)
    refresh_token_hash = models.CharField(max_length=64, unique=True)
    access_expires_at = models.DateTimeField()
    refresh_expires_at = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)
    rotated_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=256, blank=True)

    class Meta:
        verbose_name = "session"
        indexes = [models.Index(fields=["account", "revoked_at"])]

    def __str__(self) -> str:
        return f"session {self.id} of {self.account_id}"

    @property
    def is_live(self) -> bool:
        return self.revoked_at is None and self.rotated_at is None


class ApiToken(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    token_hash = models.CharField(max_length=64, unique=True)
    # The first characters of the token, so a user can tell tokens apart.
    token_start = models.CharField(max_length=16)
    allowed_ips = models.JSONField(default=list, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "API token"
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.token_start}…)"


class PasswordResetToken(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="+")
    token_hash = models.CharField(max_length=64, unique=True)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"password reset for {self.account_id}"


class AuditLogEntry(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # Null for events with no account to attach to (a sign-in with an unknown email).
    account = models.ForeignKey(
        Account, on_delete=models.CASCADE, null=True, blank=True, related_name="audit_log"
    )
    action = models.CharField(max_length=64, db_index=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        verbose_name = "audit log entry"
        verbose_name_plural = "audit log"
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["account", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.action} at {self.created_at:%Y-%m-%d %H:%M:%S}"


# --- Two-factor authentication -------------------------------------------------


class AccountTOTPDevice(TOTPDevice):
    """django-otp's TOTP device with its per-device back-off turned off.

    Wrong codes are counted by ``accounts.throttling``, like wrong passwords,
    and the client gets 429 with Retry-After. django-otp's own back-off would
    instead refuse even the right code for a while after a typo, and the client
    would only ever hear "wrong code". Replay protection (``last_t``) is kept.

    The secret key is not in django-otp's ``key`` column, which stays empty,
    but encrypted in ``TotpSeed``: a copy of the database alone cannot make
    codes. django-otp reads the key only through ``bin_key``.
    """

    class Meta:
        proxy = True
        verbose_name = "TOTP device"

    def get_throttle_factor(self) -> int:
        return 0

    @property
    def bin_key(self) -> bytes:
        return bytes.fromhex(self.seed.key)


class TotpSeed(models.Model):
    """The secret key of one TOTP device (hex, as django-otp has it), encrypted at rest."""

    device = models.OneToOneField(
        TOTPDevice, on_delete=models.CASCADE, primary_key=True, related_name="seed"
    )
    key = EncryptedTextField()

    class Meta:
        verbose_name = "TOTP seed"

    def __str__(self) -> str:
        return f"seed of TOTP device {self.device_id}"


class BackupCode(models.Model):
    """One single-use 2FA backup code, stored only as a hash.

    django-otp's StaticToken keeps its codes in clear text, which is why
    backup codes live here instead.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="backup_codes")
    code_hash = models.CharField(max_length=64)
    used_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["account", "code_hash"])]

    def __str__(self) -> str:
        return f"backup code of {self.account_id}"


class TotpChallenge(models.Model):
    """Proof that the password of a 2FA account was right, waiting for the code.

    Issued by sign-in instead of tokens; valid a few minutes and used once.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="+")
    token_hash = models.CharField(max_length=64, unique=True)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "TOTP challenge"

    def __str__(self) -> str:
        return f"TOTP challenge for {self.account_id}"
