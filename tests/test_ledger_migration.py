"""A ledger written by the release before the typed ledger (tests/data/ledger/2026-11-26-release.db: a real
`gateway run --once` through Dovecot of two returns, a held package, a daily digest and a quarantined
stranger, then `gateway outbox --flush-digests`) opens, migrates, and reads back as the same values."""

from __future__ import annotations

import dataclasses
import shutil
import sqlite3
from pathlib import Path

import pytest
from leaks import Scan, personal_values

from gateway.admin.audit import verify
from gateway.ledger import (
    MIGRATIONS,
    EventRecord,
    Kind,
    Ledger,
    MessageRecord,
    MessageState,
    OutgoingRecord,
    OutgoingState,
)

RELEASE = Path(__file__).parent / "data" / "ledger" / "2026-11-26-release.db"


@pytest.fixture
def old(tmp_path) -> Path:
    path = tmp_path / "gateway.db"
    shutil.copy(RELEASE, path)
    return path


def _rows(path: Path, sql: str) -> list[dict]:
    with sqlite3.connect(path) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(row) for row in conn.execute(sql)]


def test_the_release_ledger_holds_no_personal_data():
    scan = Scan(personal_values())
    scan.look(str(RELEASE), RELEASE.read_bytes())
    assert scan.found == []


def test_a_release_ledger_is_migrated_once_and_keeps_its_schema(old):
    tables = {name: _rows(old, f"pragma table_info({name})") for name in ("messages", "outgoing", "files", "events", "audit")}
    assert _rows(old, "select name from sqlite_master where name = '_sqlite_migrations'") == []
    ledger = Ledger(old)
    assert MIGRATIONS.pending(ledger.db) == []
    assert [m.name for m in MIGRATIONS.applied(ledger.db)] == [
        "m001_messages_outgoing_events", "m002_retries_bounces_reasons_digests", "m003_message_attempts", "m004_files",
        "m005_events", "m006_audit_trail"]
    assert {name: _rows(old, f"pragma table_info({name})") for name in tables} == tables  # nothing to add: all there
    events = len(_rows(old, "select id from events"))
    Ledger(old)  # a second opening finds nothing to do
    assert len(_rows(old, "select * from _sqlite_migrations")) == 6 and len(_rows(old, "select id from events")) == events


def test_every_record_of_a_release_ledger_reads_as_the_typed_records_with_the_same_values(old):
    messages = _rows(old, "select * from messages order by rowid")
    outgoing = _rows(old, "select * from outgoing order by id")
    events = _rows(old, "select * from events order by id")
    ledger = Ledger(old)

    read = ledger.messages()
    assert [dataclasses.asdict(m) for m in read] == [{**row, "attempts": row["attempts"] or 0} for row in messages]
    assert all(isinstance(m, MessageRecord) and type(m.state) is MessageState for m in read)
    assert {m.state for m in read} == {MessageState.DONE, MessageState.QUARANTINED}
    assert all(ledger.message(row["reference"]) == m for row, m in zip(messages, read, strict=False))

    typed = [ledger.outgoing(row["id"]) for row in outgoing]
    assert [{k: v for k, v in dataclasses.asdict(o).items() if k != "provider"} for o in typed] == outgoing
    assert all(isinstance(o, OutgoingRecord) and type(o.kind) is Kind and type(o.state) is OutgoingState for o in typed)
    assert {(o.kind, o.state) for o in typed} == {
        (Kind.PACKAGE, OutgoingState.SENT), (Kind.PACKAGE, OutgoingState.HELD), (Kind.RECEIPT, OutgoingState.SENT),
        (Kind.ALERT, OutgoingState.SENT), (Kind.PART, OutgoingState.DIGESTED), (Kind.DIGEST, OutgoingState.SENT)}
    assert ledger.outgoing_in(OutgoingState.HELD) == [o for o in sorted(typed, key=lambda o: (o.queued_at, o.id))
                                                      if o.state == OutgoingState.HELD]

    by_reference: dict[str, list[EventRecord]] = {}
    for row in events:
        by_reference.setdefault(row["reference"], []).append(EventRecord(**row))
    assert all(ledger.events(reference) == read_back for reference, read_back in by_reference.items())

    # The audit chain the release wrote goes on in the same format: intact before and after a new event.
    assert verify(ledger) == []
    ledger.event("after-migration", "checked")
    assert verify(ledger) == []
