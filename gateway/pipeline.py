"""One message through the steps, each step recorded in the ledger. Only this module knows their order.

    mailbox -> unpack/decrypt -> read -> validate -> route -> pack+encrypt -> outbox -> send
                                                            \\-> receipt to the provider (same outbox)

A message leaves the mailbox folder only after everything it gave rise to is durably queued.
A delivery status notification (bounce) is told apart first: it is about a message the gateway sent,
never a return, and its sender is no provider. One that names no message the gateway sent is mail
like any other.

Files are opened and read in a child process within limits (isolate.py). Should the gateway itself
die while handling a message anyway, the ledger's count of attempts shows it on the next run: after
MAX_HANDLING_DEATHS the message is set aside and answered, and the mail behind it goes on.
"""

from __future__ import annotations

import collections
import contextlib
import email.parser
import email.policy
import hashlib
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, cast

from .app import Gateway
from .config import secret
from .delivery import notices
from .delivery.alerts import notify_admin
from .delivery.bounce import original_of, parse_bounce, record_bounce
from .delivery.deliver import deliver, flush_of
from .delivery.digest import WaitingPart, next_due, wait
from .delivery.held import HeldPackage, hold
from .delivery.notices import held_notices
from .delivery.pack import Source, package_message
from .delivery.receipt import FileFacts, Letterhead, Tally, acknowledgement, rejection
from .delivery.send import Delivery
from .errors import (
    HostileFile,
    KeyringError,
    NoUsableKey,
    OwnKeyLocked,
    SenderNotRegistered,
    UnknownSender,
)
from .intake.inbox import Inbox, InboxMessage
from .intake.unpack import (
    NOTHING_ATTACHED,
    Attachment,
    Unpacked,
    parse,
    sender_of,
    unpack,
)
from .isolate import warm_up
from .keys import RunKeys
from .ledger import FileRecord, Ledger, MessageRecord, MessageState, Outcome, OutgoingState
from .logs import describe
from .mail import Outgoing
from .returns.examine import DUPLICATE_DAYS, duplicate_advice, examine
from .returns.validate import Finding
from .rules import Provider
from .workers import DIED, DONE, EXAMINED, Workers

log = logging.getLogger(__name__)

# A message on which the process died this often is set aside on the next run. Not 2: an operator's or a
# supervisor's restarts (kill -9, a reboot) each fall on the first unfinished message, and two in a row
# must not turn a good return into a quarantined one; a message that really kills the process does so each time.
MAX_HANDLING_DEATHS = 3
# Worker processes for a run with several messages waiting: one a core (the parent's own share is small).
WORKERS = min(len(os.sched_getaffinity(0)), 8)

_KILLED_US = (
    "Your email could not be handled: opening it stopped the gateway, so it has been set aside for the "
    "administrator and nothing in it has been opened or forwarded. Please save the return again from "
    "Excel as an Excel Workbook (.xlsx), check that it opens, and send it again in a new email; if it is "
    "very large, split it into several files and send each."
)
_OVER_LIMITS = (
    " Nothing in this email has been forwarded. The gateway accepts files of up to 50 MB, decrypted and "
    "unzipped: split a larger return into several files and send each, saved as an Excel Workbook (.xlsx)."
)


@dataclass
class Result:
    """What handling one message produced (counts only)."""

    state: str  # MessageState.QUEUED | QUARANTINED, or WAITING (the gateway's own key failed)
    outgoing: list[Outgoing] = field(default_factory=list)
    held: list[HeldPackage] = field(default_factory=list)
    waiting: list[WaitingPart] = field(default_factory=list)  # rows kept for a borough's daily or weekly digest
    counts: dict[str, Any] = field(default_factory=lambda: {"rows_read": 0, "rows_forwarded": 0, "rows_rejected": 0, "warnings": 0})
    outcome: Outcome = Outcome.ACCEPTED
    provider: str = ""
    files: list[tuple[str, str]] = field(default_factory=list)  # (hash of the decrypted return, its reference)
    events: list[tuple[str, str, dict[str, object]]] = field(default_factory=list)  # (reference, event, detail): written when settled
    # The duplicate look-ups made, (provider, hash, reference, the earlier file's reference or None): a worker's
    # answers came before the messages ahead of it were settled, and are checked again then.
    asked: list[tuple[str, str, str, str | None]] = field(default_factory=list)
    locked: OwnKeyLocked | None = None  # the gateway's own key failed: nothing worked out, the message waits


