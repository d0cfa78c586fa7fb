"""The audit trail on a ledger written by a real run (Dovecot, aiosmtpd, gpg, SQLite): every event chained,
an edited, deleted or reordered entry named by its id, retention cutting the chain at a checkpoint."""

from __future__ import annotations

import hashlib
import json

import pytest
from helpers import provider_message

from gateway.admin.audit import audit_verify_text, verify
from gateway.demo.sample import people, workbook
from gateway.ledger import GENESIS, Ledger


@pytest.fixture
def ran(deployment, directory, keys):
    """One return for Islington and Camden through `gateway run --once`; the ledger it wrote, and the people."""
    crowd = people(directory, {"E09000019": 2, "E09000007": 1}, seed=5)
    xlsx = workbook("Example College", "10001234", [p.cells() for p in crowd])
    deployment.deliver(provider_message([("Leavers.xlsx.gpg", keys.encrypt_for_gateway(xlsx))]))
    assert deployment.run_once() == 0
    assert len(deployment.smtp.messages) == 3  # two packages and the receipt
    return Ledger(deployment.root / "var" / "gateway.db"), crowd


def _entries(ledger: Ledger) -> list[dict]:
    return list(ledger.db.query("select * from audit order by id"))


def _entry(ledger: Ledger, event: str, kind: str = "package") -> dict:
    return next(e for e in _entries(ledger) if e["event"] == event and json.loads(e["detail"] or "{}").get("kind") == kind)


def test_every_ledger_event_is_chained_with_ids_counts_and_hashes_only(ran):
    ledger, crowd = ran
    events = list(ledger.db.query("select id, at, reference, event from events order by id"))
    entries = _entries(ledger)
    assert [(e["id"], e["at"], e["reference"], e["event"]) for e in entries] == [tuple(e.values()) for e in events]
    assert {"received", "queued", "done", "sent", "validated"} <= {e["event"] for e in entries}
    # The chain, recomputed from its definition: SHA-256 of the previous hash + [at, reference, event, detail].
    previous = GENESIS
    for entry in entries:
        content = json.dumps([entry["at"], entry["reference"], entry["event"], entry["detail"]], separators=(",", ":"))
        assert entry["prev"] == previous
        assert entry["hash"] == hashlib.sha256((previous + content).encode()).hexdigest()
        previous = entry["hash"]
    # Forwarded to whom, with the package's hash: the sent entry names the package, its borough and hash.
    sent = [json.loads(e["detail"]) for e in entries if e["event"] == "sent" and '"package"' in e["detail"]]
    packages = {row["id"]: row for row in ledger.db.query("select * from outgoing where kind = 'package'")}
    assert sorted(d["borough"] for d in sent) == ["E09000007", "E09000019"]
    for detail in sent:
        assert detail["sha256"] == packages[detail["id"]]["sha256"] and detail["rows"] == packages[detail["id"]]["rows"]
    assert any(e["event"] == "sent" and '"receipt"' in e["detail"] for e in entries)
    # No personal data: no address, no name, postcode or ULN of anyone in the return.
    text = json.dumps(entries)
    assert "@" not in text
    for person in crowd:
        for value in (person.family_name, person.first_name, person.postcode, person.uln, person.address):
            assert value not in text
    assert verify(ledger) == []
    code, report = audit_verify_text(ledger)
    assert code == 0 and "Intact" in report and f"Head: entry {entries[-1]['id']}, SHA-256 {entries[-1]['hash']}" in report


def test_an_edited_entry_is_named_whether_or_not_its_hash_was_recomputed(ran):
    ledger, _ = ran
    sent = _entry(ledger, "sent")
    with ledger.db.conn:
        ledger.db.conn.execute("update audit set event = 'held' where id = ?", [sent["id"]])
    assert verify(ledger) == [f"entry {sent['id']}: changed after it was written (its hash does not match its content)"]
    code, text = audit_verify_text(ledger)
    assert code == 1 and f"entry {sent['id']}: changed" in text and "Intact" not in text
    # A careful forger recomputes the entry's hash: the entry after it no longer follows it.
    from gateway.ledger import entry_hash

    forged = entry_hash(sent["prev"], sent["at"], sent["reference"], "held", sent["detail"])
    with ledger.db.conn:
        ledger.db.conn.execute("update audit set hash = ? where id = ?", [forged, sent["id"]])
    problems = verify(ledger)
    assert len(problems) == 1
    assert problems[0].startswith(f"entry {sent['id'] + 1}: does not follow entry {sent['id']}: entry {sent['id']} was changed")


