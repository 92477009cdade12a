"""Model fields shared by the apps."""

from __future__ import annotations

from typing import Any

from django.db import models

from conduit import crypto


class EncryptedTextField(models.TextField):
    """Text kept encrypted in the database (``conduit.crypto``), plain in Python.

    The stored value changes at every save (Fernet uses a fresh IV), so the
    field cannot be filtered on; it is for secrets read by primary key.
    """

    def from_db_value(self, value: str | None, expression: Any, connection: Any) -> str | None:
        if value is None:
            return None
        try:
            return crypto.decrypt(value)
        except crypto.InvalidToken:
            raise crypto.InvalidToken(
                f"{self.model.__name__}.{self.name} cannot be decrypted with any key of "
                "CONDUIT_ENCRYPTION_KEYS (or the key derived from SECRET_KEY); was a key "
                "removed before manage.py reencrypt_secrets ran?"
            ) from None

    def get_prep_value(self, value: Any) -> Any:
        value = super().get_prep_value(value)
        if value is None:
            return None
        return crypto.encrypt(value)