@dataclass(frozen=True)
class MailboxRun:
    seen: int = 0
    processed: int = 0
    quarantined: int = 0
    delivery: Delivery = Delivery()
    released: int = 0  # held packages whose recipient now has a key
    digests: int = 0  # digests (and notices of held ones) queued because they were due
    waiting: int = 0  # left in the mailbox: the gateway's own key could not decrypt them (or workers kept stopping)


def run_once(gateway: Gateway, retry_now: bool = True, inbox: Inbox | None = None) -> MailboxRun:
    """Handle everything waiting in the mailbox, then deliver once: release held packages that now can be,
    queue the digests that are due and try the outbox.

    `retry_now` tries deferred messages before their next attempt is due, as an administrator's
    `run --once` expects; the daemon's periodic runs pass False to follow the backoff. `inbox` is a
    session already open (the daemon's, which it keeps between runs); without it, one is opened.
    """
    settings = gateway.config.mailbox
    processed = quarantined = seen = waiting = 0
    flushing = flush_of(gateway, retry_now)  # begun while workers handle a burst, ended by `deliver`
    try:
        with contextlib.nullcontext(inbox) if inbox is not None else Inbox(settings, gateway.tokens) as session:
            uidvalidity = session.uidvalidity()
            keys = RunKeys(gateway.keyring)
            archive = _Archive(gateway, session, uidvalidity)
            for message, state in _each_handled(gateway, session, settings.folder, uidvalidity, keys, flushing.step):
                seen += 1
                if state == WAITING:
                    waiting += 1
                    continue  # not answered, not moved: handled again once the gateway's key works
                archive.add(message, state)
                if state == MessageState.QUARANTINED:
                    quarantined += 1
                else:
                    processed += 1
            archive.move()
        if not waiting:
            _own_key_works_again(gateway)
    finally:
        # Even when the mailbox cannot be reached, what is queued goes out.
        delivered = deliver(gateway, retry_now=retry_now, flushing=flushing)
    released, digests, delivery = delivered.released, delivered.digests, delivered.delivery
    run = MailboxRun(seen, processed, quarantined, delivery, released, digests, waiting)
    # A run that found and did nothing is not news: the daemon makes one every time it is woken.
    level = logging.INFO if (seen or released or digests or delivery.sent or delivery.deferred or delivery.failed) else logging.DEBUG
    log.log(level, "mailbox run: %d messages, %d processed, %d quarantined, %d left in the mailbox; %d held package(s) released; "
            "outbox: %d sent, %d deferred, %d failed, %d waiting",
            seen, processed, quarantined, waiting, released, delivery.sent, delivery.deferred, delivery.failed, delivery.waiting)
    return run


def _each_handled(gateway: Gateway, session: Inbox, mailbox: str, uidvalidity: int, keys: RunKeys,
                  send: Callable[[], bool]) -> Iterator[tuple[InboxMessage, str]]:
    """Each message with the state `handle` gives it, in mailbox order: one alone is handled here, several
    on every core (_in_workers), which meanwhile `send()` what is queued (one message a call; False when
    nothing is left to send)."""
    uids = session.waiting()
    if not uids:
        return
    warm_up()  # outside any message's handling, which a death would count against
    # After the process died while handling mail, one message at a time: a death then counts against the
    # message being handled alone, never against the good ones workers had in hand beside it.
    if len(uids) < 2 or WORKERS < 2 or gateway.ledger.died_handling(mailbox, uidvalidity):
        for message in session.messages(uids):
            yield message, handle(gateway, mailbox, uidvalidity, message, keys)
        return
    # Forked before any message is fetched, so that no worker carries a copy of another's.
    yield from _in_workers(gateway, lambda: session.messages(uids), mailbox, uidvalidity, keys, send)


