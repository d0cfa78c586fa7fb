"""The daemon's dated jobs: boroughs' digests, key expiry warnings, reminders to providers, retention, the
monthly report.

Each is a plain function of (gateway, now) that queues mail through the one outbox and returns how many
messages it queued; scheduler.py decides when each is due, tests pass their own `now`. Each does its
work for a period once: it records a "job-done" event under a name for the job and the period (for
example "reminder 2026-11 10001234") and looks for it first, so a restart, or a job run again to catch
up, repeats nothing. The mail it queues has ids derived from the same names, so a crash between
queueing and recording sends nothing twice either.

Months and days are London time, as in the monthly report.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING

from ..config import LOCAL
from ..delivery import notices
from ..delivery.alerts import notify_admin, queue_once
from ..delivery.digest import send_digests
from ..errors import KeyringError, NoUsableKey
from ..keys import EXPIRY_WARNING_DAYS, Keyring, PublicKey
from ..ledger import Ledger, OutgoingState
from ..mail import Outgoing
from ..rules import Borough, Provider
from . import audit
from .report import monthly_report
from .report_book import xlsx_bytes

if TYPE_CHECKING:
    from ..app import Gateway

log = logging.getLogger(__name__)

WARN_DAYS = (EXPIRY_WARNING_DAYS, 14, 1)  # a key's recipients and the administrator are told when this many days are left
DONE = "job-done"


def already_done(ledger: Ledger, name: str) -> bool:
    """Whether the job named `name` (job and period) did its work before."""
    return any(event.event == DONE for event in ledger.events(name))


def _done_names(ledger: Ledger, prefix: str) -> set[str]:
    """The names starting with `prefix` of the jobs done: one look at the events for a whole month's reminders."""
    return ledger.done_references(DONE, prefix)


def _record_done(ledger: Ledger, name: str, **counts: int) -> None:
    ledger.event(name, DONE, **counts)


def _running_before(ledger: Ledger, moment: datetime) -> bool:
    """Whether the gateway was at work before `moment` (the ledger has an earlier event): a gateway
    installed in the middle of a month does not remind for, or report on, a month it did not see."""
    since = moment.astimezone(UTC).isoformat(timespec="seconds")
    return ledger.any_event_before(since)


def _queue(gateway: Gateway, reference: str, item: Outgoing) -> int:
    """1 if the message was queued now, 0 if it had been before."""
    return int(queue_once(gateway.ledger, gateway.outbox, reference, item))


# -- key expiry ---------------------------------------------------------------------------------------
@dataclass
class _Holder:
    """A key that packages are encrypted to, with the recipients that use it and the boroughs they receive for."""

    key: PublicKey
    recipients: dict[str, list[Borough]]


def key_expiry_warnings(gateway: Gateway, now: datetime) -> int:
    """Tell each recipient whose key is within 30, 14 or 1 days of expiring (or has expired), and the
    administrator, once per key and stage; the gateway's own key too (to the administrator)."""
    holders = _holders(gateway.keyring, gateway.rules.receiving())
    queued = 0
    for holder in holders.values():
        stage = _stage(holder.key, now)
        if stage is None:
            continue
        name = f"key-expiry {holder.key.fingerprint} {holder.key.expires_on} {stage}"
        if already_done(gateway.ledger, name):
            continue
        for recipient, boroughs in holder.recipients.items():
            queued += _queue(gateway, "keys", _recipient_warning(gateway, holder.key, stage, recipient, boroughs, now, name))
        queued += _admin_warning(gateway, holder, stage, now, name)
        _record_done(gateway.ledger, name, recipients=len(holder.recipients))
        log.info("key %s: expiry warning (%s) queued for %d recipient(s) and the administrator",
                 holder.key.fingerprint, stage, len(holder.recipients))
    queued += _own_key_warning(gateway, now)
    return queued


def _holders(keyring: Keyring, boroughs: tuple[Borough, ...]) -> dict[str, _Holder]:
    keys = keyring.public_keys()
    holders: dict[str, _Holder] = {}
    for borough in boroughs:
        for recipient in borough.recipients:
            key = _recipient_key(keyring, recipient, keys)
            if key is not None and key.expires is not None:
                holder = holders.setdefault(key.fingerprint, _Holder(key, {}))
                holder.recipients.setdefault(recipient, []).append(borough)
    return holders


