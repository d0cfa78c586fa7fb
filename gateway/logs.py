"""Logging setup and the redaction filter.

The policy is that the gateway logs ids, UIDs, counts and row numbers only. The filter is a backstop
for the day a message slips through: anything shaped like a postcode, a ULN or an email address is
masked before a record is written.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from typing import TextIO

_PATTERNS = (
    re.compile(r"\b[A-Z]{1,2}[0-9][A-Z0-9]? ?[0-9][A-Z]{2}\b", re.IGNORECASE),  # postcodes
    re.compile(r"(?<![0-9A-Fa-f])[0-9]{10}(?![0-9A-Fa-f])"),  # ULNs (not inside hex ids)
    re.compile(r"[^\s<>@'\"]+@[^\s<>@'\"]+\.[A-Za-z]{2,}"),  # email addresses
)
# Libraries that log message or file content at DEBUG: python-gnupg logs what gpg outputs (decrypted
# data included), imaplib and smtplib echo protocol lines.
# msoffcrypto logs passwords and derived keys at DEBUG.
_QUIET = ("gnupg", "msoffcrypto", "imaplib", "mail.log", "aiosmtpd", "apscheduler")


def describe(error: BaseException) -> str:
    """An exception's type and where it was raised, never its message (which may quote data)."""
    trace = error.__traceback__
    while trace is not None and trace.tb_next is not None:
        trace = trace.tb_next
    where = f" at {trace.tb_frame.f_code.co_filename.rsplit('/', 1)[-1]}:{trace.tb_lineno}" if trace else ""
    return f"{type(error).__name__}{where}"


def redact(text: str) -> str:
    for pattern in _PATTERNS:
        text = pattern.sub("[redacted]", text)
    return text


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = ()
        if record.exc_info:
            # A traceback's text can carry a value from a library's own message: keep type and place only.
            error = record.exc_info[1]
            record.msg = f"{record.msg} [{describe(error) if error else 'error'}]"
            record.exc_info = None
            record.exc_text = None
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps({
            "time": self.formatTime(record), "level": record.levelname, "logger": record.name,
            "message": record.getMessage(),
        })


def setup(level: str = "INFO", json_lines: bool = False, stream: TextIO | None = None) -> None:
    """Configure the root logger once; a second call replaces the gateway's handler."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_gateway", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler._gateway = True  # type: ignore[attr-defined]
    handler.addFilter(RedactingFilter())
    handler.setFormatter(JsonFormatter() if json_lines else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(level)
    for name in _QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
