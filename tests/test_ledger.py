"""The ledger: a real SQLite file; messages recorded once, outcomes and sending states, events."""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3

import pytest

from gateway.ledger import Ledger

SHA_A = hashlib.sha256(b"message A").hexdigest()
SHA_B = hashlib.sha256(b"message B").hexdigest()


@pytest.fixture
def ledger(tmp_path) -> Ledger:
    return Ledger(tmp_path / "var" / "gateway.db")


def count(ledger: Ledger, table: str) -> int:
    return ledger.db[table].count


def test_the_file_is_a_real_sqlite_database(tmp_path):
    path = tmp_path / "deep" / "folder" / "gateway.db"
    Ledger(path).receive("INBOX", 7, 1, SHA_A)
    with sqlite3.connect(path) as conn:
        assert conn.execute("select count(*) from messages").fetchone() == (1,)
        assert conn.execute("pragma journal_mode").fetchone() == ("wal",)


def test_receive_records_a_message(ledger):
    record = ledger.receive("INBOX", 7, 1, SHA_A)
    assert record.sha256 == SHA_A
    assert record.state == "received"
    assert re.fullmatch(r"LDOR-\d{8}-[0-9A-F]{10}", record.reference)
    assert record.reference.endswith(SHA_A[:10].upper())
    row = ledger.message(record.reference)
    assert (row.mailbox, row.uidvalidity, row.uid, row.state) == ("INBOX", 7, 1, "received")
    assert [e.event for e in ledger.events(record.reference)] == ["received"]


def test_receive_is_idempotent_by_hash(ledger):
    first = ledger.receive("INBOX", 7, 1, SHA_A)
    assert ledger.receive("INBOX", 7, 1, SHA_A) == first
    assert ledger.receive("INBOX", 7, 99, SHA_A) == first  # same bytes, delivered again under another UID
    assert count(ledger, "messages") == 1
    assert len(ledger.events(first.reference)) == 1


def test_receive_is_idempotent_by_mailbox_uidvalidity_and_uid(ledger):
    first = ledger.receive("INBOX", 7, 1, SHA_A)
    assert ledger.receive("INBOX", 7, 1, SHA_B) == first
    assert count(ledger, "messages") == 1


def test_a_changed_uidvalidity_with_the_same_bytes_is_still_recognised(ledger):
    first = ledger.receive("INBOX", 7, 1, SHA_A)
    again = ledger.receive("INBOX", 8, 1, SHA_A)  # the server renumbered its mailbox
    assert again == first
    assert count(ledger, "messages") == 1


def test_a_new_message_is_new(ledger):
    first = ledger.receive("INBOX", 7, 1, SHA_A)
    other_uid = ledger.receive("INBOX", 7, 2, SHA_B)
    assert other_uid.reference != first.reference
    other_mailbox = ledger.receive("Archive", 7, 1, hashlib.sha256(b"C").hexdigest())
    other_validity = ledger.receive("INBOX", 8, 1, hashlib.sha256(b"D").hexdigest())
    assert len({first.reference, other_uid.reference, other_mailbox.reference, other_validity.reference}) == 4
    assert count(ledger, "messages") == 4


def test_records_survive_reopening(tmp_path):
    path = tmp_path / "gateway.db"
    first = Ledger(path).receive("INBOX", 7, 1, SHA_A)
    reopened = Ledger(path)
    assert reopened.find_message("INBOX", 7, 1, SHA_A) == first
    assert reopened.receive("INBOX", 9, 5, SHA_A) == first


def outgoing(item_id: str, kind: str = "package", **extra) -> dict:
    return {"id": item_id, "kind": kind, "recipient": "ldor@islington.example", "borough": "E09000019",
            "rows": 3, "sha256": hashlib.sha256(item_id.encode()).hexdigest(), **extra}


def test_record_outcome(ledger):
    record = ledger.receive("INBOX", 7, 1, SHA_A)
    outcome = {"state": "queued", "outcome": "accepted", "provider": "10001234",
               "rows_read": 5, "rows_forwarded": 3, "rows_rejected": 2, "warnings": 1}
    ledger.record_outcome(record, outcome, [outgoing("p1"), outgoing("r1", kind="receipt", rows=0)])
    row = ledger.message(record.reference)
    assert {k: getattr(row, k) for k in outcome} == outcome
    assert ledger.outgoing_state("p1") == "queued"
    assert ledger.outgoing("r1").kind == "receipt"
    assert ledger.outgoing("p1").attempts == 0
    assert ledger.outgoing("p1").reference == record.reference
    last = ledger.events(record.reference)[-1]
    assert last.event == "queued"
    assert json.loads(last.detail) == {"rows_read": 5, "rows_forwarded": 3, "rows_rejected": 2, "warnings": 1}


