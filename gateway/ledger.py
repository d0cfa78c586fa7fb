"""The SQLite ledger (sqlite-utils): messages, outgoing mail and events, with counts, hashes and ids only.

Never a cell value, a name, a subject or an attachment name: the ledger outlives the data it describes.
Every event is also chained into the audit trail (its format is below; admin/audit.py checks it) in the same transaction.
Records are frozen dataclasses, states and kinds `StrEnum`s whose values are the strings stored; the
schema grows by sqlite-utils migrations (MIGRATIONS), so a ledger written by an older release is
brought up to date on opening. No other module speaks SQL.

Retention (`purge`) drops the details of what happened before a date and keeps the counts, so the
monthly report can still be made for those months: a message keeps its reference, provider, dates,
outcome and row counts, losing its hash and its place in the mailbox; a package keeps its id,
reference, borough, recipient (an address from rules/boroughs.toml), rows, reasons, state and dates,
losing its hash and error text (so does a digest, and a return's rows it took are kept as they are); other outgoing mail (receipts, alerts, notices, reminders) is
deleted, and so are the events and the hashes of forwarded files; the audit trail is cut at a
checkpoint (admin/audit.py). Nothing still queued or held is touched.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime, timedelta
from enum import Enum, StrEnum
from pathlib import Path
from typing import Any, TypeVar, cast

import sqlite_utils
from sqlite_utils.migrations import Migrations

MAILBOX_CHECKED = "mailbox-checked"  # the event of a successful look at the mailbox


def utcnow() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class MessageState(StrEnum):
    RECEIVED = "received"
    QUEUED = "queued"
    DONE = "done"
    QUARANTINED = "quarantined"


class Outcome(StrEnum):
    """What became of a received message, for the report."""
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    QUARANTINED = "quarantined"
    BOUNCE = "bounce"


class OutgoingState(StrEnum):
    QUEUED = "queued"  # in the outbox, to be sent (again, after next_attempt_at)
    SENT = "sent"
    FAILED = "failed"  # set aside in outbox/bad/
    BOUNCED = "bounced"  # the relay took it, a delivery status notification said it failed
    HELD = "held"  # no usable key for the recipient
    WAITING = "waiting"  # a return's rows waiting for a borough's digest (kind PART)
    DIGESTED = "digested"  # those rows, taken by a digest


class Kind(StrEnum):
    PACKAGE = "package"
    DIGEST = "digest"
    PART = "part"  # a return's rows for a digest borough, not mail itself
    RECEIPT = "receipt"
    ALERT = "alert"
    NOTICE = "notice"
    REMINDER = "reminder"
    REPORT = "report"
    STRANGER_REPLY = "stranger-reply"


@dataclass(frozen=True)
class MessageRecord:
    sha256: str
    reference: str
    first_seen: str
    state: MessageState
    attempts: int = 0  # times its handling began; more than one while 'received' means the process died on it
    mailbox: str | None = None
    uidvalidity: int | None = None
    uid: int | None = None
    updated: str | None = None
    outcome: str | None = None
    provider: str | None = None
    rows_read: int | None = None
    rows_forwarded: int | None = None
    rows_rejected: int | None = None
    warnings: int | None = None


@dataclass(frozen=True)
class OutgoingRecord:
    id: str
    reference: str
    kind: Kind
    recipient: str
    state: OutgoingState
    borough: str | None = None
    rows: int | None = None
    sha256: str | None = None
    attempts: int = 0
    last_error: str | None = None
    queued_at: str | None = None
    sent_at: str | None = None
    next_attempt_at: str | None = None
    status: str | None = None  # a bounce's status code (5.1.1)
    reasons: str | None = None  # a package's counts by reason, as JSON {"Leaver": 3, ...}
    digest: str | None = None  # for a PART: the id of the digest that took it
    provider: str | None = None  # the UKPRN of the return it came from (waiting_parts only)


@dataclass(frozen=True)
class FileRecord:
    provider: str
    sha256: str
    reference: str
    first_seen: str


@dataclass(frozen=True)
class EventRecord:
    id: int
    at: str
    reference: str
    event: str
    detail: str  # JSON, or "" for none


@dataclass(frozen=True)
class ReportLine:
    """A package or digest part of a return received in a month, as the monthly report counts it."""
    reference: str
    borough: str | None
    recipient: str
    rows: int | None
    state: OutgoingState
    reasons: str | None
    provider: str | None


_Record = TypeVar("_Record", MessageRecord, OutgoingRecord, ReportLine)


def _make(cls: type[_Record], row: dict[str, Any]) -> _Record:
    names = {f.name for f in fields(cls)}
    values = {k: v for k, v in row.items() if k in names}
    if cls is OutgoingRecord:
        values["kind"], values["state"] = Kind(values["kind"]), OutgoingState(values["state"])
        values["attempts"] = values.get("attempts") or 0
    elif cls is MessageRecord:
        values["state"], values["attempts"] = MessageState(values["state"]), values.get("attempts") or 0
    elif cls is ReportLine:
        values["state"] = OutgoingState(values["state"])
    return cls(**values)


# -- the audit trail's format (checked by admin/audit.py) ----------------------------------------
GENESIS = "0" * 64
PURGE_EVENT = "purged"  # the ledger event a purge writes; its detail names the checkpoint


@dataclass(frozen=True)
class Checkpoint:
    through: int  # the last entry deleted
    hash: str  # its hash: the entry after it links to this
    purged: int  # entries deleted so far, all purges together


@dataclass(frozen=True)
class Entry:
    id: int
    at: str
    reference: str
    event: str
    detail: str
    prev: str
    hash: str


def detail_text(detail: dict[str, Any]) -> str:
    """The canonical form of an event's detail, as the trail stores and hashes it."""
    return json.dumps(detail, sort_keys=True, separators=(",", ":"), ensure_ascii=False) if detail else ""


