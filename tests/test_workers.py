"""A burst handled by worker processes (pipeline._in_workers, workers.py): the same outcome as one process,
a worker's death counted as a handling death, the workers' log records in the gateway's log."""

from __future__ import annotations

import hashlib
import logging
import os
import signal
from collections import Counter

from helpers import ADMIN, PROVIDER_SENDER, install, provider_message

from gateway import pipeline
from gateway.app import build
from gateway.demo.sample import people, workbook
from gateway.ledger import Ledger

MARK = "please stop the worker"  # a subject that makes a worker process die (injected below, test-side only)


def _return(directory, keys, seed: int) -> bytes:
    crowd = people(directory, {"E09000019": 2, "E09000007": 1, "E09000012": 1}, seed=seed)
    return keys.encrypt_for_gateway(workbook("Example College", "10001234", [p.cells() for p in crowd]))


def _burst(directory, keys) -> list[bytes]:
    """Good returns, the same file twice in one burst, a file sent in clear, and an unknown sender."""
    first = _return(directory, keys, 700)
    return [
        provider_message([("a.xlsx.gpg", first)]),
        provider_message([("b.xlsx.gpg", _return(directory, keys, 701))]),
        provider_message([("a-again.xlsx.gpg", first)], subject="LDOR return (resent)"),
        provider_message([("plain.xlsx", workbook("Example College", "10001234", []))]),
        provider_message([("c.xlsx.gpg", _return(directory, keys, 702))], sender="someone@elsewhere.example"),
        provider_message([("d.xlsx.gpg", _return(directory, keys, 703))]),
    ]


def _outcome(root) -> dict:
    """What the ledger says, without times, attempts or order of events (a worker's run interleaves them)."""
    db = Ledger(root / "var" / "gateway.db").db
    columns = "reference, state, outcome, provider, rows_read, rows_forwarded, rows_rejected, warnings"
    return {
        "messages": [tuple(row.values()) for row in db.query(f"select {columns} from messages order by rowid")],
        "outgoing": sorted(tuple(row.values()) for row in db.query(
            "select id, kind, recipient, borough, rows, state from outgoing")),
        "files": sorted(tuple(row.values()) for row in db.query("select provider, sha256, reference from files")),
        "events": Counter((row["reference"], row["event"]) for row in db.query("select reference, event from events")),
    }


def _sent(smtp, since: int) -> Counter:
    from email import message_from_bytes, policy

    return Counter((str(message_from_bytes(m.data, policy=policy.default)["Message-ID"]), tuple(m.rcpt_tos))
                   for m in smtp.messages[since:])


def test_workers_give_the_same_messages_ledger_and_mail_as_one_process(deployment, directory, keys, monkeypatch, tmp_path):
    burst = _burst(directory, keys)
    monkeypatch.setattr(pipeline, "WORKERS", 1)
    for raw in burst:
        deployment.deliver(raw)
    assert deployment.run_once() == 0
    alone, alone_sent = _outcome(deployment.root), _sent(deployment.smtp, 0)

    second = tmp_path / "second"
    imap, smtp = deployment.imap, deployment.smtp
    install(second, keys, (imap.host, imap.port, imap.user, "TEST_IMAP_PASSWORD"), (smtp.host, smtp.port), timeout=10)
    monkeypatch.setattr(pipeline, "WORKERS", 2)
    for raw in burst:
        deployment.deliver(raw)
    before = len(smtp.messages)
    from gateway.cli import main

    assert main(["--config", str(second / "config.toml"), "run", "--once"]) == 0
    assert _outcome(second) == alone
    assert _sent(smtp, before) == alone_sent
    states = [row[1:3] for row in alone["messages"]]
    # the resent file is refused as a duplicate by both, though a worker took it for new (checked when settled)
    assert states == [("done", "accepted"), ("done", "accepted"), ("done", "rejected"), ("done", "rejected"),
                      ("quarantined", "quarantined"), ("done", "accepted")]
    assert imap.list_uids("INBOX") == []


def test_a_worker_that_dies_on_a_message_is_a_handling_death_and_the_message_is_set_aside(deployment, directory, keys, monkeypatch):
    gateway_pid = os.getpid()
    unpack = pipeline.unpack

    def dies_on_the_marked_message(raw, *args, **kwargs):
        if os.getpid() != gateway_pid and MARK.encode() in raw:
            os.kill(os.getpid(), signal.SIGKILL)  # as a native crash would, while the content is being opened
        return unpack(raw, *args, **kwargs)

    monkeypatch.setattr(pipeline, "unpack", dies_on_the_marked_message)
    monkeypatch.setattr(pipeline, "WORKERS", 2)  # whatever this machine's cores
    deployment.deliver(provider_message([("a.xlsx.gpg", _return(directory, keys, 710))]))
    deployment.deliver(provider_message([("b.xlsx.gpg", _return(directory, keys, 711))], subject=MARK))
    deployment.deliver(provider_message([("c.xlsx.gpg", _return(directory, keys, 712))]))
    run = pipeline.run_once(build(deployment.config))
    # each message counted once, however often it was offered to a worker
    assert (run.seen, run.processed, run.quarantined, run.waiting) == (3, 2, 1, 0)

    ledger = Ledger(deployment.root / "var" / "gateway.db")
    killer = [m for m in ledger.messages() if m.state == "quarantined"]
    assert len(killer) == 1 and killer[0].attempts == pipeline.MAX_HANDLING_DEATHS
    assert "set-aside" in [e.event for e in ledger.events(killer[0].reference)]
    assert [m.outcome for m in ledger.messages() if m.state == "done"] == ["accepted", "accepted"]
    assert deployment.imap.list_uids("INBOX") == [] and len(deployment.imap.list_uids("Quarantine")) == 1
    answers = Counter(tuple(m.rcpt_tos) for m in deployment.smtp.messages)
    assert answers[(PROVIDER_SENDER,)] == 3  # two receipts and the answer to the one set aside
    assert answers[(ADMIN,)] == 1  # the administrator told of it
    assert answers[("ldor@islington.example",)] == 2  # the others forwarded


