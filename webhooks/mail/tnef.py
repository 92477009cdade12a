"""TNEF (``winmail.dat``, ``application/ms-tnef``): the attachments Outlook wraps in it.

Outlook sends "rich text" mail as one TNEF attachment that only Outlook opens. The files
inside are delivered as attachments of their own, right after the TNEF part (which is kept
as it came, so nothing is lost). Decoding is ``tnefparse``'s; a TNEF stream it cannot read
yields no extra attachments.
"""

from __future__ import annotations

import logging
import mimetypes
from typing import Any

from tnefparse import TNEF

TNEF_TYPES = frozenset({"application/ms-tnef", "application/vnd.ms-tnef"})

# tnefparse logs every attribute it does not know at warning level: noise for a mail service.
logging.getLogger("tnefparse").setLevel(logging.ERROR)


def _name(attachment: Any) -> str | None:
    name = attachment.long_filename()
    if isinstance(name, bytes):
        name = name.decode("utf-8", "replace")
    name = (name or "").strip("\x00").strip()
    return name or None


def tnef_files(data: bytes) -> list[tuple[str | None, str, bytes]]:
    """The files inside a TNEF stream: (file name, content type guessed from it, bytes)."""
    try:
        attachments = TNEF(data, do_checksum=False).attachments
    except Exception:
        return []
    result = []
    for attachment in attachments:
        content = attachment.data if isinstance(attachment.data, bytes) else b""
        try:
            filename = _name(attachment)
        except Exception:
            filename = None
        content_type = (filename and mimetypes.guess_type(filename, strict=False)[0]) or (
            "application/octet-stream"
        )
        result.append((filename, content_type, content))
    return result