def test_record_outcome_never_requeues_what_was_sent(ledger):
    record = ledger.receive("INBOX", 7, 1, SHA_A)
    ledger.record_outcome(record, {"state": "queued"}, [outgoing("p1"), outgoing("p2")])
    ledger.mark_sent("p1")
    ledger.record_outcome(record, {"state": "queued"}, [outgoing("p1"), outgoing("p2")])  # after a crash
    assert ledger.outgoing_state("p1") == "sent"
    assert ledger.outgoing("p1").attempts == 1
    assert ledger.outgoing_state("p2") == "queued"
    assert count(ledger, "outgoing") == 2


def test_a_held_package_is_recorded_held(ledger):
    record = ledger.receive("INBOX", 7, 1, SHA_A)
    ledger.record_outcome(record, {"state": "queued"}, [outgoing("h1", state="held", last_error="no key")])
    assert ledger.outgoing_state("h1") == "held"


def test_mark_sent(ledger):
    record = ledger.receive("INBOX", 7, 1, SHA_A)
    ledger.record_outcome(record, {"state": "queued"}, [outgoing("p1")])
    ledger.mark_failed("p1", "421 try later", permanent=False)
    ledger.mark_sent("p1")
    row = ledger.outgoing("p1")
    assert row.state == "sent"
    assert row.attempts == 2
    assert row.last_error is None
    assert row.sent_at
    events = [e.event for e in ledger.events(record.reference)]
    assert events[-2:] == ["send-deferred", "sent"]
    assert json.loads(ledger.events(record.reference)[-1].detail) == {"id": "p1"}


def test_mark_failed_retryable_stays_queued(ledger):
    record = ledger.receive("INBOX", 7, 1, SHA_A)
    ledger.record_outcome(record, {"state": "queued"}, [outgoing("p1")])
    ledger.mark_failed("p1", "451 greylisted", permanent=False)
    ledger.mark_failed("p1", "421 busy", permanent=False)
    row = ledger.outgoing("p1")
    assert (row.state, row.attempts, row.last_error) == ("queued", 2, "421 busy")


def test_mark_failed_permanent(ledger):
    record = ledger.receive("INBOX", 7, 1, SHA_A)
    ledger.record_outcome(record, {"state": "queued"}, [outgoing("p1")])
    ledger.mark_failed("p1", "550 no such user", permanent=True)
    row = ledger.outgoing("p1")
    assert (row.state, row.attempts, row.last_error) == ("failed", 1, "550 no such user")
    assert ledger.events(record.reference)[-1].event == "send-failed"


def test_mark_held(ledger):
    record = ledger.receive("INBOX", 7, 1, SHA_A)
    ledger.record_outcome(record, {"state": "queued"}, [outgoing("p1")])
    ledger.mark_held("p1", "the recipient's key expired")
    row = ledger.outgoing("p1")
    assert (row.state, row.last_error, row.attempts) == ("held", "the recipient's key expired", 0)
    assert ledger.events(record.reference)[-1].event == "held"


def test_set_state(ledger):
    record = ledger.receive("INBOX", 7, 1, SHA_A)
    ledger.set_state(record, "done")
    assert ledger.message(record.reference).state == "done"
    assert ledger.find_message("INBOX", 7, 1, SHA_A).state == "done"
    assert [e.event for e in ledger.events(record.reference)] == ["received", "done"]


def test_unknown_ids(ledger):
    assert ledger.outgoing_state("nope") is None
    assert ledger.outgoing("nope") is None
    assert ledger.message("LDOR-00000000-0000000000") is None
    assert ledger.find_message("INBOX", 1, 1, SHA_A) is None


