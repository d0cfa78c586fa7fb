"""The leak scan itself (tests/leaks.py, run after the suite by conftest's leak_scan): it finds a planted
value in clear, and passes over the same value sealed in OpenPGP."""

from __future__ import annotations

import logging
import time

from helpers import provider_message
from leaks import Recorder, Scan, clear_mail_parts, personal_values


def test_the_scan_knows_the_fixtures_people():
    values = personal_values()
    assert len(values) > 200
    assert "Adeyemi" in values and any(v.startswith("E1 ") or v.startswith("N1 ") for v in values)


def test_a_value_in_clear_is_found_in_a_ledger_an_outbox_a_log_a_record_and_a_mail(tmp_path, keys):
    root = tmp_path / "install"
    (root / "var").mkdir(parents=True)
    (root / "outbox" / "new").mkdir(parents=True)
    (root / "var" / "gateway.db").write_bytes(b"SQLite format 3\0 ... Adeyemi ...")
    (root / "outbox" / "new" / "x.eml").write_bytes(b"Subject: about Brennan\r\n\r\n")
    (root / "gateway.stderr.log").write_bytes(b"INFO row of Chowdhury")
    scan = Scan({"Adeyemi", "Brennan", "Chowdhury", "Dimitrova", "Evans"})
    scan.installation(root)
    record = logging.LogRecord("gateway.x", logging.INFO, __file__, 1, "read %s", ("Dimitrova",), None)
    scan.records([record])
    scan.mails([provider_message([("Evans.xlsx", b"data")])])
    assert len(scan.found) == 5, scan.found
    assert all("Adeyemi" not in f for f in scan.found)  # a report names where, never the value


def test_ciphertext_is_not_taken_for_a_leak(keys):
    sealed = keys.encrypt_for_gateway(b"Adeyemi 9276308686 N1 1AA")
    raw = provider_message([("return.xlsx.gpg", sealed)])
    scan = Scan({"Adeyemi", "9276308686"})
    scan.mails([raw])
    assert scan.found == [] and clear_mail_parts(raw)


def test_the_recorder_keeps_every_gateway_record():
    recorder = Recorder()
    log = logging.getLogger("gateway.leaktest")
    log.addHandler(recorder)
    try:
        log.warning("message %s quarantined", "LDOR-1")
    finally:
        log.removeHandler(recorder)
    assert [r.getMessage() for r in recorder.records] == ["message LDOR-1 quarantined"]
    assert time.time() >= recorder.records[0].created
