"""Delivery status notifications (RFC 3464 bounces) -> the outgoing message they are about.

A bounce comes from MAILER-DAEMON or postmaster, whom no provider registered: it must be recognised
before the sender check, or it would be quarantined as a stranger's mail. It is matched by the
Message-ID it quotes (in its message/rfc822 or text/rfc822-headers part, or an Original-Message-ID
header), or by the VERP envelope sender it was addressed to (ldor+<id>@...). What it returns is
never read as a return.

Anyone can write a delivery-status part: only one that names a message the gateway sent is taken as a
bounce (the pipeline treats any other like a stranger's mail), and of it only ids and codes are kept,
never a word the sender wrote.
"""

from __future__ import annotations

import email
import email.policy
import email.utils
import logging
import re
from dataclasses import dataclass
from email.message import Message
from email.parser import BytesHeaderParser, HeaderParser

from ..config import Config
from ..ledger import Kind, Ledger, OutgoingRecord, OutgoingState
from ..mail import Outgoing, decoded_body
from .notices import alert, bounced

log = logging.getLogger(__name__)

_VERP = re.compile(r"\+([0-9a-f]{32})@", re.IGNORECASE)
_STATUS = re.compile(r"\b([245]\.\d{1,3}\.\d{1,3})\b")
_DAEMONS = ("mailer-daemon", "postmaster", "mail-daemon", "mailerdaemon")
_ENVELOPE_HEADERS = ("Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-To", "To")
_ORIGINAL_ID_HEADERS = ("Original-Message-ID", "X-Original-Message-ID")
_HEADER_PARTS = ("text/rfc822-headers", "message/rfc822-headers", "message/global-headers")
_ACTIONS_BY_WEIGHT = ("failed", "delayed", "delivered", "relayed", "expanded")


@dataclass(frozen=True)
class Bounce:
    """What a delivery status notification says about one of the gateway's messages."""

    original_message_id: str  # without angle brackets; "" when the bounce quotes none
    status: str  # RFC 3463 code such as "5.1.1"; "" when not given
    action: str  # failed | delayed | delivered | relayed | expanded
    recipient: str  # the Final-Recipient address; "" when not given
    verp_id: str = ""  # the message id named by the envelope address the bounce came back to

    @property
    def item_ids(self) -> tuple[str, ...]:
        """Outbox ids this bounce may be about, the surest first (the gateway's Message-ID is <id@domain>)."""
        ids = [self.verp_id] if self.verp_id else []
        local = self.original_message_id.partition("@")[0]
        if local and local not in ids:
            ids.append(local)
        return tuple(ids)

    @property
    def failed(self) -> bool:
        return self.action == "failed"


def parse_bounce(raw: bytes) -> Bounce | None:
    """The bounce this message is, or None if it is not one. Never raises: odd mail is simply not a bounce."""
    try:
        message = email.message_from_bytes(raw, policy=email.policy.compat32)
        return _parse(message)
    except Exception:  # a malformed message is left to the normal path, which copes with anything
        return None


_SENT_STATES = (OutgoingState.SENT, OutgoingState.BOUNCED)  # only mail that left through the relay can come back


def original_of(ledger: Ledger, bounce: Bounce) -> OutgoingRecord | None:
    """The outgoing message the gateway sent that this bounce names, if any."""
    for item_id in bounce.item_ids:
        row = ledger.outgoing(item_id)
        if row is not None and row.state in _SENT_STATES:
            return row
    return None


def record_bounce(ledger: Ledger, config: Config, reference: str, bounce: Bounce) -> list[Outgoing]:
    """Record what a bounce (received under gateway reference `reference`) says of the gateway's message;
    return the administrator's alert, if one is due."""
    original = original_of(ledger, bounce)
    if original is None:
        # Backscatter from mail that forged the gateway's address, or a bounce quoting nothing: no alert,
        # or a flood of them could bury the administrator.
        log.warning("message %s is a delivery status notification about no message the gateway knows; moved to processed",
                    reference)
        ledger.event(reference, "bounce-unmatched", action=bounce.action, status=bounce.status)
        return []
    item_id = original.id
    ledger.event(reference, "bounce", id=item_id, action=bounce.action, status=bounce.status)
    if not bounce.failed:  # delayed, delivered, relayed: the receiving side is still trying, or done
        log.info("message %s: delivery status %s (%s) for outgoing %s", reference, bounce.action, bounce.status, item_id)
        return []
    ledger.mark_bounced(item_id, bounce.status, bounce.action)
    log.warning("outgoing %s (%s) bounced with status %s", item_id, original.kind, bounce.status or "not given")
    if original.kind == Kind.ALERT:
        return []  # never an alert about an alert: the administrator's own address is what failed
    notice = bounced(original, bounce.status, bounce.action, reference)
    return [alert(original.reference, config.admin.email, config.smtp.from_address, *notice, key=item_id)]


