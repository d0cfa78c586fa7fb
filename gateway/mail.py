"""Composing the gateway's own messages: deterministic Message-IDs, plain-text bodies, attachments."""

from __future__ import annotations

import email.policy
import hashlib
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage, Message
from email.utils import format_datetime, formatdate
from typing import Any

from .ledger import Kind

# CRLF line ends, as relays expect; headers up to RFC 5322's 998 characters so a subject is not
# folded onto a line of its own, which some mail clients show with a stray leading space.
_WIRE = email.policy.SMTP.clone(max_line_length=998)


@dataclass(frozen=True)
class Outgoing:
    """A complete message ready for the outbox, with what the ledger records of it (no personal data)."""

    id: str  # also the outbox file name and the Message-ID's left part
    kind: Kind
    recipient: str
    raw: bytes
    borough: str = ""
    rows: int = 0
    reasons: str | None = None  # a package's counts by reason, JSON {"Leaver": 3, ...}, for the monthly report

    def ledger_row(self) -> dict[str, Any]:
        return {
            "id": self.id, "kind": self.kind, "recipient": self.recipient, "borough": self.borough,
            "rows": self.rows, "sha256": hashlib.sha256(self.raw).hexdigest(), "reasons": self.reasons,
        }


def outgoing_id(*parts: str) -> str:
    """The same inputs always give the same id, so a resend after a crash is recognisably the same message."""
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def _attach(message: EmailMessage, attachments: tuple[tuple[str, str, bytes], ...]) -> None:
    for filename, mime_type, data in attachments:
        maintype, _, subtype = mime_type.partition("/")
        # The gateway's text attachments (findings csv) are UTF-8: say so, or readers guess ASCII.
        params = {"charset": "utf-8"} if maintype == "text" else None
        message.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename, params=params)


def _headed(item_id: str, sender: str, to: str, subject: str, when: datetime | None) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = format_datetime(when) if when else formatdate(usegmt=True)
    message["Message-ID"] = f"<{item_id}@{sender.rpartition('@')[2] or 'ldor-gateway'}>"
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: auto-responders must not answer it
    return message


def entity(body: str, attachments: tuple[tuple[str, str, bytes], ...] = ()) -> bytes:
    """A MIME entity (no envelope headers) holding a text and attachments: what PGP/MIME encrypts."""
    part = EmailMessage()
    part.set_content(body)
    _attach(part, attachments)
    del part["MIME-Version"]
    return part.as_bytes(policy=_WIRE)


def compose_encrypted(*, item_id: str, sender: str, to: str, subject: str, ciphertext: bytes,
                      when: datetime | None = None) -> bytes:
    """An RFC 3156 PGP/MIME encrypted message, as Thunderbird and GpgOL read it."""
    message = _headed(item_id, sender, to, subject, when)
    message.set_content("This is an OpenPGP/MIME encrypted message (RFC 3156).\n")
    message.make_mixed()
    message.set_type("multipart/encrypted")
    message.set_param("protocol", "application/pgp-encrypted")
    message.set_payload([])
    control = EmailMessage()
    control.set_content(b"Version: 1\r\n", maintype="application", subtype="pgp-encrypted", cte="7bit")
    del control["MIME-Version"]
    body = EmailMessage()
    body.set_content(ciphertext, maintype="application", subtype="octet-stream", cte="7bit",
                     disposition="inline", filename="encrypted.asc")
    del body["MIME-Version"]
    message.attach(control)
    message.attach(body)
    return message.as_bytes(policy=_WIRE)


def compose(
    *,
    item_id: str,
    sender: str,
    to: str,
    subject: str,
    body: str,
    attachments: tuple[tuple[str, str, bytes], ...] = (),
    when: datetime | None = None,
) -> bytes:
    """A plain-text message; attachments are (file name, MIME type, bytes)."""
    message = _headed(item_id, sender, to, subject, when)
    message.set_content(body)
    _attach(message, attachments)
    return message.as_bytes(policy=_WIRE)


def decoded_body(part: Message) -> bytes:
    """A received part's body with its transfer encoding undone; b"" for a multipart or an empty part."""
    data = part.get_payload(decode=True)
    return data if isinstance(data, bytes) else b""
