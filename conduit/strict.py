"""Text fields for request serializers: a JSON string, or a 422.

DRF's CharField turns a JSON number into text (42 becomes "42"), so a client
that sent the wrong type for a name, an address or a password is never told.
Conduit's request serializers use these fields instead, whose only difference
is that anything but a JSON string is refused with "Not a valid string", in
the usual ``validation_error`` shape.
"""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

NOT_TEXT = "Not a valid string: send this field as text in double quotes."


class _TextOnly:
    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, str):
            self.fail("not_text")  # type: ignore[attr-defined]
        return super().to_internal_value(data)  # type: ignore[misc]


class CharField(_TextOnly, serializers.CharField):
    default_error_messages = {"not_text": NOT_TEXT}


class EmailField(_TextOnly, serializers.EmailField):
    default_error_messages = {"not_text": NOT_TEXT}