@dataclass
class _Job:
    """A message on its way through the workers, in mailbox order."""

    message: InboxMessage
    record: MessageRecord | None = None
    state: str | None = None  # known without a worker's help, or once settled
    result: Result | None = None  # the worker's
    examined: bool = False  # the worker said its content was read and checked: the attempt is no longer counted
    deaths: int = 0  # workers that stopped on it in this run


def _in_workers(gateway: Gateway, fetch: Callable[[], Iterator[InboxMessage]], mailbox: str, uidvalidity: int,
                keys: RunKeys, send: Callable[[], bool]) -> Iterator[tuple[InboxMessage, str]]:
    """`handle` for many messages, the work (decrypt, read, check, route, pack, encrypt) done by worker
    processes, everything else here: this process alone speaks to the mailbox, the ledger and the outbox,
    and settles each message in mailbox order as `handle` would, after the ones before it.

    An attempt is counted from when a worker takes a message until it says the content was read and
    checked, as in one process. A worker that stops on a message is a handling death: the message is
    offered again, and set aside by `admit` once the ledger counts MAX_HANDLING_DEATHS; deaths after its
    content was checked are not counted there (as in one process), and after as many in this run the
    message is left in the mailbox for the next."""
    ledger = gateway.ledger
    with contextlib.suppress(KeyringError):  # looked at once, before the workers are forked; a failure shows per message
        keys.public_keys(), keys.own_fingerprint(), keys.own_public()

    def job_work(job: object, examined: Callable[[], None]) -> Result:
        record, message = cast(tuple[MessageRecord, InboxMessage], job)
        return work(gateway, keys, record, message, examined, lambda provider, sha256, reference: None)

    line: collections.deque[_Job] = collections.deque()
    again: collections.deque[_Job] = collections.deque()  # offered again after a worker stopped on it
    taken: dict[object, _Job] = {}
    more = True  # messages not yet taken from the mailbox
    sending = False  # messages queued and not yet sent (as far as is known)
    with Workers(WORKERS, job_work) as workers:
        messages = fetch()
        while True:
            while workers.idle() and (again or (more and len(line) < WORKERS * 4)):
                if again:
                    job = again.popleft()  # already in line, in its place
                else:
                    message = next(messages, None)
                    if message is None:
                        more = False
                        break
                    job = _Job(message)
                    line.append(job)
                admitted = admit(gateway, mailbox, uidvalidity, job.message, keys)
                if isinstance(admitted, MessageRecord):
                    job.record, job.examined = admitted, False
                    taken[id(job)] = job
                    workers.give(id(job), (admitted, job.message))
                else:
                    job.state = admitted
            while line and (line[0].state is not None or line[0].result is not None):
                job = line.popleft()
                if job.state is None:
                    job.state = _settle_worked(gateway, job, mailbox, uidvalidity, keys)
                    sending = True
                yield job.message, job.state
            if not line and not more:
                return
            events = list(workers.events(0 if sending else None))
            if not events and sending:
                sending = send()  # while the workers work, what is queued goes out
            for event in events:
                job = taken[event.key]
                if event.kind == EXAMINED and not job.examined:
                    ledger.forget_attempt(job.record)  # type: ignore[arg-type]
                    job.examined = True
                elif event.kind == DONE:
                    job.result = event.value  # type: ignore[assignment]
                    del taken[event.key]
                elif event.kind == DIED:
                    del taken[event.key]
                    log.error("message %s (UID %d): the worker handling it stopped", job.record.reference, job.message.uid)  # type: ignore[union-attr]
                    if job.examined:  # a death of the gateway's own work: not counted in the ledger, so counted here
                        job.deaths += 1
                    if job.deaths < MAX_HANDLING_DEATHS:
                        again.append(job)  # `admit` sets it aside once the ledger's count reaches MAX_HANDLING_DEATHS
                    else:
                        log.error("message %s (UID %d) left in the mailbox: workers stopped on it %d times in this run "
                                  "after its content was checked", job.record.reference, job.message.uid, job.deaths)  # type: ignore[union-attr]
                        job.state = WAITING