def _recipient_key(keyring: Keyring, recipient: str, keys: list[PublicKey]) -> PublicKey | None:
    """The key the recipient's packages are encrypted to; when it has expired, the one that did."""
    try:
        fingerprint = keyring.key_for(recipient, keys)
        return next(k for k in keys if k.fingerprint == fingerprint)
    except NoUsableKey:
        pinned = keyring.pinned(recipient)
        mine = [k for k in keys if (k.fingerprint == pinned if pinned else recipient in k.addresses)]
        # Only expiry is this job's business: no key, several keys or a revoked one are `gateway check`'s.
        if mine and all(k.why_not == "expired" for k in mine):
            return max(mine, key=lambda k: k.expires or 0)
        return None


def _stage(key: PublicKey, now: datetime) -> str | None:
    """"expired", or the smallest of WARN_DAYS that the days left are within, or None when none is reached."""
    if key.expires is None or key.expires_on is None:
        return None
    if key.expires <= now.timestamp():
        return "expired"
    left = (key.expires_on - now.astimezone(UTC).date()).days
    reached = [days for days in WARN_DAYS if left <= days]
    return f"{min(reached)}d" if reached else None


def _left(key: PublicKey, now: datetime) -> str:
    days = (key.expires_on - now.astimezone(UTC).date()).days if key.expires_on else 0
    return "today" if days <= 0 else "tomorrow" if days == 1 else f"in {days} days"


def _when(key: PublicKey, stage: str, now: datetime) -> str:
    if stage == "expired":
        return f"expired on {key.expires_on:%Y-%m-%d}"
    return f"expires on {key.expires_on:%Y-%m-%d} ({_left(key, now)})"


def _recipient_warning(gateway: Gateway, key: PublicKey, stage: str, recipient: str, boroughs: list[Borough],
                       now: datetime, name: str) -> Outgoing:
    return notices.key_warning_to_recipient(gateway.config, key, _when(key, stage, now), stage == "expired", recipient,
                                            boroughs, name)


def _admin_warning(gateway: Gateway, holder: _Holder, stage: str, now: datetime, name: str) -> int:
    notice = notices.key_warning_to_admin(holder.key, _when(holder.key, stage, now), stage == "expired", holder.recipients)
    return int(notify_admin(gateway.config, gateway.ledger, gateway.outbox, "keys", *notice, key=name))


def _own_key_warning(gateway: Gateway, now: datetime) -> int:
    """Providers encrypt their returns to the gateway's own key: once it expires they cannot."""
    try:
        key = gateway.keyring.own_key()
    except KeyringError:
        return 0
    stage = _stage(key, now)
    if stage is None:
        return 0
    name = f"key-expiry {key.fingerprint} {key.expires_on} {stage}"
    if already_done(gateway.ledger, name):
        return 0
    notice = notices.own_key_expiring(gateway.config, key, _when(key, stage, now))
    queued = int(notify_admin(gateway.config, gateway.ledger, gateway.outbox, "keys", *notice, key=name))
    _record_done(gateway.ledger, name)
    return queued


# -- reminders ------------------------------------------------------------------------------------------
def send_reminders(gateway: Gateway, now: datetime) -> int:
    """From [schedule] reminder_day, remind each known provider without an accepted return this month, once.

    "Returned" is the monthly report's: a message of its received this month was accepted.
    """
    schedule = gateway.config.schedule
    local = now.astimezone(LOCAL)
    reminder_day = local.replace(day=schedule.reminder_day, hour=0, minute=0, second=0, microsecond=0)
    if local < reminder_day or not _running_before(gateway.ledger, reminder_day):
        return 0
    month = f"{local:%Y-%m}"
    figures = monthly_report(gateway.ledger, gateway.rules, month, schedule.due_day, now=now)
    returned = {line.ukprn for line in figures.providers if line.returned}
    due = local.date().replace(day=schedule.due_day)
    done = _done_names(gateway.ledger, f"reminder {month} ")
    queued, unreachable = 0, []
    for provider in gateway.rules.providers.values():
        name = f"reminder {month} {provider.ukprn}"
        if provider.ukprn in returned or name in done:
            continue
        to = provider.receipts_to or next((s for s in provider.senders if not s.startswith("@")), None)
        if to is None:
            unreachable.append(provider)
            continue
        queued += _queue(gateway, name, _reminder(gateway, provider, to, month, local.date(), due, name))
        _record_done(gateway.ledger, name)
    if unreachable:
        queued += _unreachable(gateway, unreachable, month)
    if queued:
        log.info("reminders for %s: %d queued", month, queued)
    return queued


