"""Outlook's winmail.dat (TNEF): the attachments it wraps, read with strict bounds.

Parsed here rather than with tnefparse: tnefparse copies the rest of the stream for every attribute
(quadratic time) and loops over any property count a file declares, so a crafted winmail.dat could
stall the daemon. This reader walks each byte once and only takes what attachments need. The names
it returns are the sender's file names: never log them.
"""

from __future__ import annotations

import struct
from typing import Any

from ..errors import HostileFile, UnpackError
from .containers import MAX_ATTACHMENTS, MAX_FILE_BYTES, TOO_BIG, TOO_MANY_FILES

_TNEF_UNREADABLE = (
    "Your email arrived in Outlook's rich text format (as winmail.dat) and the gateway could not read it. "
    "Please send the email again in HTML or plain text format (in Outlook: File > Options > Mail > "
    "Compose messages in HTML format), with the return attached."
)

_TNEF_EMPTY = (
    "Your email arrived in Outlook's rich text format (as winmail.dat) and held no attached file. Please "
    "attach the return and send the email again, in HTML or plain text format if you can."
)


_TNEF_SIGNATURE = 0x223E9F78
_LVL_MESSAGE, _LVL_ATTACHMENT = 1, 2
_ATT_OEM_CODEPAGE = 0x9007
_ATT_ATTACH_REND_DATA = 0x9002  # starts each attachment
_ATT_ATTACH_TITLE = 0x8010
_ATT_ATTACH_DATA = 0x800F
_ATT_ATTACHMENT = 0x9005  # the attachment's MAPI properties
_PR_DISPLAY_NAME = 0x3001
_PR_ATTACH_DATA = 0x3701
_PR_ATTACH_FILENAME = 0x3704
_PR_ATTACH_METHOD = 0x3705
_PR_ATTACH_LONG_FILENAME = 0x3707
_ATTACH_EMBEDDED_MSG = 5
_PT_STRING8, _PT_UNICODE, _PT_BINARY, _PT_OBJECT = 0x001E, 0x001F, 0x0102, 0x000D
_FIXED_SIZES = {0x0002: 4, 0x000B: 4, 0x0003: 4, 0x0004: 4, 0x000A: 4, 0x0005: 8, 0x0006: 8, 0x0007: 8,
                0x0014: 8, 0x0040: 8, 0x0048: 16}  # 16-bit values are padded to 4 bytes in TNEF
_MULTI_VALUED = 0x1000


class _Damaged(Exception):
    pass


def tnef_attachments(data: bytes) -> list[tuple[str, bytes]]:
    """The attached files of a winmail.dat as (file name, bytes); the name is the sender's, never log it."""
    if len(data) < 6 or struct.unpack_from("<I", data)[0] != _TNEF_SIGNATURE:
        raise UnpackError("not a TNEF stream", _TNEF_UNREADABLE)
    if len(data) > MAX_FILE_BYTES:
        raise UnpackError("winmail.dat over the size limit", TOO_BIG)
    try:
        found = _tnef_walk(data)
    except _Damaged:
        raise UnpackError("TNEF stream damaged", _TNEF_UNREADABLE) from None
    attachments = [(name, content) for name, content in found if content]
    if not attachments:
        raise UnpackError("TNEF stream holds no attachment", _TNEF_EMPTY)
    if len(attachments) > MAX_ATTACHMENTS:
        raise HostileFile("TNEF stream holds too many attachments", TOO_MANY_FILES)
    return attachments


