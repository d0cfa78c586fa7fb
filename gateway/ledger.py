"""The SQLite ledger (sqlite-utils): messages, outgoing mail and events, with counts, hashes and ids only.

Never a cell value, a name, a subject or an attachment name: the ledger outlives the data it describes.
Every event is also chained into the audit trail (audit.py) in the same transaction.

Retention (`purge`) drops the details of what happened before a date and keeps the counts, so the
monthly report can still be made for those months: a message keeps its reference, provider, dates,
outcome and row counts, losing its hash and its place in the mailbox; a package keeps its id,
reference, borough, recipient (an address from rules/boroughs.toml), rows, reasons, state and dates,
losing its hash and error text (so does a digest, and a return's rows it took are kept as they are); other outgoing mail (receipts, alerts, notices, reminders) is
deleted, and so are the events and the hashes of forwarded files; the audit trail is cut at a
checkpoint (audit.py). Nothing still queued or held is touched.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import sqlite_utils

from . import audit


def utcnow() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class MessageRecord:
    sha256: str
    reference: str
    first_seen: str
    state: str  # received | queued | done | quarantined
    attempts: int = 0  # times its handling began; more than one while 'received' means the process died on it


class Ledger:
    """One SQLite file; every write commits before the caller goes on."""

    def __init__(self, path: Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite_utils.Database(str(path))
        self.db.conn.execute("PRAGMA journal_mode=WAL")
        self.db.conn.execute("PRAGMA synchronous=FULL")
        self._create()

    def _create(self) -> None:
        db = self.db
        if "messages" not in db.table_names():
            db["messages"].create(
                {
                    "sha256": str, "reference": str, "mailbox": str, "uidvalidity": int, "uid": int,
                    "first_seen": str, "updated": str, "state": str, "outcome": str, "provider": str,
                    "rows_read": int, "rows_forwarded": int, "rows_rejected": int, "warnings": int,
                },
                pk="sha256",
            )
            db["messages"].create_index(["mailbox", "uidvalidity", "uid"])
            db["messages"].create_index(["reference"], unique=True)
        if "outgoing" not in db.table_names():
            db["outgoing"].create(
                {
                    "id": str, "reference": str, "kind": str, "recipient": str, "borough": str,
                    "rows": int, "sha256": str, "state": str, "attempts": int, "last_error": str,
                    "queued_at": str, "sent_at": str,
                },
                pk="id",
            )
            db["outgoing"].create_index(["reference"])
        # Added after the first release: a ledger written by it gains them on opening.
        # when to try again; a bounce's status code (5.1.1); a package's counts by reason, as JSON {"Leaver": 3, ...}
        # and, for a return's rows waiting for a borough's digest (kind "part"), the id of the digest that took them
        for column in ("next_attempt_at", "status", "reasons", "digest"):
            if column not in db["outgoing"].columns_dict:
                db["outgoing"].add_column(column, str)
        db["outgoing"].create_index(["kind", "state"], if_not_exists=True)
        if "attempts" not in db["messages"].columns_dict:
            db["messages"].add_column("attempts", int)
        if "files" not in db.table_names():
            # The hash of each decrypted return that was forwarded, to notice the same file sent again.
            db["files"].create({"provider": str, "sha256": str, "reference": str, "first_seen": str}, pk=("provider", "sha256"))
        if "events" not in db.table_names():
            db["events"].create(
                {"id": int, "at": str, "reference": str, "event": str, "detail": str}, pk="id"
            )
        db["events"].create_index(["reference"], if_not_exists=True)
        if "audit" not in db.table_names():
            with db.conn:
                db.conn.execute("begin immediate")  # two processes opening an older ledger at once: one backfills
                if audit.create(db):  # a ledger older than the trail: its events so far open it
                    for row in db.query("select * from events order by id"):
                        audit.append(db.conn, row["id"], row["at"], row["reference"], row["event"],
                                     self._audited(json.loads(row["detail"]) if row["detail"] else {}))

    # -- messages -----------------------------------------------------------------------------
    def find_message(self, mailbox: str, uidvalidity: int, uid: int, sha256: str) -> MessageRecord | None:
        """The message as the ledger knows it: by its hash, or by mailbox, UIDVALIDITY and UID."""
        rows = list(self.db.query(
            "select * from messages where sha256 = ? or (mailbox = ? and uidvalidity = ? and uid = ?) limit 1",
            [sha256, mailbox, uidvalidity, uid],
        ))
        return _record(rows[0]) if rows else None

    def receive(self, mailbox: str, uidvalidity: int, uid: int, sha256: str) -> MessageRecord:
        """Record a message as received (once); its reference is derived from its hash, so stable."""
        known = self.find_message(mailbox, uidvalidity, uid, sha256)
        if known:
            return known
        now = utcnow()
        reference = f"LDOR-{now[:10].replace('-', '')}-{sha256[:10].upper()}"
        with self.db.conn:
            self.db["messages"].insert({
                "sha256": sha256, "reference": reference, "mailbox": mailbox, "uidvalidity": uidvalidity,
                "uid": uid, "first_seen": now, "updated": now, "state": "received",
            })
            self._event(reference, "received", uid=uid)
        return MessageRecord(sha256, reference, now, "received")

    def record_outcome(self, record: MessageRecord, outcome: dict, outgoing: list[dict],
                       files: list[tuple[str, str]] = ()) -> None:
        """In one transaction: the message's counts and state, the outgoing mail now in the outbox, and
        the hashes of the returns it forwarded."""
        now = utcnow()
        with self.db.conn:
            for sha256, reference in files:
                self.db["files"].insert({"provider": outcome.get("provider", ""), "sha256": sha256,
                                         "reference": reference, "first_seen": now}, ignore=True)
            for item in outgoing:
                if self.outgoing_state(item["id"]) in ("sent", "digested"):
                    continue
                self._upsert_outgoing(record.reference, item, now)
            self.db["messages"].update(record.sha256, {**outcome, "updated": now})
            self._event(record.reference, outcome.get("state", "queued"), **_counts(outcome))

    def begin_attempt(self, record: MessageRecord) -> MessageRecord:
        """Count one more start of handling, committed before any of it happens, so that a process that
        dies while handling the message leaves the count behind."""
        with self.db.conn:
            self.db.conn.execute("update messages set attempts = coalesce(attempts, 0) + 1 where sha256 = ?", [record.sha256])
        return MessageRecord(record.sha256, record.reference, record.first_seen, record.state, record.attempts + 1)

    def forget_attempt(self, record: MessageRecord) -> None:
        """Take back an attempt that ended in the gateway's own failure (disk full), not in the message's."""
        with self.db.conn:
            self.db.conn.execute("update messages set attempts = max(coalesce(attempts, 0) - 1, 0) where sha256 = ?", [record.sha256])

    def set_state(self, record: MessageRecord, state: str) -> None:
        with self.db.conn:
            self.db["messages"].update(record.sha256, {"state": state, "updated": utcnow()})
            self._event(record.reference, state)

    def message(self, reference: str) -> dict | None:
        rows = list(self.db["messages"].rows_where("reference = ?", [reference]))
        return rows[0] if rows else None

    def earlier_file(self, provider: str, sha256: str, days: int, reference: str) -> dict | None:
        """The earlier forwarding of this very file by this provider within `days`, if any."""
        since = (datetime.now(timezone.utc) - timedelta(days=days)).isoformat(timespec="seconds")
        rows = list(self.db.query(
            "select * from files where provider = ? and sha256 = ? and first_seen >= ? and reference != ?",
            [provider, sha256, since, reference],
        ))
        return rows[0] if rows else None

    # -- outgoing -----------------------------------------------------------------------------
    def outgoing_state(self, item_id: str) -> str | None:
        rows = list(self.db.query("select state from outgoing where id = ?", [item_id]))
        return rows[0]["state"] if rows else None

    def outgoing(self, item_id: str) -> dict | None:
        rows = list(self.db["outgoing"].rows_where("id = ?", [item_id]))
        return rows[0] if rows else None

    def add_outgoing(self, reference: str, items: list[dict]) -> None:
        """Record mail the gateway queued on its own (alerts about delivery), not for a received message."""
        now = utcnow()
        with self.db.conn:
            for item in items:
                if self.outgoing_state(item["id"]) != "sent":
                    self._upsert_outgoing(reference, item, now)
                    self._event(reference, "queued", id=item["id"], kind=item["kind"])

    def outgoing_in(self, *states: str) -> list[dict]:
        """Outgoing mail in these states, oldest first (for the outbox report)."""
        marks = ", ".join("?" for _ in states)
        return list(self.db.query(f"select * from outgoing where state in ({marks}) order by queued_at, id", list(states)))

    def sent_since(self, since: str) -> list[dict]:
        return list(self.db.query("select * from outgoing where state = 'sent' and sent_at >= ? order by sent_at", [since]))

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
        state = "failed" if permanent else "queued"
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

    def waiting_parts(self) -> list[dict]:
        """A return's rows for one digest recipient each, not yet taken by a digest, oldest first."""
        return list(self.db.query(
            "select o.*, m.provider from outgoing o left join messages m on m.reference = o.reference "
            "where o.kind = 'part' and o.state = 'waiting' order by o.queued_at, o.id"))

    def queue_digest(self, reference: str, items: list[dict], parts: list[str]) -> None:
        """In one transaction: the digest (queued, or held for want of a key) and any notices about it, now
        in the outbox, and the parts it holds marked as taken by it (items[0])."""
        now = utcnow()
        with self.db.conn:
            for item in items:
                if self.outgoing_state(item["id"]) != "sent":
                    self._upsert_outgoing(reference, item, now)
            marks = ", ".join("?" for _ in parts)
            self.db.conn.execute(f"update outgoing set state = 'digested', digest = ? where id in ({marks}) "
                                 "and state = 'waiting'", [items[0]["id"], *parts])
            self._event(reference, "digest-queued", id=items[0]["id"], parts=len(parts))

    def _upsert_outgoing(self, reference: str, item: dict, now: str) -> None:
        self.db["outgoing"].upsert(
            {**item, "reference": reference, "state": item.get("state", "queued"), "attempts": 0,
             "queued_at": now, "next_attempt_at": None, "status": None},
            pk="id",
        )

    # -- events -------------------------------------------------------------------------------
    def event(self, reference: str, event: str, **detail: object) -> None:
        with self.db.conn:
            self._event(reference, event, **detail)

    def events(self, reference: str) -> list[dict]:
        return list(self.db["events"].rows_where("reference = ?", [reference], order_by="id"))

    def _event(self, reference: str, event: str, **detail: object) -> None:
        """Write one event and its audit entry; always inside the caller's transaction."""
        at = utcnow()
        cursor = self.db.conn.execute(
            "insert into events (at, reference, event, detail) values (?, ?, ?, ?)",
            [at, reference, event, json.dumps(detail, sort_keys=True) if detail else ""])
        audit.append(self.db.conn, cursor.lastrowid, at, reference, event, self._audited(detail))

    def _audited(self, detail: dict) -> dict:
        """What the audit trail keeps of an event about outgoing mail: which message it was (kind,
        borough, rows, the hash of the message as queued). The recipient is bound by the id."""
        item = self.outgoing(str(detail["id"])) if "id" in detail else None
        if item is None:
            return detail
        return {**detail, "kind": item["kind"], "borough": item["borough"] or "", "rows": item["rows"] or 0,
                "sha256": item["sha256"] or ""}

    # -- retention ----------------------------------------------------------------------------
    def purge(self, before: str) -> dict[str, int]:
        """Drop the details of what was finished before `before` (ISO UTC), keeping counts (module docstring).

        One transaction; a second run finds nothing more to do. Returns how much of each kind went.
        """
        conn = self.db.conn
        done = "state in ('sent', 'failed', 'bounced') and coalesce(sent_at, queued_at) < ?"
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
            point = audit.purge(conn, first_kept - 1, utcnow()) if first_kept else None
            if any(counts.values()) or point is not None:
                marks = {"audit_through": point.through, "audit_hash": point.hash} if point else {}
                self._event("retention", audit.PURGE_EVENT, before=before, **counts, **marks)
        return counts

    def _reference_of(self, item_id: str) -> str:
        rows = list(self.db.query("select reference from outgoing where id = ?", [item_id]))
        return rows[0]["reference"] if rows else ""


def _record(row: dict) -> MessageRecord:
    return MessageRecord(row["sha256"], row["reference"], row["first_seen"], row["state"], row.get("attempts") or 0)


def _counts(outcome: dict) -> dict:
    return {k: v for k, v in outcome.items() if k.startswith("rows_") or k == "warnings"}
