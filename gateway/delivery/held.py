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
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..errors import GatewayError, NoUsableKey
from ..keys import Keyring
from ..ledger import Kind, OutgoingState, utcnow
from ..mail import outgoing_id
from ..returns.read import Return
from ..returns.route import Batch
from ..rules import Borough, Provider
from . import kept
from .pack import Source, package_message

if TYPE_CHECKING:
    from ..app import Gateway

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

    def facts(self) -> dict[str, Any]:
        """What lies beside the ciphertext in clear: ids and counts only."""
        return {
            "id": self.id, "reference": self.reference, "borough": self.borough.code, "recipient": self.recipient,
            "rows": self.rows, "reasons": self.reasons, "why": self.why, "provider": self.provider,
            "received": self.received.isoformat(), "held_at": utcnow(), "kind": self.kind,
        }

    def ledger_row(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "recipient": self.recipient, "borough": self.borough.code,
                "rows": self.rows, "sha256": "", "state": OutgoingState.HELD, "last_error": self.why,
                "reasons": json.dumps(self.reasons, sort_keys=True)}


def hold(table: Return, batch: Batch, source: Source, recipient: str, why: str, keyring: Keyring,
         own_fingerprint: str) -> HeldPackage:
    """Encrypt one recipient's batch to the gateway's own key, to be kept until the recipient has a key."""
    # The id package_message gives this package, so the released message is the one it would have been.
    item_id = outgoing_id(source.reference, Kind.PACKAGE, batch.borough.code, recipient)
    ciphertext = keyring.encrypt(kept.encode(table, batch, source), own_fingerprint)
    return HeldPackage(item_id, source.reference, batch.borough, recipient, len(batch.rows), batch.by_reason(), why,
                       source.provider.ukprn, source.received, ciphertext)


def release_held(gateway: Gateway) -> int:
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
                message = kept.rebuild_digest(gateway, facts, plain, borough, recipient, fingerprint)
            else:
                table, batch, held_back = kept.decode(plain, borough)
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