def _settle_worked(gateway: Gateway, job: _Job, mailbox: str, uidvalidity: int, keys: RunKeys) -> str:
    """Settle a worker's result; or, when a file it took for new was forwarded by a message settled meanwhile
    (the same file twice in one burst), handle the message again here, with the ledger as it now is."""
    record, result = job.record, job.result
    assert record is not None and result is not None
    if not job.examined:
        gateway.ledger.forget_attempt(record)  # as `handle` ends the exposure before settling
    for provider, sha256, reference, answered in result.asked:
        earlier = gateway.ledger.earlier_file(provider, sha256, DUPLICATE_DAYS, reference)
        if (earlier.reference if earlier is not None else None) != answered:
            return handle(gateway, mailbox, uidvalidity, job.message, keys)
    return settle(gateway, record, job.message, result)


class _Archive:
    """Messages whose outcome is durable, moved to Processed or Quarantine a few at a time (one command
    each), then marked done in the ledger. A run stopped before a move leaves them in the mailbox, where
    the next run finds them handled and moves them."""

    BATCH = 5

    def __init__(self, gateway: Gateway, session: Inbox, uidvalidity: int) -> None:
        self._gateway, self._session, self._uidvalidity = gateway, session, uidvalidity
        self._due: list[tuple[InboxMessage, str]] = []

    def add(self, message: InboxMessage, state: str) -> None:
        self._due.append((message, state))
        if len(self._due) >= self.BATCH:
            self.move()

    def move(self) -> None:
        settings, ledger = self._gateway.config.mailbox, self._gateway.ledger
        for folder in (settings.processed_folder, settings.quarantine_folder):
            going = [(m, s) for m, s in self._due if (s == MessageState.QUARANTINED) == (folder == settings.quarantine_folder)]
            if not going:
                continue
            self._session.move([message.uid for message, _ in going], folder)
            for message, state in going:
                record = ledger.find_message(settings.folder, self._uidvalidity, message.uid, _sha256(message.raw))
                if record is not None:
                    ledger.set_state(record, MessageState.QUARANTINED if state == MessageState.QUARANTINED else MessageState.DONE)
        self._due = []


WAITING = "waiting"  # handle's answer for a message to leave in the mailbox and try again later
OWN_KEY = "gateway-key"  # the ledger reference of the own key's alerts


def handle(gateway: Gateway, mailbox: str, uidvalidity: int, message: InboxMessage, keys: RunKeys | None = None) -> str:
    """Queue everything one message gives rise to; return 'queued', 'quarantined', or WAITING when the
    gateway's own key cannot decrypt it (nothing queued, the administrator alerted). Never raises for bad input.

    `keys`: the run's look at the keyring, shared by its messages."""
    keys = keys or RunKeys(gateway.keyring)
    admitted = admit(gateway, mailbox, uidvalidity, message, keys)
    if not isinstance(admitted, MessageRecord):
        return admitted
    exposure = _Exposure(gateway.ledger, admitted)
    ledger = gateway.ledger
    result = work(gateway, keys, admitted, message, exposure.end,
                  lambda provider, sha256, reference: ledger.earlier_file(provider, sha256, DUPLICATE_DAYS, reference))
    exposure.end()
    return settle(gateway, admitted, message, result)


def admit(gateway: Gateway, mailbox: str, uidvalidity: int, message: InboxMessage, keys: RunKeys) -> MessageRecord | str:
    """The ledger's part before a message's content is worked on: its record, with this attempt counted; or
    its state, when nothing is left to work on (handled before, set aside after deaths, a bounce recorded)."""
    ledger = gateway.ledger
    record = ledger.receive(mailbox, uidvalidity, message.uid, _sha256(message.raw))
    if record.state in (MessageState.QUEUED, MessageState.DONE):
        log.info("message %s already handled; not processed again", record.reference)
        return MessageState.QUEUED
    if record.state == MessageState.QUARANTINED:
        return MessageState.QUARANTINED
    if record.attempts >= MAX_HANDLING_DEATHS:
        log.error("message %s (UID %d) quarantined: the gateway stopped %d times while handling it",
                  record.reference, message.uid, record.attempts)
        result = _set_aside(gateway, record, message, keys)
        _queue(gateway, record, result)
        return result.state
    record = ledger.begin_attempt(record)
    bounce = parse_bounce(message.raw)
    # Before the sender check: a bounce comes from a mail daemon, never a provider. Only one about a
    # message the gateway sent is a bounce; anyone can write a delivery-status part.
    if bounce is not None and original_of(ledger, bounce) is not None:
        _queue(gateway, record, Result(MessageState.QUEUED, record_bounce(ledger, gateway.config, record.reference, bounce),
                                       outcome=Outcome.BOUNCE))
        return MessageState.QUEUED
    return record


