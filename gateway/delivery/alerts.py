"""The one way the gateway's own mail (alerts, notices, reminders, the report: their texts are in notices.py)
enters the outbox: at most once per deterministic id."""

from __future__ import annotations

from ..config import Config
from ..ledger import Ledger
from ..mail import Outgoing
from .notices import alert
from .outbox import Outbox


def notify_admin(config: Config, ledger: Ledger, outbox: Outbox, reference: str, subject: str, text: str,
                 key: str = "") -> bool:
    """Queue an alert (ids and counts only); False when the same alert was queued before."""
    item = alert(reference, config.admin.email, config.smtp.from_address, subject, text, key)
    return queue_once(ledger, outbox, reference, item)


def queue_once(ledger: Ledger, outbox: Outbox, reference: str, item: Outgoing) -> bool:
    """Put one message the gateway writes on its own in the outbox and the ledger, unless it was
    queued before (its id is deterministic, so a restart never sends it twice)."""
    if ledger.outgoing_state(item.id) is not None:
        return False
    outbox.put(item.id, item.raw)
    ledger.add_outgoing(reference, [item.ledger_row()])
    return True
