"""Packages held for want of a recipient's key: kept encrypted to the gateway's own key, sent by themselves
once a usable key for the recipient is in keys/.

Never sent in clear, never dropped. On disk a held package is ciphertext (outbox/held/<id>.gpg) beside
a JSON of ids and counts; it is decrypted in memory only, at release, and encrypted again straight
away to the recipient's key into the normal package message, under the id it would have had.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import TYPE_CHECKING

from .errors import GatewayError, NoUsableKey
from .keys import Keyring
from .ledger import Kind, OutgoingState, utcnow
from .mail import outgoing_id
from .pack import Source, package_message
from .read import Return, Row
from .route import Batch
from .rules import Borough, Provider
from .validate import Accepted

if TYPE_CHECKING:
    from .app import Gateway

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HeldPackage:
    """One recipient's package that could not be encrypted to its key; what the outbox and ledger keep of it."""

    id: str
    reference: str
    borough: Borough
    recipient: str
    rows: int
    reasons: dict[str, int]
    why: str
    provider: str  # UKPRN
    received: datetime
    ciphertext: bytes = field(repr=False)  # the batch, encrypted to the gateway's own key
    kind: Kind = Kind.PACKAGE  # or DIGEST: a daily or weekly digest's returns (digest.py)

    def facts(self) -> dict:
        """What lies beside the ciphertext in clear: ids and counts only."""
        return {
            "id": self.id, "reference": self.reference, "borough": self.borough.code, "recipient": self.recipient,
            "rows": self.rows, "reasons": self.reasons, "why": self.why, "provider": self.provider,
            "received": self.received.isoformat(), "held_at": utcnow(), "kind": self.kind,
        }

    def ledger_row(self) -> dict:
        return {"id": self.id, "kind": self.kind, "recipient": self.recipient, "borough": self.borough.code,
                "rows": self.rows, "sha256": "", "state": OutgoingState.HELD, "last_error": self.why,
                "reasons": json.dumps(self.reasons, sort_keys=True)}


def hold(table: Return, batch: Batch, source: Source, recipient: str, why: str, keyring: Keyring,
         own_fingerprint: str) -> HeldPackage:
    """Encrypt one recipient's batch to the gateway's own key, to be kept until the recipient has a key."""
    # The id package_message gives this package, so the released message is the one it would have been.
    item_id = outgoing_id(source.reference, Kind.PACKAGE, batch.borough.code, recipient)
    ciphertext = keyring.encrypt(_encode(table, batch, source), own_fingerprint)
    return HeldPackage(item_id, source.reference, batch.borough, recipient, len(batch.rows), batch.by_reason(), why,
                       source.provider.ukprn, source.received, ciphertext)


def release_held(gateway: "Gateway") -> int:
    """Queue every held package whose recipient now has a usable key; return how many were released.

    Each is decrypted in memory, encrypted to the recipient's key into the normal package message with
    the same id, queued, recorded (held -> queued; the next flush sends it), and its held copy removed.
    """
    outbox, ledger, keyring, rules = gateway.outbox, gateway.ledger, gateway.keyring, gateway.rules
    waiting = outbox.held_ids()
    if not waiting:
        return 0
    # A daemon imported keys/ when it started: a key put there since must count.
    keyring.import_folder(gateway.config.paths.keys)
    keys = keyring.public_keys()
    released = 0
    for item_id in waiting:
        try:
            facts = outbox.held_facts(item_id)
        except (OSError, ValueError):
            log.error("held package %s: its facts file cannot be read; left in place", item_id)
            continue
        state = ledger.outgoing_state(item_id)
        if state is None:
            continue  # its message is being handled again after a crash, which replaces this copy
        if state != OutgoingState.HELD:
            outbox.unhold(item_id)  # released already; the crash came before the copy was removed
            continue
        borough = rules.boroughs.get(facts["borough"])
        recipient = facts["recipient"]
        if borough is None or recipient not in borough.recipients:
            log.warning("held package %s: its recipient is no longer listed for borough %s; kept until the rules say who gets it",
                        item_id, facts["borough"])
            continue
        try:
            fingerprint = keyring.key_for(recipient, keys)
        except NoUsableKey:
            continue
        provider = rules.providers.get(facts["provider"]) or Provider(facts["provider"], facts["provider"], ())
        try:
            plain = keyring.decrypt(outbox.held_ciphertext(item_id)).data
            if facts.get("kind") == Kind.DIGEST:
                from .digest import rebuild  # digest.py builds on this module

                message = rebuild(gateway, facts, plain, borough, recipient, fingerprint)
            else:
                table, batch, held_back = _decode(plain, borough)
                source = Source(provider, facts["reference"], datetime.fromisoformat(facts["received"]), held_back)
                message = package_message(table, batch, source, recipient, keyring, fingerprint,
                                          gateway.config.smtp.from_address, gateway.config.admin.email)
        except (GatewayError, OSError, ValueError, KeyError, TypeError) as error:
            log.error("held package %s cannot be released (%s); kept", item_id, type(error).__name__)
            continue
        if message.id != item_id:
            log.error("held package %s was rebuilt under another id; kept", item_id)
            continue
        outbox.put(item_id, message.raw)
        ledger.release(item_id, message.ledger_row()["sha256"])
        outbox.unhold(item_id)
        released += 1
        log.info("held %s %s released for borough %s (%d rows)", facts.get("kind", Kind.PACKAGE), item_id, borough.code, message.rows)
    return released


# -- the batch, as JSON, for the gateway's eyes only ----------------------------------------------
def _encode(table: Return, batch: Batch, source: Source) -> bytes:
    return json.dumps({
        "headings": list(table.headings),
        "columns": dict(table.columns),  # which column holds which field of the return
        "rows": [[a.row.number, [_value(v) for v in a.row.values], a.postcode, a.reason,
                  [list(note) for note in a.notes], a.home, a.routed_by] for a in batch.rows],
        "held_back": [list(item) for item in source.held_back],
    }).encode()


def _decode(data: bytes, borough: Borough) -> tuple[Return, Batch, tuple[tuple[str, int], ...]]:
    """The table, the batch and the return's held-back counts; a package held before rows carried their
    notes and home authority (four items a row) rebuilds with none."""
    held = json.loads(data)
    table = Return(sheet="", header={}, headings=tuple(held["headings"]),
                   columns=held.get("columns", {}), heading_row=0, rows=())
    rows = tuple(_accepted(*row) for row in held["rows"])
    return table, Batch(borough, rows), tuple((why, count) for why, count in held.get("held_back", ()))


def _accepted(number: int, values: list, postcode: str, reason: str, notes: list = (), home: str | None = None,
              routed_by: str = "") -> Accepted:
    return Accepted(Row(number, tuple(_unvalue(v) for v in values)), postcode, reason,
                    tuple((rule, detail) for rule, detail in notes), home, routed_by)


_TYPES = (("datetime", datetime), ("date", date), ("time", time))  # datetime first: it is also a date


def _value(value: object) -> object:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    for tag, kind in _TYPES:
        if isinstance(value, kind):
            return {tag: value.isoformat()}
    if isinstance(value, timedelta):
        return {"timedelta": value.total_seconds()}
    return str(value)


def _unvalue(value: object) -> object:
    if not isinstance(value, dict):
        return value
    (tag, text), = value.items()
    if tag == "timedelta":
        return timedelta(seconds=text)
    return dict(_TYPES)[tag].fromisoformat(text)
