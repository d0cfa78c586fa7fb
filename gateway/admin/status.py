"""`gateway status`: how the gateway is doing, in a few plain lines for an administrator.

Queue lengths, held packages and why, rows waiting for each borough's digest, the last successful mailbox check, keys about to expire. From the
ledger and the keyring only, without connecting to any server; ids, addresses of organisations and
counts, never anything from a return.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from ..delivery.digest import next_due, waiting
from ..errors import KeyringError
from ..keys import EXPIRY_WARNING_DAYS
from ..ledger import MAILBOX_CHECKED, Ledger, OutgoingState

if TYPE_CHECKING:
    from ..app import Gateway

STATES = (OutgoingState.QUEUED, OutgoingState.HELD, OutgoingState.FAILED, OutgoingState.BOUNCED)


def status_text(gateway: Gateway, *, now: datetime | None = None, within_days: int = EXPIRY_WARNING_DAYS) -> str:
    """The gateway's state in plain English: what is waiting, what is stuck and why, what needs doing soon."""
    now = (now or gateway.clock()).astimezone(UTC)
    ledger = gateway.ledger
    lines = [f"Gateway status at {now:%Y-%m-%d %H:%M} UTC", "", _last_check(gateway, now)]

    counts = dict.fromkeys(STATES, 0)
    counts.update((state, n) for state, n in ledger.outgoing_counts().items() if state in counts)
    lines.append("Outbox: " + ", ".join(f"{counts[state]} {state}" for state in STATES) + ".")
    if counts[OutgoingState.FAILED] or counts[OutgoingState.BOUNCED]:
        lines.append("  Failed and bounced mail is not tried again by itself: `gateway outbox` lists it.")

    held = ledger.outgoing_in(OutgoingState.HELD)
    lines.append(f"Held packages (no usable key for the recipient): {len(held)}")
    for row in held:
        borough = gateway.rules.boroughs.get(row.borough) if row.borough is not None else None
        where = f"{borough.name} ({row.borough})" if borough else row.borough
        lines.append(f"  {row.id}  {where}  to {row.recipient}  {row.rows} row(s)  ref {row.reference}  "
                     f"held since {_when(row.queued_at)}: {row.last_error}")
    if held:
        lines.append("  Put the recipient's current public key in keys/: each is then sent by itself.")

    lines += _digests(gateway, now)

    soon, unusable = _keys(gateway, now, within_days)
    lines.append(f"Keys expiring within {within_days} days: {len(soon)}")
    lines += [f"  {line}" for line in soon]
    if unusable:
        lines.append(f"Keys in keys/ that cannot be used: {len(unusable)}")
        lines += [f"  {line}" for line in unusable]
    if soon or unusable:
        lines.append("  Ask each owner for a renewed key, put it in keys/ (removing a dead one) and run `gateway check`.")
    return "\n".join(lines) + "\n"


def _digests(gateway: Gateway, now: datetime) -> list[str]:
    """Rows waiting for each borough's daily or weekly digest, and when it goes."""
    found = waiting(gateway.ledger)
    lines = [f"Rows waiting for a digest: {sum(w.rows for w in found)}"]
    for item in found:
        borough = gateway.rules.boroughs.get(item.code)
        name = f"{borough.name} ({item.code})" if borough else item.code
        goes = (f"{borough.delivery} digest, goes at {next_due(borough.delivery, now, gateway.config.schedule.hour):%H:%M on %a %d/%m/%Y} London time"
                if borough and borough.digest else "goes at the next run")
        lines.append(f"  {name}: {item.rows} row(s) from {item.returns} return(s); {goes}")
    if found:
        lines.append("  `gateway outbox --flush-digests` sends them all now.")
    return lines


def _last_check(gateway: Gateway, now: datetime) -> str:
    """The newest mailbox check the ledger knows of: a recorded check, or failing that a message received."""
    ledger = gateway.ledger
    checked = _newest(ledger, MAILBOX_CHECKED)
    received = _newest(ledger, "received")
    if checked is not None and (received is None or checked >= received):
        return f"Last successful mailbox check: {_when(checked)} ({_ago(checked, now)})."
    if received is not None:
        return (f"Last successful mailbox check: {_when(received)} ({_ago(received, now)}), when the last message "
                "arrived; checks that find no mail are not recorded yet, so there may have been later ones.")
    return "Last successful mailbox check: unknown (the ledger records none yet)."


def _newest(ledger: Ledger, event: str) -> str | None:
    return ledger.newest_event(event)


def _keys(gateway: Gateway, now: datetime, within_days: int) -> tuple[list[str], list[str]]:
    """(keys usable now that stop working within the period, keys in keys/ that cannot be used at all)."""
    seconds = within_days * 86400
    soon, unusable = [], []
    keys = [(key, ", ".join(key.addresses) or "no address") for key in gateway.keyring.public_keys()]
    try:
        own = gateway.keyring.own_key()
    except KeyringError:
        own = None
    if own is not None and all(key.fingerprint != own.fingerprint for key, _ in keys):
        keys.append((own, "the gateway's own key, which providers encrypt to"))
    for key, whose in sorted(keys, key=lambda item: (item[0].expires or 0, item[1])):
        if not key.usable:
            unusable.append(f"{whose}  {key.fingerprint}: {key.trouble()}")
        elif key.expires_within(seconds, now.timestamp()):
            days = (key.expires_on - now.date()).days if key.expires_on else 0
            soon.append(f"{whose}  {key.fingerprint}: expires on {key.expires_on:%Y-%m-%d} (in {days} day(s))")
    return soon, unusable


def _when(at: str | None) -> str:
    if not at:
        return "an unknown time"
    try:
        return f"{datetime.fromisoformat(at).astimezone(UTC):%Y-%m-%d %H:%M} UTC"
    except ValueError:
        return at


def _ago(at: str, now: datetime) -> str:
    try:
        gap = now - datetime.fromisoformat(at)
    except (ValueError, TypeError):
        return "time unknown"
    if gap < timedelta(minutes=1):
        return "just now"
    if gap < timedelta(hours=2):
        return f"{int(gap.total_seconds() // 60)} minute(s) ago"
    if gap < timedelta(days=2):
        return f"{int(gap.total_seconds() // 3600)} hour(s) ago"
    return f"{gap.days} day(s) ago"