def _tnef_walk(data: bytes) -> list[tuple[str, bytes]]:
    codepage = "cp1252"
    found: list[dict[str | int, Any]] = []  # TNEF's own attributes by name, MAPI properties by number
    offset = 6
    while offset < len(data):
        if offset + 9 > len(data):
            raise _Damaged
        level, name, _type, length = struct.unpack_from("<BHHI", data, offset)
        start, end = offset + 9, offset + 9 + length
        if end + 2 > len(data):
            raise _Damaged
        offset = end + 2
        if level == _LVL_MESSAGE:
            if name == _ATT_OEM_CODEPAGE and length >= 4:
                codepage = _codepage(struct.unpack_from("<I", data, start)[0])
            continue
        if level != _LVL_ATTACHMENT:
            raise _Damaged
        if name == _ATT_ATTACH_REND_DATA:
            found.append({})
        elif not found:
            raise _Damaged  # an attachment attribute before any attachment has started
        elif name == _ATT_ATTACH_TITLE:
            found[-1]["title"] = _string(data[start:end], codepage)
        elif name == _ATT_ATTACH_DATA:
            if sum(data[start:end]) & 0xFFFF != struct.unpack_from("<H", data, end)[0]:
                raise _Damaged
            found[-1]["data"] = data[start:end]
        elif name == _ATT_ATTACHMENT:
            found[-1].update(_mapi_properties(data[start:end], codepage))
    result = []
    for attachment in found:
        if attachment.get(_PR_ATTACH_METHOD) == _ATTACH_EMBEDDED_MSG:
            continue  # an attached email, not a file
        content = attachment.get("data") or attachment.get(_PR_ATTACH_DATA) or b""
        name = (attachment.get(_PR_ATTACH_LONG_FILENAME) or attachment.get("title")
                or attachment.get(_PR_ATTACH_FILENAME) or attachment.get(_PR_DISPLAY_NAME) or "")
        result.append((name.replace("\\", "/").rsplit("/", 1)[-1], content))
    return result


def _codepage(number: int) -> str:
    name = {65001: "utf-8", 20127: "ascii", 28591: "latin-1"}.get(number, f"cp{number}")
    try:
        "".encode(name)
    except LookupError:
        return "cp1252"
    return name


def _string(raw: bytes, encoding: str) -> str:
    return raw.decode(encoding, errors="replace").split("\x00", 1)[0].strip()


def _mapi_properties(raw: bytes, codepage: str) -> dict[str | int, Any]:
    """The few MAPI properties that name an attachment or hold its bytes; stops at anything unknown."""
    wanted: dict[str | int, Any] = {}
    if len(raw) < 4:
        return wanted
    count = struct.unpack_from("<I", raw)[0]
    offset = 4
    for _ in range(count):  # a hostile count ends when the bytes do
        if offset + 4 > len(raw):
            break
        ptype, pid = struct.unpack_from("<HH", raw, offset)
        offset += 4
        if pid >= 0x8000:  # named property: GUID, kind, then a number or a name
            if offset + 20 > len(raw):
                break
            kind = struct.unpack_from("<I", raw, offset + 16)[0]
            offset += 20
            if kind == 0:
                offset += 4
            else:
                if offset + 4 > len(raw):
                    break
                offset += 4 + _padded(struct.unpack_from("<I", raw, offset)[0])
        values = 1
        multi = bool(ptype & _MULTI_VALUED)
        base = ptype & ~_MULTI_VALUED
        if multi or base in (_PT_STRING8, _PT_UNICODE, _PT_BINARY, _PT_OBJECT):
            if offset + 4 > len(raw):
                break
            values = struct.unpack_from("<I", raw, offset)[0]
            offset += 4
        if base in _FIXED_SIZES:
            size = _FIXED_SIZES[base]
            if multi and base in (0x0002, 0x000B):
                size = 2
            if values > len(raw) or offset + size * values > len(raw):
                break
            value = raw[offset:offset + size * values]
            offset += _padded(size * values)
            if pid == _PR_ATTACH_METHOD and base == 0x0003 and not multi:
                wanted[pid] = struct.unpack_from("<I", value)[0]
        elif base in (_PT_STRING8, _PT_UNICODE, _PT_BINARY, _PT_OBJECT):
            for _ in range(values):
                if offset + 4 > len(raw):
                    return wanted
                size = struct.unpack_from("<I", raw, offset)[0]
                value = raw[offset + 4:offset + 4 + size]
                if len(value) != size:
                    return wanted
                offset += 4 + _padded(size)
                if multi:
                    continue
                if pid in (_PR_ATTACH_LONG_FILENAME, _PR_ATTACH_FILENAME, _PR_DISPLAY_NAME) and base != _PT_BINARY:
                    wanted[pid] = _string(value, "utf-16-le" if base == _PT_UNICODE else codepage)
                elif pid == _PR_ATTACH_DATA and base == _PT_BINARY:
                    wanted[pid] = value
        else:
            break  # a type we cannot size: what follows cannot be found
    return wanted


def _padded(size: int) -> int:
    return size + (-size % 4)