Earlier = Callable[[str, str, str], "FileRecord | None"]  # (provider, hash of the file, its reference) -> earlier forwarding


def work(gateway: Gateway, keys: RunKeys, record: MessageRecord, message: InboxMessage, examined: Callable[[], None],
         earlier: Earlier) -> Result:
    """Everything one message gives rise to, worked out without the mailbox, the ledger or the outbox (so that
    a worker process can do it): `examined()` is called once its content has been read and checked,
    `earlier` answers whether a file was forwarded before. Never raises for bad input."""
    try:
        return _work(gateway, keys, record, message.raw, examined, earlier)
    except HostileFile as hostile:
        log.warning("message %s (UID %d) quarantined: it carries a file built to do harm", record.reference, message.uid)
        result = _quarantine(gateway, record, message, *notices.HOSTILE, replied=bool(hostile.replies))
        result.outgoing += hostile.replies
        return result
    except UnknownSender as error:
        log.warning("message %s (UID %d) quarantined: %s", record.reference, message.uid, error)
        what = notices.UNKNOWN_SENDER + ("" if isinstance(error, SenderNotRegistered) else f": {error}")
        result = _quarantine(gateway, record, message, what, error.advice)
        if gateway.config.admin.reply_to_unknown_senders:
            result.outgoing += _stranger_reply(gateway, record, message.raw)
        return result
    except OwnKeyLocked as locked:
        examined()  # not the message's doing
        return Result(WAITING, locked=locked)
    except Exception as error:  # one bad message must never stop the gateway
        # Not log.exception: a library's message can quote the cell that upset it.
        log.error("message %s (UID %d) could not be handled and is quarantined: %s", record.reference, message.uid, describe(error))
        return _quarantine(gateway, record, message, notices.NOT_HANDLED, notices.not_handled(error))


def settle(gateway: Gateway, record: MessageRecord, message: InboxMessage, result: Result) -> str:
    """The ledger's and the outbox's part once the work is done: its events recorded and everything it gave
    rise to durably queued; or, when the gateway's own key failed, the administrator alerted and WAITING."""
    if result.locked is not None:
        log.error("message %s (UID %d) left in the mailbox: %s", record.reference, message.uid, result.locked)
        _own_key_locked(gateway, record.reference, result.locked)
        return WAITING
    for reference, event, detail in result.events:
        gateway.ledger.event(reference, event, **detail)
    _queue(gateway, record, result)
    return result.state


def _work(gateway: Gateway, keys: RunKeys, record: MessageRecord, raw: bytes, examined: Callable[[], None],
          earlier: Earlier) -> Result:
    config = gateway.config
    unpacked = unpack(raw, gateway.rules, gateway.keyring, lambda provider: secret(provider.password_env or ""))
    provider = unpacked.provider
    result = Result(MessageState.QUEUED, provider=provider.ukprn)
    received = datetime.fromisoformat(record.first_seen)
    answer_to = provider.receipts_to or unpacked.sender  # a provider may want receipts at another address
    head = _letterhead(gateway, answer_to, keys)
    if unpacked.error is not None:
        facts = _message_facts(record, raw)
        result.outgoing.append(rejection(facts, provider, unpacked.error.advice, answer_to, head))
        result.outcome = Outcome.REJECTED
        result.events.append((record.reference, "rejected", {"reason": type(unpacked.error).__name__}))
        return result
    hostile = [a for a in unpacked.attachments if a.hostile]
    if hostile:
        first = hostile[0]
        facts = FileFacts(record.reference, received, first.index, len(unpacked.attachments), first.size, first.short_hash)
        advice = (first.error.advice if first.error is not None else "") + _OVER_LIMITS
        raise HostileFile("a file built to do harm", advice, [rejection(facts, provider, advice, answer_to, head)])
    attachments = _once_each(unpacked)
    count = len(attachments)
    answered = 0
    desk = _Desk(gateway, keys, result, examined, earlier)
    for attachment in attachments:
        reference = record.reference if count == 1 else f"{record.reference}-{attachment.index}"
        facts = FileFacts(reference, received, attachment.index, count, attachment.size, attachment.short_hash)
        answered += _answer(desk, facts, attachment, answer_to, head)
    if answered == 0:
        result.outcome = Outcome.REJECTED
        if not result.outgoing:  # only an encrypted covering note (inline PGP text): a registered sender still gets an answer
            facts = _message_facts(record, raw)
            result.outgoing.append(rejection(facts, provider, NOTHING_ATTACHED, answer_to, head))
            result.events.append((record.reference, "rejected", {"reason": "nothing attached"}))
    result.outgoing += held_notices(result.held, config)
    return result