def _parse(message: Message) -> Bounce | None:
    verp_id = _verp_id(message)
    status_part = _part(message, ("message/delivery-status", "message/global-delivery-status"))
    if status_part is None:
        # An old-style bounce (plain text) is still one when a mail daemon sent it to a VERP address.
        if verp_id and _from_daemon(message):
            return Bounce(_original_id(message, None), _first_status(message), "failed", "", verp_id)
        return None
    blocks = _blocks(status_part)
    recipients = [b for b in blocks if b.get("Final-Recipient") or b.get("Action")] or blocks
    chosen = min(recipients, key=lambda b: _weight(b.get("Action", "")), default=None)
    action = _clean(chosen.get("Action", "")).lower() if chosen is not None else ""
    if action not in _ACTIONS_BY_WEIGHT:
        action = ""  # the field is the sender's text: only a word RFC 3464 defines is kept (and stored)
    status_text = _clean(chosen.get("Status", "")) if chosen is not None else ""
    match = _STATUS.search(status_text)
    status = match.group(1) if match else ""
    if not action:
        action = "failed" if status.startswith("5") else "delayed" if status.startswith("4") else "failed"
    recipient = ""
    if chosen is not None:
        for field in ("Final-Recipient", "Original-Recipient"):
            value = _clean(chosen.get(field, ""))
            if value:
                recipient = value.partition(";")[2].strip() if ";" in value else value
                break
    return Bounce(_original_id(message, blocks[0] if blocks else None), status, action, recipient.lower(), verp_id)


def _part(message: Message, types: tuple[str, ...]) -> Message | None:
    for part in message.walk():
        if part.get_content_type() in types:
            return part
    return None


def _blocks(part: Message) -> list[Message]:
    """The per-message block, then one block per recipient."""
    payload = part.get_payload()
    if isinstance(payload, list) and all(isinstance(p, Message) for p in payload):
        return [p for p in payload if isinstance(p, Message)]
    text = decoded_body(part).decode("utf-8", "replace").replace("\r\n", "\n")
    return [HeaderParser().parsestr(block.strip() + "\n", headersonly=True)
            for block in re.split(r"\n\s*\n", text) if block.strip()]


def _original_id(message: Message, per_message: Message | None) -> str:
    """The Message-ID of the returned message."""
    for part in message.walk():
        kind = part.get_content_type()
        headers = None
        if kind == "message/rfc822":
            payload = part.get_payload()
            headers = payload[0] if isinstance(payload, list) and payload and isinstance(payload[0], Message) else None
        elif kind in _HEADER_PARTS:
            headers = BytesHeaderParser().parsebytes(decoded_body(part).lstrip())
        if headers is not None and headers.get("Message-ID"):
            return _bare_id(headers["Message-ID"])
    for source in (per_message, message):
        if source is None:
            continue
        for name in _ORIGINAL_ID_HEADERS:
            if source.get(name):
                return _bare_id(source[name])
    return ""


def _verp_id(message: Message) -> str:
    for name in _ENVELOPE_HEADERS:
        for value in message.get_all(name, []):
            match = _VERP.search(str(value))
            if match:
                return match.group(1).lower()
    return ""


def _from_daemon(message: Message) -> bool:
    senders = [address for _, address in email.utils.getaddresses(message.get_all("From", []))]
    return any(address.partition("@")[0].lower() in _DAEMONS for address in senders) or \
        str(message.get("Return-Path", "")).strip() == "<>"


def _first_status(message: Message) -> str:
    for part in message.walk():
        if part.get_content_maintype() == "text":
            match = _STATUS.search(decoded_body(part).decode("utf-8", "replace"))
            if match:
                return match.group(1)
    return ""


def _weight(action: str) -> int:
    action = _clean(action).lower()
    return _ACTIONS_BY_WEIGHT.index(action) if action in _ACTIONS_BY_WEIGHT else len(_ACTIONS_BY_WEIGHT)


def _bare_id(value: str) -> str:
    return _clean(value).strip().strip("<>").strip()


def _clean(value: object) -> str:
    return " ".join(str(value).split())