def _reminder(gateway: Gateway, provider: Provider, to: str, month: str, today: date, due: date, name: str) -> Outgoing:
    return notices.reminder(gateway.config, provider, to, month, today, due, name)


def _unreachable(gateway: Gateway, providers: list[Provider], month: str) -> int:
    return int(notify_admin(gateway.config, gateway.ledger, gateway.outbox, "reminders",
                            *notices.not_reminded(providers, month), key=month))


# -- retention ------------------------------------------------------------------------------------------
def purge_old_details(gateway: Gateway, now: datetime) -> int:
    """Once a day: purge the ledger's details (ledger.Ledger.purge) and the set-aside copies in the outbox
    older than [schedule] retention_days, keeping counts and the audit trail's chain. Queues nothing."""
    name = f"retention {now.astimezone(UTC):%Y-%m-%d}"
    if already_done(gateway.ledger, name):
        return 0
    before = (now - timedelta(days=gateway.config.schedule.retention_days)).astimezone(UTC)
    stamp = before.isoformat(timespec="seconds")
    removed = _purge_set_aside(gateway, before)  # first: their ledger rows say what they were
    counts = gateway.ledger.purge(stamp)
    _record_done(gateway.ledger, name, set_aside=removed, **counts)
    log.info("retention: details before %s purged (%s; %d set-aside copies)", stamp,
             ", ".join(f"{kind} {count}" for kind, count in counts.items()), removed)
    return 0


def _purge_set_aside(gateway: Gateway, before: datetime) -> int:
    """Delete copies in outbox/bad/ of mail that failed or bounced before `before`, and of files no ledger
    row describes that were set aside before it."""
    removed = 0
    for item_id in gateway.outbox.set_aside_ids():
        path = gateway.outbox.bad / f"{item_id}.eml"
        row = gateway.ledger.outgoing(item_id)
        try:
            if row is None:
                when = datetime.fromtimestamp(path.stat().st_mtime, UTC)
            elif row.state in (OutgoingState.FAILED, OutgoingState.BOUNCED):
                stamp = row.sent_at or row.queued_at
                if stamp is None:  # as fromisoformat(None)'s TypeError did: no date, kept
                    continue
                when = datetime.fromisoformat(stamp)
            else:
                continue
        except (OSError, TypeError, ValueError):
            continue
        if when < before:
            path.unlink(missing_ok=True)
            removed += 1
    return removed


# -- the monthly report ---------------------------------------------------------------------------------
def email_monthly_report(gateway: Gateway, now: datetime) -> int:
    """From [schedule] report_day, email the administrator the report for the month before, once: the text in
    the body, the xlsx attached (counts and organisations' names only), and the audit trail's head."""
    schedule = gateway.config.schedule
    local = now.astimezone(LOCAL)
    month_start = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    if local.day < schedule.report_day or not _running_before(gateway.ledger, month_start):
        return 0
    month = f"{(local.date().replace(day=1) - timedelta(days=1)):%Y-%m}"
    name = f"monthly-report {month}"
    if already_done(gateway.ledger, name):
        return 0
    report = monthly_report(gateway.ledger, gateway.rules, month, schedule.due_day, now=now)
    xlsx = xlsx_bytes(report)
    _, check = audit.audit_verify_text(gateway.ledger)
    queued = _queue(gateway, name, notices.report_mail(gateway.config, name, month, report.text(), check, xlsx))
    _record_done(gateway.ledger, name)
    log.info("monthly report for %s queued for the administrator", month)
    return queued


JOBS: dict[str, Callable[[Gateway, datetime], int]] = {
    # First, on the hour: the receipt told each provider its rows go then. Its digests are named by the parts
    # they hold, and a part taken is marked so in the same transaction: a second run repeats nothing.
    "digests": send_digests,
    "key-expiry": key_expiry_warnings,
    "reminders": send_reminders,
    "retention": purge_old_details,
    "monthly-report": email_monthly_report,
}