@dataclass(frozen=True)
class _Desk:
    """What answering one file needs besides the file: the gateway, the run's keys, the message's result so
    far, and the two ways its work reaches the ledger."""

    gateway: Gateway
    keys: RunKeys
    result: Result
    examined: Callable[[], None]
    earlier: Earlier

    def duplicate(self, provider: Provider, sha256: str, reference: str) -> str | None:
        """Why the file is a duplicate, or None; the question and its answer kept, to be checked when settled."""
        found = self.earlier(provider.ukprn, sha256, reference)
        self.result.asked.append((provider.ukprn, sha256, reference, found.reference if found is not None else None))
        return duplicate_advice(found)


def _once_each(unpacked: Unpacked) -> list[Attachment]:
    """The message's files, one attached twice counted once (by the hash of its decrypted content), numbered again."""
    copies: dict[str, int] = {}
    kept: list[Attachment] = []
    for attachment in unpacked.attachments:
        if attachment.data is not None and attachment.error is None:
            copies[attachment.content_sha256] = copies.get(attachment.content_sha256, 0) + 1
            if copies[attachment.content_sha256] > 1:
                continue
        kept.append(attachment)
    numbered = []
    for index, attachment in enumerate(kept, 1):
        times = copies.get(attachment.content_sha256, 0) if attachment.data is not None and attachment.error is None else 0
        note = (f"The same file was attached {times} times to this email; it has been read and forwarded once.",) if times > 1 else ()
        numbered.append(replace(attachment, index=index, warnings=attachment.warnings + note))
    return numbered


def _own_key_locked(gateway: Gateway, reference: str, locked: OwnKeyLocked) -> None:
    """Alert the administrator once per failure of the gateway's own key, not at every run: the ledger
    remembers the alert until a decryption works again (_own_key_works_again)."""
    events = _own_key_events(gateway)
    if events and events[-1] == "locked-alerted":
        return
    notify_admin(gateway.config, gateway.ledger, gateway.outbox, OWN_KEY,
                 *notices.own_key_locked(gateway.config, reference, locked), key=str(events.count("locked-alerted")))
    gateway.ledger.event(OWN_KEY, "locked-alerted", message=reference)


def _own_key_events(gateway: Gateway) -> list[str]:
    """The own key's alerts and recoveries, oldest first (the alert's own delivery events left out)."""
    return [e.event for e in gateway.ledger.events(OWN_KEY) if e.event in ("locked-alerted", "unlocked")]


def _own_key_works_again(gateway: Gateway) -> None:
    """After a run in which nothing waited for the key: if an alert said it failed, prove it works now."""
    events = _own_key_events(gateway)
    if not events or events[-1] != "locked-alerted":
        return
    try:
        gateway.keyring.prove_own_key()
    except OwnKeyLocked:
        return
    log.info("the gateway's own key decrypts again")
    gateway.ledger.event(OWN_KEY, "unlocked")