def test_a_deleted_entry_is_named(ran):
    ledger, _ = ran
    sent = _entry(ledger, "sent")  # the first package sent: the other and the receipt follow it
    with ledger.db.conn:
        ledger.db.conn.execute("delete from audit where id = ?", [sent["id"]])
    assert verify(ledger) == [f"entry {sent['id']} deleted: entry {sent['id'] + 1} does not follow entry {sent['id'] - 1}"]
    assert audit_verify_text(ledger)[0] == 1


def test_entries_deleted_from_the_end_are_found_against_the_ledgers_events(ran):
    ledger, _ = ran
    last = _entries(ledger)[-1]["id"]
    with ledger.db.conn:
        ledger.db.conn.execute("delete from audit where id >= ?", [last - 1])
    assert verify(ledger) == [f"entries {last - 1} to {last} missing: the ledger's events go up to {last}, "
                                 f"the audit trail stops at {last - 2} (its end was deleted)"]


def test_reordered_entries_are_named(ran):
    ledger, _ = ran
    sent = _entry(ledger, "sent")
    first, second = sent["id"], sent["id"] + 1
    rows = {row["id"]: row for row in ledger.db.query("select * from audit where id in (?, ?)", [first, second])}
    with ledger.db.conn:  # the two entries trade places; each keeps its own content, links and hash
        for target, source in ((first, second), (second, first)):
            row = rows[source]
            ledger.db.conn.execute("update audit set at = ?, reference = ?, event = ?, detail = ?, prev = ?, hash = ? where id = ?",
                                   [row["at"], row["reference"], row["event"], row["detail"], row["prev"], row["hash"], target])
    assert verify(ledger) == [f"entry {first}: out of order: it was written after entry {second} but stands before it "
                                 "(the entries were reordered)"]


def test_retention_cuts_the_chain_at_a_checkpoint_that_verifies_and_cannot_be_moved(ran):
    ledger, _ = ran
    entries = _entries(ledger)
    cut = entries[len(entries) // 2]["id"]
    with ledger.db.conn:  # the first half happened long ago
        ledger.db.conn.execute("update events set at = '2020-01-01T00:00:00+00:00' where id <= ?", [cut])
    counts = ledger.purge("2021-01-01T00:00:00+00:00")
    assert counts["events"] == cut
    assert list(ledger.db.query("select min(id) as first from audit"))[0]["first"] == cut + 1
    purge = _entries(ledger)[-1]
    assert purge["event"] == "purged" and json.loads(purge["detail"])["audit_through"] == cut
    assert verify(ledger) == []
    code, text = audit_verify_text(ledger)
    assert code == 0 and f"Entries up to {cut} were purged by retention ({cut} in all)" in text
    assert ledger.purge("2021-01-01T00:00:00+00:00") == dict.fromkeys(counts, 0)  # nothing more to do
    # Hiding one more deletion by moving the checkpoint shows.
    with ledger.db.conn:
        following = _entries(ledger)[0]
        ledger.db.conn.execute("delete from audit where id = ?", [following["id"]])
        ledger.db.conn.execute("update audit_checkpoint set through = ?, hash = ?", [following["id"], following["hash"]])
    assert verify(ledger) == [f"the checkpoint (entries up to {following['id']} purged) is not the one the last "
                                 "purge recorded in the trail: it was changed"]


def test_a_ledger_written_before_the_trail_gains_one_holding_its_events(tmp_path):
    ledger = Ledger(tmp_path / "gateway.db")
    record = ledger.receive("INBOX", 7, 1, "ab" * 32)
    ledger.event(record.reference, "validated", rows=3)
    with ledger.db.conn:
        ledger.db.conn.execute("drop table audit")
        ledger.db.conn.execute("drop table audit_checkpoint")
        ledger.db.conn.execute("drop table _sqlite_migrations")  # as the releases before migrations wrote it
    again = Ledger(tmp_path / "gateway.db")
    assert [e["event"] for e in _entries(again)] == ["received", "validated"]
    again.set_state(record, "done")
    assert [e["event"] for e in _entries(again)] == ["received", "validated", "done"]
    assert verify(again) == []


def test_deleting_the_first_entries_shows_and_so_does_deleting_the_first_after_a_checkpoint(ran):
    ledger, _ = ran
    with ledger.db.conn:
        ledger.db.conn.execute("update events set at = '2020-01-01T00:00:00+00:00' where id <= 4")
    ledger.purge("2021-01-01T00:00:00+00:00")
    assert verify(ledger) == []
    with ledger.db.conn:
        ledger.db.conn.execute("delete from audit where id = 5")
    assert verify(ledger) == ["entry 5 deleted: entry 6 does not follow the checkpoint (entry 4)"]
    with ledger.db.conn:
        ledger.db.conn.execute("delete from audit_checkpoint")
    assert verify(ledger) == ["entries 1 to 5 deleted: entry 6 does not follow the start of the trail"]