def test_a_worker_dying_after_the_content_was_checked_is_not_counted_and_the_message_waits(deployment, directory, keys,
                                                                                              monkeypatch):
    gateway_pid = os.getpid()
    package_message = pipeline.package_message
    dying = [True]

    def dies_while_packing(table, batch, *args, **kwargs):
        # the marked return is the one with three Camden residents
        if os.getpid() != gateway_pid and dying[0] and batch.borough.code == "E09000007" and len(batch.rows) == 3:
            os.kill(os.getpid(), signal.SIGKILL)
        return package_message(table, batch, *args, **kwargs)

    monkeypatch.setattr(pipeline, "package_message", dies_while_packing)
    monkeypatch.setattr(pipeline, "WORKERS", 2)
    crowd = people(directory, {"E09000019": 1, "E09000007": 3}, seed=721)
    marked = keys.encrypt_for_gateway(workbook("Example College", "10001234", [p.cells() for p in crowd]))
    deployment.deliver(provider_message([("a.xlsx.gpg", _return(directory, keys, 720))]))
    deployment.deliver(provider_message([("b.xlsx.gpg", marked)]))
    assert deployment.run_once() == 0
    ledger = Ledger(deployment.root / "var" / "gateway.db")
    waiting = [m for m in ledger.messages() if m.state == "received"]
    assert len(waiting) == 1 and waiting[0].attempts == 0  # the gateway's own work failed, not the message
    assert len(deployment.imap.list_uids("INBOX")) == 1  # nothing lost: it waits, unanswered and unmoved
    assert Counter(tuple(m.rcpt_tos) for m in deployment.smtp.messages)[("ldor@camden.example",)] == 1  # the first's

    dying[0] = False
    assert deployment.run_once() == 0
    assert deployment.imap.list_uids("INBOX") == []
    assert [m.state for m in ledger.messages()] == ["done", "done"]
    assert Counter(tuple(m.rcpt_tos) for m in deployment.smtp.messages)[("ldor@camden.example",)] == 2


def test_the_workers_log_records_reach_the_gateways_log(deployment, directory, keys, caplog, monkeypatch):
    monkeypatch.setattr(pipeline, "WORKERS", 2)
    deployment.deliver(provider_message([("a.xlsx.gpg", _return(directory, keys, 730))]))
    deployment.deliver(provider_message([("c.xlsx.gpg", _return(directory, keys, 731))], sender="someone@elsewhere.example"))
    with caplog.at_level(logging.INFO):
        assert deployment.run_once() == 0
    # logged by the worker that found the sender unknown, written by the gateway's own handlers
    assert [r for r in caplog.records if r.name == "gateway.pipeline" and "quarantined" in r.getMessage()
            and r.process != os.getpid()]


def test_after_the_process_died_handling_mail_the_next_run_takes_one_message_at_a_time(deployment, directory, keys,
                                                                                       monkeypatch):
    """A death of the gateway itself counts against every message in hand: with workers, good ones beside the
    culprit. So while such a message is unfinished, a run has no workers, and a death falls on one message."""
    monkeypatch.setattr(pipeline, "WORKERS", 2)
    for seed in range(3):
        deployment.deliver(provider_message([(f"r{seed}.xlsx.gpg", _return(directory, keys, 720 + seed))]))
    with deployment.imap.client() as conn:
        conn.select("INBOX", readonly=True)
        uidvalidity = int(conn.untagged_responses["UIDVALIDITY"][-1])
    ledger = Ledger(deployment.root / "var" / "gateway.db")
    uid = deployment.imap.list_uids("INBOX")[0]
    raw = deployment.imap.fetch_all("INBOX")[0]
    ledger.begin_attempt(ledger.receive("INBOX", uidvalidity, uid, hashlib.sha256(raw).hexdigest()))  # as a death leaves it
    assert ledger.died_handling("INBOX", uidvalidity)
    used = []
    in_workers = pipeline._in_workers
    monkeypatch.setattr(pipeline, "_in_workers", lambda *args: used.append(1) or in_workers(*args))

    run = pipeline.run_once(build(deployment.config))
    assert used == [] and (run.seen, run.processed) == (3, 3)
    assert not ledger.died_handling("INBOX", uidvalidity)
    for seed in range(2):  # and with nothing unfinished, a burst goes to the workers again
        deployment.deliver(provider_message([(f"s{seed}.xlsx.gpg", _return(directory, keys, 730 + seed))]))
    assert pipeline.run_once(build(deployment.config)).processed == 2 and used == [1]