def test_a_deferred_message_keeps_its_next_try(ledger):
    record = ledger.receive("INBOX", 7, 1, SHA_A)
    ledger.record_outcome(record, {"state": "queued"}, [outgoing("p1")])
    assert ledger.outgoing("p1").next_attempt_at is None
    ledger.mark_failed("p1", "451 greylisted", permanent=False, next_attempt_at="2025-01-06T10:05:00+00:00")
    assert ledger.outgoing("p1").next_attempt_at == "2025-01-06T10:05:00+00:00"
    ledger.mark_sent("p1")
    assert ledger.outgoing("p1").next_attempt_at is None


def test_give_up_fails_without_counting_an_attempt(ledger):
    record = ledger.receive("INBOX", 7, 1, SHA_A)
    ledger.record_outcome(record, {"state": "queued"}, [outgoing("p1")])
    ledger.mark_failed("p1", "451", permanent=False, next_attempt_at="2025-01-06T10:05:00+00:00")
    ledger.give_up("p1", "given up after 48 hours")
    row = ledger.outgoing("p1")
    assert (row.state, row.attempts, row.last_error, row.next_attempt_at) == ("failed", 1, "given up after 48 hours", None)
    ledger.requeue("p1")
    row = ledger.outgoing("p1")
    assert (row.state, row.attempts, row.last_error) == ("queued", 0, None)
    assert [e.event for e in ledger.events(record.reference)][-2:] == ["send-failed", "requeued"]


def test_mark_bounced(ledger):
    record = ledger.receive("INBOX", 7, 1, SHA_A)
    ledger.record_outcome(record, {"state": "queued"}, [outgoing("p1")])
    ledger.mark_sent("p1")
    ledger.mark_bounced("p1", "5.1.1", "failed")
    row = ledger.outgoing("p1")
    assert (row.state, row.status) == ("bounced", "5.1.1") and "5.1.1" in row.last_error
    assert row.sent_at  # when it left stays known
    assert json.loads(ledger.events(record.reference)[-1].detail) == {"id": "p1", "status": "5.1.1"}


def test_release_turns_a_held_package_into_a_queued_one(ledger):
    record = ledger.receive("INBOX", 7, 1, SHA_A)
    ledger.record_outcome(record, {"state": "queued"}, [outgoing("h1", sha256="", state="held", last_error="no key")])
    ledger.release("h1", "ab" * 32)
    row = ledger.outgoing("h1")
    assert (row.state, row.sha256, row.last_error, row.attempts) == ("queued", "ab" * 32, None, 0)
    assert ledger.events(record.reference)[-1].event == "released"
    ledger.mark_sent("h1")
    ledger.release("h1", "cd" * 32)  # only a held package is released
    assert (ledger.outgoing_state("h1"), ledger.outgoing("h1").sha256) == ("sent", "ab" * 32)


def test_add_outgoing_records_the_gateways_own_mail_once(ledger):
    ledger.add_outgoing("LDOR-X", [outgoing("a1", kind="alert", rows=0)])
    assert ledger.outgoing("a1").reference == "LDOR-X" and ledger.outgoing_state("a1") == "queued"
    ledger.mark_sent("a1")
    ledger.add_outgoing("LDOR-X", [outgoing("a1", kind="alert", rows=0)])
    assert ledger.outgoing_state("a1") == "sent"


def test_listings_by_state_and_recent_sending(ledger):
    record = ledger.receive("INBOX", 7, 1, SHA_A)
    ledger.record_outcome(record, {"state": "queued"}, [outgoing("p1"), outgoing("p2"), outgoing("h1", state="held")])
    ledger.mark_sent("p2")
    assert [r.id for r in ledger.outgoing_in("queued")] == ["p1"]
    assert sorted(r.id for r in ledger.outgoing_in("queued", "held")) == ["h1", "p1"]
    assert [r.id for r in ledger.sent_since("2000-01-01T00:00:00+00:00")] == ["p2"]
    assert ledger.sent_since("2999-01-01T00:00:00+00:00") == []


def test_a_ledger_from_before_the_retry_columns_gains_them(tmp_path):
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.execute("create table outgoing (id text primary key, reference text, kind text, recipient text, borough text, "
                     "rows integer, sha256 text, state text, attempts integer, last_error text, queued_at text, sent_at text)")
        conn.execute("insert into outgoing (id, kind, state, attempts) values ('old', 'package', 'queued', 2)")
    ledger = Ledger(path)
    row = ledger.outgoing("old")
    assert (row.state, row.attempts, row.next_attempt_at, row.status) == ("queued", 2, None, None)
