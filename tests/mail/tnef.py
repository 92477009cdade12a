"""A small TNEF writer, for tests: a winmail.dat holding the given files ([MS-OXTNEF] §2.1).

Each attribute is level (1 message, 2 attachment), a 32-bit id (type << 16 | name), the
length, the data and a 16-bit checksum (the sum of the data bytes). An attachment starts
with attAttachRendData; attAttachTitle names it and attAttachData holds its bytes.
"""

from __future__ import annotations

import struct

SIGNATURE = 0x223E9F78
LEVEL_MESSAGE, LEVEL_ATTACHMENT = 1, 2
ATT_TNEF_VERSION = 0x0008_9006
ATT_OEM_CODEPAGE = 0x0006_9007
ATT_MESSAGE_CLASS = 0x0007_8008
ATT_ATTACH_REND_DATA = 0x0006_9002
ATT_ATTACH_TITLE = 0x0001_8010
ATT_ATTACH_DATA = 0x0006_800F


def _attribute(level: int, attribute: int, data: bytes) -> bytes:
    checksum = sum(data) & 0xFFFF
    return struct.pack("<BII", level, attribute, len(data)) + data + struct.pack("<H", checksum)


def build_tnef(files: list[tuple[str, bytes]]) -> bytes:
    out = struct.pack("<IH", SIGNATURE, 0x0001)
    out += _attribute(LEVEL_MESSAGE, ATT_TNEF_VERSION, struct.pack("<I", 0x00010000))
    out += _attribute(LEVEL_MESSAGE, ATT_OEM_CODEPAGE, struct.pack("<II", 1252, 0))
    out += _attribute(LEVEL_MESSAGE, ATT_MESSAGE_CLASS, b"IPM.Microsoft Mail.Note\x00")
    for name, data in files:
        rendering = struct.pack("<HIIHHI", 1, 0xFFFFFFFF, 0, 0, 0, 0)
        out += _attribute(LEVEL_ATTACHMENT, ATT_ATTACH_REND_DATA, rendering)
        out += _attribute(LEVEL_ATTACHMENT, ATT_ATTACH_TITLE, name.encode("ascii") + b"\x00")
        out += _attribute(LEVEL_ATTACHMENT, ATT_ATTACH_DATA, data)
    return out
