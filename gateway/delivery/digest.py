"""Daily and weekly digests: a borough's rows wait, encrypted to the gateway's own key, and go as one
package per recipient at [schedule] hour, London time (weekly digests on Mondays).

A return's rows for a digest borough become one part per recipient: ciphertext in outbox/waiting/ beside a
JSON of ids and counts, and a ledger row (kind "part", state "waiting") recorded with the message's outcome,
so the rows count for the monthly report when their return is received. When a digest is due, each
recipient's parts are decrypted in memory, laid out in one sheet (each row keeps its own Gateway Reference
and Source Row), encrypted to the recipient's key and queued: the outbox file first, then one ledger
transaction that records the digest and marks its parts taken. The digest's id derives from the parts it
holds, so one rebuilt after a crash before that commit replaces the unsent file and is never a second
message. With no usable key for the recipient the digest is held like any package (held.py).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any

from ..config import LOCAL
from ..errors import GatewayError, NoUsableKey
from ..keys import Keyring
from ..ledger import Kind, Ledger, OutgoingRecord, OutgoingState
from ..mail import outgoing_id
from ..returns.read import Return
from ..returns.route import Batch
from ..rules import WEEKLY, Borough
from . import kept
from .held import HeldPackage
from .notices import held_notices
from .pack import Source, digest_message, parts_by_reason

if TYPE_CHECKING:
    from ..app import Gateway

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WaitingPart:
    """One return's rows for one recipient of a digest borough, encrypted to the gateway's own key."""

    id: str
    reference: str  # the return's gateway reference
    borough: Borough
    recipient: str
    rows: int
    reasons: dict[str, int]
    provider: str  # UKPRN
    received: datetime
    ciphertext: bytes = field(repr=False)

    def facts(self) -> dict[str, Any]:
        """What lies beside the ciphertext in clear: ids and counts only."""
        return {"id": self.id, "reference": self.reference, "borough": self.borough.code, "recipient": self.recipient,
                "rows": self.rows, "provider": self.provider, "received": self.received.isoformat()}

    def ledger_row(self) -> dict[str, Any]:
        return {"id": self.id, "kind": Kind.PART, "recipient": self.recipient, "borough": self.borough.code,
                "rows": self.rows, "sha256": "", "state": OutgoingState.WAITING, "reasons": json.dumps(self.reasons, sort_keys=True)}


def wait(table: Return, batch: Batch, source: Source, recipient: str, keyring: Keyring, own_fingerprint: str) -> WaitingPart:
    """Keep one recipient's rows of a return, encrypted to the gateway's own key, for the next digest."""
    part_id = outgoing_id(source.reference, Kind.PART, batch.borough.code, recipient)
    ciphertext = keyring.encrypt(kept.encode(table, batch, source), own_fingerprint)
    return WaitingPart(part_id, source.reference, batch.borough, recipient, len(batch.rows), batch.by_reason(),
                       source.provider.ukprn, source.received, ciphertext)


# -- when ---------------------------------------------------------------------------------------------
def latest_due(delivery: str, now: datetime, hour: int) -> datetime:
    """The last moment at or before `now` when a digest of this delivery was due (London time)."""
    local = now.astimezone(LOCAL)
    day = local.date() - timedelta(days=1 if local.time() < time(hour) else 0)
    if delivery == WEEKLY:
        day -= timedelta(days=day.weekday())  # back to Monday
    return _at(day, hour)


def next_due(delivery: str, now: datetime, hour: int) -> datetime:
    """The first moment after `now` when a digest of this delivery is due (London time)."""
    local = now.astimezone(LOCAL)
    day = local.date() + timedelta(days=1 if local.time() >= time(hour) else 0)
    if delivery == WEEKLY:
        day += timedelta(days=(7 - day.weekday()) % 7)  # on to Monday
    return _at(day, hour)


def _at(day: date, hour: int) -> datetime:
    return datetime.combine(day, time(hour), tzinfo=LOCAL)


def _iso(moment: datetime) -> str:
    """As the ledger writes times, so that text order is time order."""
    return moment.astimezone(UTC).isoformat(timespec="seconds")


# -- building -----------------------------------------------------------------------------------------
def send_digests(gateway: Gateway, now: datetime, due_only: bool = True) -> int:
    """Build and queue (or hold) every digest that is due at `now`: for each recipient of a digest borough,
    the parts recorded before the digest's latest due time. `due_only=False` takes every waiting part now
    (`gateway outbox --flush-digests`). Returns how many messages it queued or held."""
    ledger, rules, hour = gateway.ledger, gateway.rules, gateway.config.schedule.hour
    _tidy(gateway)
    groups: dict[tuple[str, str], list[OutgoingRecord]] = {}
    for row in ledger.waiting_parts():
        groups.setdefault((row.borough or "", row.recipient), []).append(row)
    made = 0
    for (code, recipient), rows in groups.items():
        borough = rules.boroughs.get(code)
        if borough is None or recipient not in borough.recipients:
            log.warning("%d part(s) waiting for a digest of borough %s: the recipient is no longer listed; kept until "
                        "the rules say who gets them", len(rows), code)
            continue
        when = now
        if due_only and borough.digest:  # a borough switched to "each" since: its waiting rows go now
            when = latest_due(borough.delivery, now, hour)
            rows = [row for row in rows if (row.queued_at or "") < _iso(when)]
        if rows:
            made += _digest(gateway, borough, recipient, rows, when)
    return made


def _digest(gateway: Gateway, borough: Borough, recipient: str, rows: list[OutgoingRecord], when: datetime) -> int:
    ledger, outbox, keyring, config = gateway.ledger, gateway.outbox, gateway.keyring, gateway.config
    ids = sorted(row.id for row in rows)
    item_id = outgoing_id(Kind.DIGEST, borough.code, recipient, *ids)
    reference = f"LDOR-{when.astimezone(LOCAL):%Y%m%d}-D{item_id[:9].upper()}"
    try:
        bundle = [(outbox.shelf_waiting.facts(i), keyring.decrypt(outbox.shelf_waiting.ciphertext(i)).data) for i in ids]
        parts = tuple(kept.part(gateway.rules, facts, plain, borough) for facts, plain in bundle)
    except (GatewayError, OSError, ValueError, KeyError, TypeError) as error:
        log.error("digest for borough %s, recipient %s: its waiting rows cannot be read (%s); kept", borough.code,
                  recipient, type(error).__name__)
        return 0
    total, reasons = sum(len(batch.rows) for _, batch, _ in parts), parts_by_reason(parts)
    try:
        fingerprint = keyring.key_for(recipient)
    except NoUsableKey as why:
        # Never sent in clear: the digest is kept, encrypted to the gateway's own key, until the recipient has a key.
        plain = json.dumps([{"facts": facts, "package": json.loads(data)} for facts, data in bundle]).encode()
        held = HeldPackage(item_id, reference, borough, recipient, total, reasons, str(why), "", when,
                           keyring.encrypt(plain, keyring.own_fingerprint()), kind=Kind.DIGEST)
        notices = held_notices([held], config)
        for notice in notices:
            outbox.put(notice.id, notice.raw)
        outbox.hold(item_id, held.ciphertext, held.facts())
        ledger.queue_digest(reference, [held.ledger_row(), *(n.ledger_row() for n in notices)], ids)
        queued = 1 + len(notices)
        log.warning("%s digest %s for borough %s held: no usable key for its recipient", borough.delivery, item_id, borough.code)
    else:
        message = digest_message(parts, borough, recipient, keyring, fingerprint, config.smtp.from_address,
                                 config.admin.email, item_id, reference, when)
        outbox.put(item_id, message.raw)
        ledger.queue_digest(reference, [message.ledger_row()], ids)
        queued = 1
        log.info("%s digest %s for borough %s queued: %d rows from %d return(s)", borough.delivery, item_id,
                 borough.code, total, len(parts))
    for part_id in ids:
        outbox.shelf_waiting.drop(part_id)
    return queued


def _tidy(gateway: Gateway) -> None:
    """Remove waiting copies a digest took before a crash stopped their removal. A copy the ledger does not
    know yet belongs to a message being handled again, which replaces it: left alone."""
    for part_id in gateway.outbox.shelf_waiting.ids():
        if gateway.ledger.outgoing_state(part_id) not in (None, OutgoingState.WAITING):
            gateway.outbox.shelf_waiting.drop(part_id)


# -- what waits ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Waiting:
    """A borough's rows waiting for its digest (counted once, however many recipients it has)."""

    code: str
    rows: int
    returns: int


def waiting(ledger: Ledger) -> list[Waiting]:
    per: dict[str, dict[str, list[OutgoingRecord]]] = {}
    for row in ledger.waiting_parts():
        per.setdefault(row.borough or "", {}).setdefault(row.recipient, []).append(row)
    found = []
    for code, recipients in sorted(per.items()):
        most = max(recipients.values(), key=lambda rows: sum(r.rows or 0 for r in rows))
        found.append(Waiting(code, sum(r.rows or 0 for r in most), len(most)))
    return found