def _set_aside(gateway: Gateway, record: MessageRecord, message: InboxMessage, keys: RunKeys) -> Result:
    """A message the process died on, again and again: quarantined, the administrator told, and its
    sender, when a registered provider, answered. Only its headers are read now."""
    sender = _header_sender(message.raw)
    provider = gateway.rules.provider_for_sender(sender) if sender else None
    result = _quarantine(gateway, record, message, *notices.stopped_on(record.attempts),
                         replied=provider is not None)
    if provider is not None and sender is not None:
        answer_to = provider.receipts_to or sender
        head = _letterhead(gateway, answer_to, keys)
        facts = _message_facts(record, message.raw)
        result.outgoing.append(rejection(facts, provider, _KILLED_US, answer_to, head))
        result.provider = provider.ukprn
    gateway.ledger.event(record.reference, "set-aside", attempts=record.attempts)
    return result


def _message_facts(record: MessageRecord, raw: bytes) -> FileFacts:
    """The whole message as the file a receipt describes, when no file of it could be read or answered."""
    return FileFacts(record.reference, datetime.fromisoformat(record.first_seen), 1, 1, len(raw), _sha256(raw)[:12])


def _header_sender(raw: bytes) -> str | None:
    """The sender from the headers alone (the body is what may have killed the process)."""
    try:
        return sender_of(email.parser.BytesHeaderParser(policy=email.policy.default).parsebytes(raw))
    except Exception:  # no single readable From: no one to answer
        return None


def _answer(desk: _Desk, facts: FileFacts, attachment: Attachment, sender: str, head: Letterhead) -> int:
    """Validate, route and pack one return and queue its receipt; 1 if it was accepted, else 0."""
    gateway, keys, result = desk.gateway, desk.keys, desk.result
    config, provider = gateway.config, gateway.rules.providers[result.provider]
    reference = facts.reference
    if attachment.error is not None:
        return _refuse(desk, facts, attachment, attachment.error.advice, sender, head)
    notes = tuple(Finding("W", None, "", "File_02", text) for text in attachment.warnings)
    examined = examine(attachment.data or b"", provider, gateway.rules, gateway.directory, notes=notes,
                       duplicate=lambda p: desk.duplicate(p, attachment.content_sha256, reference))
    if examined.unreadable and attachment.inline:
        return 0  # an encrypted covering note, not a return
    table = examined.table
    if examined.refusal is not None or table is None:
        return _refuse(desk, facts, attachment, examined.refusal or "", sender, head)
    desk.examined()
    routed, findings = examined.routed, examined.findings
    source = Source(provider, reference, facts.received, examined.held_back())
    held_boroughs = set()
    digests = {}  # borough code -> when its digest, holding these rows, goes
    now = gateway.clock()
    public = keys.public_keys()
    for batch in routed.batches:
        if batch.borough.digest:
            # Kept encrypted to the gateway's own key until the digest is due; its key is looked for then.
            result.waiting += [wait(table, batch, source, recipient, gateway.keyring, keys.own_fingerprint())
                               for recipient in batch.borough.recipients]
            digests[batch.borough.code] = next_due(batch.borough.delivery, now, config.schedule.hour)
            continue
        queued = 0
        for recipient in batch.borough.recipients:
            try:
                fingerprint = gateway.keyring.key_for(recipient, public)
            except NoUsableKey as why:
                # Kept encrypted to the gateway's own key until the recipient has one: never sent in clear, never dropped.
                result.held.append(hold(table, batch, source, recipient, str(why), gateway.keyring, keys.own_fingerprint()))
                continue
            result.outgoing.append(package_message(table, batch, source, recipient, gateway.keyring, fingerprint, config.smtp.from_address, config.admin.email))
            queued += 1
        if not queued:
            held_boroughs.add(batch.borough.code)
    held = frozenset(held_boroughs)
    result.outgoing.append(acknowledgement(facts, provider, len(table.rows), findings, routed, gateway.directory.edition,
                                           sender, head, held=held, left_out=table.other_headings(), digests=digests))
    _add_counts(result, len(table.rows), routed.forwarded_except(held), findings)
    result.files.append((attachment.content_sha256, reference))
    result.events.append((reference, "validated", {"rows": len(table.rows), "forwarded": routed.forwarded_except(held),
                                                   "boroughs": len(routed.batches)}))
    return 1