def entry_hash(prev: str, at: str, reference: str, event: str, detail: str) -> str:
    """SHA-256 (hex) of the previous entry's hash followed by this entry's canonical content."""
    content = json.dumps([at, reference, event, detail], separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256((prev + content).encode("utf-8")).hexdigest()


# -- the schema, as migrations ------------------------------------------------------------------
# Each step checks what is there, so a ledger written before migrations were recorded (every release
# up to 2026-11) takes the same path: the steps it already had find their work done.
MIGRATIONS = Migrations("ldor-gateway")


@MIGRATIONS()
def m001_messages_outgoing_events(db: sqlite_utils.Database) -> None:
    names = db.table_names()
    if "messages" not in names:
        db.table("messages").create(
            {
                "sha256": str, "reference": str, "mailbox": str, "uidvalidity": int, "uid": int,
                "first_seen": str, "updated": str, "state": str, "outcome": str, "provider": str,
                "rows_read": int, "rows_forwarded": int, "rows_rejected": int, "warnings": int,
            },
            pk="sha256",
        )
        db.table("messages").create_index(["mailbox", "uidvalidity", "uid"])
        db.table("messages").create_index(["reference"], unique=True)
    if "outgoing" not in names:
        db.table("outgoing").create(
            {
                "id": str, "reference": str, "kind": str, "recipient": str, "borough": str,
                "rows": int, "sha256": str, "state": str, "attempts": int, "last_error": str,
                "queued_at": str, "sent_at": str,
            },
            pk="id",
        )
        db.table("outgoing").create_index(["reference"])


@MIGRATIONS()
def m002_retries_bounces_reasons_digests(db: sqlite_utils.Database) -> None:
    """When to try again; a bounce's status code; a package's counts by reason; the digest that took a part."""
    for column in ("next_attempt_at", "status", "reasons", "digest"):
        if column not in db.table("outgoing").columns_dict:
            db.table("outgoing").add_column(column, str)
    db.table("outgoing").create_index(["kind", "state"], if_not_exists=True)


@MIGRATIONS()
def m003_message_attempts(db: sqlite_utils.Database) -> None:
    if "attempts" not in db.table("messages").columns_dict:
        db.table("messages").add_column("attempts", int)


@MIGRATIONS()
def m004_files(db: sqlite_utils.Database) -> None:
    """The hash of each decrypted return that was forwarded, to notice the same file sent again."""
    if "files" not in db.table_names():
        db.table("files").create({"provider": str, "sha256": str, "reference": str, "first_seen": str},
                                 pk=("provider", "sha256"))


@MIGRATIONS()
def m005_events(db: sqlite_utils.Database) -> None:
    if "events" not in db.table_names():
        db.table("events").create({"id": int, "at": str, "reference": str, "event": str, "detail": str}, pk="id")
    db.table("events").create_index(["reference"], if_not_exists=True)


@MIGRATIONS()
def m006_audit_trail(db: sqlite_utils.Database) -> None:
    """The hash-chained trail (admin/audit.py); a ledger older than the trail: its events so far open it."""
    if "audit" in db.table_names():
        return
    text = {"at": str, "reference": str, "event": str, "detail": str, "prev": str, "hash": str}
    db.table("audit").create({"id": int, **text}, pk="id", not_null=set(text))
    db.table("audit_checkpoint").create({"one": int, "through": int, "hash": str, "purged": int, "at": str}, pk="one",
                                  not_null={"through", "hash", "purged", "at"})
    for row in db.query("select * from events order by id"):
        _chain(db, row["id"], row["at"], row["reference"], row["event"],
               _audited(db, json.loads(row["detail"]) if row["detail"] else {}))


def _audited(db: sqlite_utils.Database, detail: dict[str, Any]) -> dict[str, Any]:
    """What the audit trail keeps of an event about outgoing mail: which message it was (kind,
    borough, rows, the hash of the message as queued). The recipient is bound by the id."""
    rows = list(db.query("select kind, borough, rows, sha256 from outgoing where id = ?", [str(detail["id"])])) if "id" in detail else []
    if not rows:
        return detail
    item = rows[0]
    return {**detail, "kind": item["kind"], "borough": item["borough"] or "", "rows": item["rows"] or 0,
            "sha256": item["sha256"] or ""}


def _chain(db: sqlite_utils.Database, entry_id: int, at: str, reference: str, event: str,
           detail: dict[str, Any]) -> str:
    """Chain one audit entry after the current head; return its hash.

    Called inside the transaction that writes the ledger event, after the event's insert has taken
    SQLite's write lock, so the head read here is the latest even with two gateway processes.
    """
    prev = _head_hash(db)
    text = detail_text(detail)
    digest = entry_hash(prev, at, reference, event, text)
    db.conn.execute("insert into audit (id, at, reference, event, detail, prev, hash) values (?, ?, ?, ?, ?, ?, ?)",
                    [entry_id, at, reference, event, text, prev, digest])
    return digest


def _head_hash(db: sqlite_utils.Database) -> str:
    """The hash the next entry links to: the last entry's, else the checkpoint's, else GENESIS."""
    row = db.conn.execute("select hash from audit order by id desc limit 1").fetchone()
    if row:
        return cast(str, row[0])
    point = _checkpoint(db)
    return point.hash if point else GENESIS


def _checkpoint(db: sqlite_utils.Database) -> Checkpoint | None:
    row = db.conn.execute("select through, hash, purged from audit_checkpoint where one = 1").fetchone()
    return Checkpoint(*row) if row else None


class Ledger:
    """One SQLite file; every write commits before the caller goes on."""

    def __init__(self, path: Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite_utils.Database(str(path))
        self.db.conn.execute("PRAGMA journal_mode=WAL")
        self.db.conn.execute("PRAGMA synchronous=FULL")
        self.migrate()

    def migrate(self) -> None:
        """Bring the schema up to date; two processes opening an older ledger at once: one migrates."""
        if not MIGRATIONS.pending(self.db):
            return
        with self.db.conn:
            self.db.conn.execute("begin immediate")
            MIGRATIONS.apply(self.db)

    # -- messages -----------------------------------------------------------------------------
    def find_message(self, mailbox: str, uidvalidity: int, uid: int, sha256: str) -> MessageRecord | None:
        """The message as the ledger knows it: by its hash, or by mailbox, UIDVALIDITY and UID."""
        rows = list(self.db.query(
            "select * from messages where sha256 = ? or (mailbox = ? and uidvalidity = ? and uid = ?) limit 1",
            [sha256, mailbox, uidvalidity, uid],
        ))
        return _make(MessageRecord, rows[0]) if rows else None

    def receive(self, mailbox: str, uidvalidity: int, uid: int, sha256: str) -> MessageRecord:
        """Record a message as received (once); its reference is derived from its hash, so stable."""
        known = self.find_message(mailbox, uidvalidity, uid, sha256)
        if known:
            return known
        now = utcnow()
        reference = f"LDOR-{now[:10].replace('-', '')}-{sha256[:10].upper()}"
        with self.db.conn:
            self.db.table("messages").insert({
                "sha256": sha256, "reference": reference, "mailbox": mailbox, "uidvalidity": uidvalidity,
                "uid": uid, "first_seen": now, "updated": now, "state": MessageState.RECEIVED,
            })
            self._event(reference, MessageState.RECEIVED, uid=uid)
        return MessageRecord(sha256, reference, now, MessageState.RECEIVED, mailbox=mailbox, uidvalidity=uidvalidity,
                             uid=uid, updated=now)

    def record_outcome(self, record: MessageRecord, outcome: dict[str, Any], outgoing: list[dict[str, Any]],
                       files: Sequence[tuple[str, str]] = ()) -> None:
        """In one transaction: the message's counts and state, the outgoing mail now in the outbox, and
        the hashes of the returns it forwarded."""
        now = utcnow()
        with self.db.conn:
            for sha256, reference in files:
                self.db.table("files").insert({"provider": outcome.get("provider", ""), "sha256": sha256,
                                         "reference": reference, "first_seen": now}, ignore=True)
            for item in outgoing:
                if self.outgoing_state(item["id"]) in (OutgoingState.SENT, OutgoingState.DIGESTED):
                    continue
                self._upsert_outgoing(record.reference, item, now)
            self.db.table("messages").update(record.sha256, {**outcome, "updated": now})
            self._event(record.reference, outcome.get("state", MessageState.QUEUED), **_counts(outcome))

    def begin_attempt(self, record: MessageRecord) -> MessageRecord:
        """Count one more start of handling, committed before any of it happens, so that a process that
        dies while handling the message leaves the count behind."""
        with self.db.conn:
            self.db.conn.execute("update messages set attempts = coalesce(attempts, 0) + 1 where sha256 = ?", [record.sha256])
        return replace(record, attempts=record.attempts + 1)

    def died_handling(self, mailbox: str, uidvalidity: int) -> bool:
        """Whether a process stopped while handling a message of this mailbox that is still unfinished (its
        attempts still counted)."""
        return bool(list(self.db.query(
            "select 1 from messages where mailbox = ? and uidvalidity = ? and state = ? and attempts > 0 limit 1",
            [mailbox, uidvalidity, MessageState.RECEIVED])))

    def forget_attempt(self, record: MessageRecord) -> None:
        """Take back an attempt that ended in the gateway's own failure (disk full), not in the message's."""
        with self.db.conn:
            self.db.conn.execute("update messages set attempts = max(coalesce(attempts, 0) - 1, 0) where sha256 = ?", [record.sha256])

    def set_state(self, record: MessageRecord, state: MessageState) -> None:
        with self.db.conn:
            self.db.table("messages").update(record.sha256, {"state": state, "updated": utcnow()})
            self._event(record.reference, state)

    def message(self, reference: str) -> MessageRecord | None:
        rows = list(self.db.table("messages").rows_where("reference = ?", [reference]))
        return _make(MessageRecord, rows[0]) if rows else None

    def messages(self, since: str | None = None, until: str | None = None) -> list[MessageRecord]:
        """Every message, in the order received; or those first seen in [since, until) (ISO UTC)."""
        if since is None or until is None:
            rows = self.db.query("select * from messages order by rowid")
        else:
            rows = self.db.query("select * from messages where first_seen >= ? and first_seen < ? order by rowid", [since, until])
        return [_make(MessageRecord, row) for row in rows]

    def earlier_file(self, provider: str, sha256: str, days: int, reference: str) -> FileRecord | None:
        """The earlier forwarding of this very file by this provider within `days`, if any."""
        since = (datetime.now(UTC) - timedelta(days=days)).isoformat(timespec="seconds")
        rows = list(self.db.query(
            "select * from files where provider = ? and sha256 = ? and first_seen >= ? and reference != ?",
            [provider, sha256, since, reference],
        ))
        return FileRecord(**rows[0]) if rows else None

    # -- outgoing -----------------------------------------------------------------------------
    def outgoing_state(self, item_id: str) -> OutgoingState | None:
        rows = list(self.db.query("select state from outgoing where id = ?", [item_id]))
        return OutgoingState(rows[0]["state"]) if rows else None

    def outgoing(self, item_id: str) -> OutgoingRecord | None:
        rows = list(self.db.table("outgoing").rows_where("id = ?", [item_id]))
        return _make(OutgoingRecord, rows[0]) if rows else None

    def outgoing_counts(self) -> dict[OutgoingState, int]:
        """How many outgoing rows are in each state."""
        return {OutgoingState(row["state"]): row["n"]
                for row in self.db.query("select state, count(*) as n from outgoing group by state")}

    def add_outgoing(self, reference: str, items: list[dict[str, Any]]) -> None:
        """Record mail the gateway queued on its own (alerts about delivery), not for a received message."""
        now = utcnow()
        with self.db.conn:
            for item in items:
                if self.outgoing_state(item["id"]) != OutgoingState.SENT:
                    self._upsert_outgoing(reference, item, now)
                    self._event(reference, OutgoingState.QUEUED, id=item["id"], kind=item["kind"])

    def outgoing_in(self, *states: OutgoingState) -> list[OutgoingRecord]:
        """Outgoing mail in these states, oldest first (for the outbox report)."""
        marks = ", ".join("?" for _ in states)
        return [_make(OutgoingRecord, row) for row in
                self.db.query(f"select * from outgoing where state in ({marks}) order by queued_at, id", list(states))]

    def sent_since(self, since: str) -> list[OutgoingRecord]:
        return [_make(OutgoingRecord, row) for row in self.db.query(
            "select * from outgoing where state = ? and sent_at >= ? order by sent_at", [OutgoingState.SENT, since])]

    def mark_sent(self, item_id: str) -> None:
        with self.db.conn:
            self.db.conn.execute(
                "update outgoing set state = 'sent', sent_at = ?, attempts = attempts + 1, last_error = null, "
                "next_attempt_at = null where id = ?",
                [utcnow(), item_id],
            )
            self._event(self._reference_of(item_id), "sent", id=item_id)

    def mark_failed(self, item_id: str, error: str, permanent: bool, next_attempt_at: str | None = None) -> None:
        """Count a failed attempt: permanent ones end as 'failed'; others stay queued until next_attempt_at."""
        state = OutgoingState.FAILED if permanent else OutgoingState.QUEUED
        with self.db.conn:
            self.db.conn.execute(
                "update outgoing set state = ?, attempts = attempts + 1, last_error = ?, next_attempt_at = ? where id = ?",
                [state, error, None if permanent else next_attempt_at, item_id],
            )
            self._event(self._reference_of(item_id), "send-failed" if permanent else "send-deferred", id=item_id)

    def give_up(self, item_id: str, error: str) -> None:
        """Stop trying a message without counting an attempt (too old, or its file is not what was queued)."""
        with self.db.conn:
            self.db.conn.execute(
                "update outgoing set state = 'failed', last_error = ?, next_attempt_at = null where id = ?", [error, item_id])
            self._event(self._reference_of(item_id), "send-failed", id=item_id)

    def requeue(self, item_id: str) -> None:
        """A set-aside message queued again by the administrator: tried at once, for a full retry period."""
        with self.db.conn:
            self.db.conn.execute(
                "update outgoing set state = 'queued', attempts = 0, last_error = null, next_attempt_at = null, "
                "status = null, queued_at = ? where id = ?", [utcnow(), item_id])
            self._event(self._reference_of(item_id), "requeued", id=item_id)

    def mark_bounced(self, item_id: str, status: str, action: str) -> None:
        """A delivery status notification said the message failed after the relay took it."""
        with self.db.conn:
            self.db.conn.execute(
                "update outgoing set state = 'bounced', status = ?, last_error = ?, next_attempt_at = null where id = ?",
                [status, f"bounced ({action}, status {status or 'not given'})", item_id],
            )
            self._event(self._reference_of(item_id), "bounced", id=item_id, status=status)

    def release(self, item_id: str, sha256: str) -> None:
        """A held package, now built for its recipient's key and in the outbox: queued like any other."""
        with self.db.conn:
            self.db.conn.execute(
                "update outgoing set state = 'queued', sha256 = ?, attempts = 0, last_error = null, "
                "next_attempt_at = null, queued_at = ? where id = ? and state = 'held'", [sha256, utcnow(), item_id])
            self._event(self._reference_of(item_id), "released", id=item_id)

    def mark_held(self, item_id: str, why: str) -> None:
        with self.db.conn:
            self.db.conn.execute("update outgoing set state = 'held', last_error = ? where id = ?", [why, item_id])
            self._event(self._reference_of(item_id), "held", id=item_id)

    def waiting_parts(self) -> list[OutgoingRecord]:
        """A return's rows for one digest recipient each, not yet taken by a digest, oldest first."""
        return [_make(OutgoingRecord, row) for row in self.db.query(
            "select o.*, m.provider from outgoing o left join messages m on m.reference = o.reference "
            "where o.kind = ? and o.state = ? order by o.queued_at, o.id", [Kind.PART, OutgoingState.WAITING])]

    def report_lines(self, since: str, until: str) -> list[ReportLine]:
        """The packages and digest parts of the returns first seen in [since, until) (ISO UTC), with their
        providers. A part counts when its return is received, like a package, and is sent once the
        digest that took it is."""
        return [_make(ReportLine, row) for row in self.db.query(
            "select o.reference, o.borough, o.recipient, o.rows, o.reasons, m.provider, "
            "case when o.kind = 'part' then coalesce((select d.state from outgoing d where d.id = o.digest), 'waiting') "
            "else o.state end as state "
            "from outgoing o join messages m on m.reference = o.reference "
            "where o.kind in ('package', 'part') and m.first_seen >= ? and m.first_seen < ?", [since, until])]

    def queue_digest(self, reference: str, items: list[dict[str, Any]], parts: list[str]) -> None:
        """In one transaction: the digest (queued, or held for want of a key) and any notices about it, now
        in the outbox, and the parts it holds marked as taken by it (items[0])."""
        now = utcnow()
        with self.db.conn:
            for item in items:
                if self.outgoing_state(item["id"]) != OutgoingState.SENT:
                    self._upsert_outgoing(reference, item, now)
            marks = ", ".join("?" for _ in parts)
            self.db.conn.execute(f"update outgoing set state = 'digested', digest = ? where id in ({marks}) "
                                 "and state = 'waiting'", [items[0]["id"], *parts])
            self._event(reference, "digest-queued", id=items[0]["id"], parts=len(parts))

    def _upsert_outgoing(self, reference: str, item: dict[str, Any], now: str) -> None:
        row = {**item, "reference": reference, "state": item.get("state", OutgoingState.QUEUED), "attempts": 0,
               "queued_at": now, "next_attempt_at": None, "status": None}
        # One statement (sqlite-utils' upsert looks the table's columns up at every call: a burst's thousands add up).
        # The names are the gateway's own (ledger_row), never text from a message.
        names = list(row)
        self.db.conn.execute(
            f"insert into outgoing ({', '.join(names)}) values ({', '.join('?' for _ in names)}) "
            f"on conflict(id) do update set {', '.join(f'{name} = excluded.{name}' for name in names if name != 'id')}",
            [_plain(value) for value in row.values()])

    # -- events -------------------------------------------------------------------------------
    def event(self, reference: str, event: str, **detail: object) -> None:
        with self.db.conn:
            self._event(reference, event, **detail)

    def mailbox_checked(self) -> None:
        """Note a successful look at the mailbox (`gateway status` shows the newest)."""
        self.event("daemon", MAILBOX_CHECKED)

    def events(self, reference: str) -> list[EventRecord]:
        return [EventRecord(**row)
                for row in self.db.table("events").rows_where("reference = ?", [reference], order_by="id")]

    def done_references(self, event: str, prefix: str) -> set[str]:
        """The references starting with `prefix` that have an event `event` (one look for a month's jobs)."""
        return {row["reference"] for row in self.db.query(
            "select reference from events where event = ? and substr(reference, 1, ?) = ?", [event, len(prefix), prefix])}

    def any_event_before(self, at: str) -> bool:
        return bool(list(self.db.query("select 1 from events where at < ? limit 1", [at])))

    def newest_event(self, event: str) -> str | None:
        """When the newest event `event` was recorded (ISO UTC), if ever."""
        rows = list(self.db.query("select max(at) as at from events where event = ?", [event]))
        return rows[0]["at"] if rows and rows[0]["at"] else None

    # -- the audit trail (its format above, its checks: admin/audit.py) ---------------------------------------
    def has_audit_trail(self) -> bool:
        return "audit" in self.db.table_names()

    def audit_entries(self) -> list[Entry]:
        return [Entry(*row) for row in self.db.conn.execute(
            "select id, at, reference, event, detail, prev, hash from audit order by id")]

    def audit_checkpoint(self) -> Checkpoint | None:
        return _checkpoint(self.db)

    def audit_head(self) -> str:
        return _head_hash(self.db)

    def last_event_id(self) -> int | None:
        newest: int | None = self.db.conn.execute("select max(id) from events").fetchone()[0]
        return newest

    def _event(self, reference: str, event: str, **detail: object) -> None:
        """Write one event and its audit entry; always inside the caller's transaction."""
        at = utcnow()
        cursor = self.db.conn.execute(
            "insert into events (at, reference, event, detail) values (?, ?, ?, ?)",
            [at, reference, event, json.dumps(detail, sort_keys=True) if detail else ""])
        # sqlite3 sets lastrowid after a successful INSERT; it is None only before any.
        _chain(self.db, cast(int, cursor.lastrowid), at, reference, event, _audited(self.db, detail))

    # -- retention ----------------------------------------------------------------------------
    def purge(self, before: str) -> dict[str, int]:
        """Drop the details of what was finished before `before` (ISO UTC), keeping counts (module docstring).

        One transaction; a second run finds nothing more to do. Returns how much of each kind went.
        """
        conn = self.db.conn
        done = "state in ('sent', 'failed', 'bounced') and coalesce(sent_at, queued_at) < ?"  # OutgoingState
        with conn:
            counts = {
                "messages": conn.execute(
                    "update messages set sha256 = 'purged-' || reference, mailbox = null, uidvalidity = null, uid = null "
                    "where first_seen < ? and state in ('done', 'quarantined') and sha256 not like 'purged-%'",
                    [before]).rowcount,
                "packages": conn.execute(
                    f"update outgoing set sha256 = '', last_error = null, status = null "
                    f"where kind in ('package', 'digest') and {done} and (sha256 != '' or last_error is not null)", [before]).rowcount,
                "outgoing": conn.execute(f"delete from outgoing where kind not in ('package', 'digest', 'part') and {done}", [before]).rowcount,
                "files": conn.execute("delete from files where first_seen < ?", [before]).rowcount,
                # The newest event always stays, so event ids (which the audit trail shares) never start again.
                "events": conn.execute("delete from events where at < ? and id < (select max(id) from events)",
                                       [before]).rowcount,
            }
            first_kept = conn.execute("select min(id) from events").fetchone()[0]
            point = self._purge_audit(first_kept - 1, utcnow()) if first_kept else None
            if any(counts.values()) or point is not None:
                marks = {"audit_through": point.through, "audit_hash": point.hash} if point else {}
                self._event("retention", PURGE_EVENT, before=before, **counts, **marks)
        return counts

    def _purge_audit(self, through: int, at: str) -> Checkpoint | None:
        """Delete the audit entries up to `through`, keeping their last hash as the checkpoint; None if none were.

        The caller records the returned checkpoint in a ledger event, in the same transaction.
        """
        conn = self.db.conn
        last = conn.execute("select id, hash from audit where id <= ? order by id desc limit 1", [through]).fetchone()
        if last is None:
            return None
        deleted = conn.execute("delete from audit where id <= ?", [last[0]]).rowcount
        before = _checkpoint(self.db)
        point = Checkpoint(last[0], last[1], (before.purged if before else 0) + deleted)
        conn.execute("insert or replace into audit_checkpoint (one, through, hash, purged, at) values (1, ?, ?, ?, ?)",
                     [point.through, point.hash, point.purged, at])
        return point

    def _reference_of(self, item_id: str) -> str:
        rows = list(self.db.query("select reference from outgoing where id = ?", [item_id]))
        return rows[0]["reference"] if rows else ""


def _counts(outcome: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in outcome.items() if k.startswith("rows_") or k == "warnings"}


def _plain(value: object) -> object:
    """A value as SQLite takes it: an enum (a kind, a state) as its text."""
    return value.value if isinstance(value, Enum) else value