def _refuse(desk: _Desk, facts: FileFacts, attachment: Attachment, advice: str, sender: str, head: Letterhead) -> int:
    """A file not taken: its rejection receipt queued; 0, as nothing of it was accepted."""
    result = desk.result
    result.outgoing.append(rejection(facts, desk.gateway.rules.providers[result.provider], advice, sender, head))
    result.events.append((facts.reference, "file-rejected", {"attachment": attachment.index}))
    return 0


class _Exposure:
    """One attempt at a message, counted in the ledger while the gateway works on the message's content.

    Once the content has been unpacked, read and checked, what follows (routing a checked table,
    packing, writing the outbox and the ledger) is the gateway's own work: a death from there on, or a
    full disk, does not count against the message. Random kills (an administrator's, a test's) fall
    mostly there, and must not set a good return aside.
    """

    def __init__(self, ledger: Ledger, record: MessageRecord) -> None:
        self._ledger = ledger
        self._record: MessageRecord | None = record

    def end(self) -> None:
        if self._record is not None:
            self._ledger.forget_attempt(self._record)
            self._record = None


def _add_counts(result: Result, rows_read: int, rows_forwarded: int, findings: list[Finding] | tuple[Finding, ...]) -> None:
    counts = result.counts
    counts["rows_read"] += rows_read
    counts["rows_forwarded"] += rows_forwarded
    tally = Tally.of(findings)  # as the receipt counts them
    counts["rows_rejected"] += tally.rejected_rows
    counts["warnings"] += tally.warnings


def _quarantine(gateway: Gateway, record: MessageRecord, message: InboxMessage, what: str, todo: str,
                replied: bool = False) -> Result:
    """The administrator told what arrived, from which address, and what to do. The sender's address is no
    young person's data; the subject and the attachments' names may be, and are never quoted."""
    sender = _header_sender(message.raw) or "no single readable address (the From header is missing, repeated or malformed)"
    notice = notices.quarantined(gateway.config, record.reference, message.uid, sender, what, todo, replied)
    return Result(MessageState.QUARANTINED, [notice], outcome=Outcome.QUARANTINED)


def _stranger_reply(gateway: Gateway, record: MessageRecord, raw: bytes) -> list[Outgoing]:
    """A short answer to an unregistered sender (only when the configuration asks for it)."""
    try:
        address = sender_of(parse(raw))
    except UnknownSender:
        return []  # no single address to answer
    return [notices.stranger_reply(gateway.config, record.reference, address)]


def _queue(gateway: Gateway, record: MessageRecord, result: Result) -> None:
    """Durably queue every outgoing message, then record the outcome in one ledger transaction."""
    for item in result.outgoing:
        if gateway.ledger.outgoing_state(item.id) != OutgoingState.SENT:
            gateway.outbox.put(item.id, item.raw, sync=False)
    gateway.outbox.sync_new()  # every name in new/ durable before the ledger says queued
    for held in result.held:
        if gateway.ledger.outgoing_state(held.id) in (None, OutgoingState.HELD):
            gateway.outbox.hold(held.id, held.ciphertext, held.facts())
    for part in result.waiting:
        if gateway.ledger.outgoing_state(part.id) in (None, OutgoingState.WAITING):
            gateway.outbox.shelf_waiting.keep(part.id, part.ciphertext, part.facts())
    rows = ([item.ledger_row() for item in result.outgoing] + [held.ledger_row() for held in result.held]
            + [part.ledger_row() for part in result.waiting])
    outcome = {"state": result.state, "outcome": result.outcome, "provider": result.provider, **result.counts}
    gateway.ledger.record_outcome(record, outcome, rows, result.files)


def _letterhead(gateway: Gateway, provider_address: str, keys: RunKeys) -> Letterhead:
    """The receipts' sender and key; and, when the provider's address has a key in keys/, the seal
    that encrypts its receipts to it."""
    keyring = gateway.keyring
    fingerprint = keys.own_fingerprint()
    try:
        theirs = keyring.key_for(provider_address, keys.public_keys())
    except NoUsableKey:
        seal = None
    else:
        def seal(data: bytes) -> bytes:
            return keyring.encrypt(data, theirs, armour=True)
    return Letterhead(gateway.config.smtp.from_address, fingerprint, keys.own_public(), seal)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
