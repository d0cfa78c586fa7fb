"""Nothing a sender can do stops the gateway: files read in a child within limits, a message that killed
the process again and again set aside, decrypted and per-message sizes capped, and bounces only from mail it sent."""

from __future__ import annotations

import io
import os
import signal
import sqlite3
import subprocess
import sys
import time
import zipfile
from email.message import EmailMessage

import pytest
from helpers import ADMIN, PROVIDER_SENDER, provider_message
from test_bounce import dsn

from gateway.demo.sample import people, workbook
from gateway.errors import ReadError
from gateway.pipeline import MAX_HANDLING_DEATHS
from gateway.returns.read import read_return

ISLINGTON = "ldor@islington.example"
REJECTION = "LDOR return not accepted"


def far_cell(data: bytes, cell: str = "XFD1048576") -> bytes:
    """A valid return with one more cell far out: python-calamine sizes the dense range to it (512 GB at XFD1048576)."""
    row = int("".join(c for c in cell if c.isdigit()))
    source, out = zipfile.ZipFile(io.BytesIO(data)), io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            body = source.read(info.filename)
            if info.filename == "xl/worksheets/sheet1.xml":
                extra = f'<row r="{row}"><c r="{cell}" t="inlineStr"><is><t>x</t></is></c></row>'
                body = body.replace(b"</sheetData>", extra.encode() + b"</sheetData>")
            target.writestr(info, body)
    return out.getvalue()


def _isolate():
    from gateway import (
        isolate,  # here, not at the top: the end-to-end tests below run on any version
    )

    return isolate


def _return(directory, seed: int, rows: int = 3) -> bytes:
    crowd = people(directory, {"E09000019": rows}, seed=seed)
    return workbook("Example College", "10001234", [p.cells() for p in crowd])


def _to(deployment, address: str) -> list[EmailMessage]:
    return [m for m in deployment.captured() if str(m["To"]) == address]


def _database_text(deployment) -> str:
    """Everything the ledger holds (every table, the audit trail included), as one text."""
    with sqlite3.connect(deployment.root / "var" / "gateway.db") as db:
        return "\n".join(db.iterdump())


# -- 1. a file that kills its reader costs that file, not the gateway -------------------------------------
def test_the_isolated_reader_answers_a_cell_at_xfd1048576(directory):
    """The reader's own check of the sheet's extent refuses it before calamine's dense read (which
    would abort the process); either way the answer is a ReadError with advice, and the next file reads."""
    isolate = _isolate()
    bad = far_cell(_return(directory, 1))
    with pytest.raises(ReadError) as caught:
        isolate.run(read_return, bad)
    assert ".xlsx" in caught.value.advice or "columns" in caught.value.advice
    good = _return(directory, 2)
    assert len(isolate.run(read_return, good).rows) == 3  # and the next file is read as ever


def test_a_reader_killed_by_a_signal_costs_that_file_not_the_gateway(directory):
    """Defence in depth for native faults no check foresaw: the child reading a file dies of SIGABRT
    (as python-calamine did on XFD1048576 before the extent check), and the parent answers."""
    import multiprocessing
    import threading

    isolate = _isolate()
    isolate.warm_up()
    crowd = [p.cells() for p in people(directory, {"E09000019": 50}, seed=7)]
    big = workbook("Example College", "10001234", [crowd[i % 50] for i in range(60_000)])  # a few seconds' read
    outcome: list[BaseException] = []

    def read() -> None:
        try:
            isolate.run(read_return, big)
        except BaseException as error:  # noqa: BLE001 - the test looks at what came back
            outcome.append(error)

    reader = threading.Thread(target=read)
    reader.start()
    deadline = time.monotonic() + 10
    while not multiprocessing.active_children() and time.monotonic() < deadline:
        time.sleep(0.01)
    [child] = multiprocessing.active_children()
    time.sleep(0.2)  # it has the file
    os.kill(child.pid, signal.SIGABRT)
    reader.join(30)
    assert outcome and isinstance(outcome[0], isolate.LimitExceeded), outcome
    assert "SIGABRT" in str(outcome[0])
    assert "limits" in outcome[0].advice and ".xlsx" in outcome[0].advice and "split" in outcome[0].advice
    assert len(isolate.run(read_return, _return(directory, 2)).rows) == 3  # the next file is read as ever


def test_the_isolated_reader_gives_back_what_the_reader_gives(directory):
    isolate = _isolate()
    data = _return(directory, 3, rows=50)
    assert isolate.run(read_return, data) == read_return(data)
    with pytest.raises(ReadError) as caught:
        isolate.run(read_return, b"not,a,return\n1,2,3\n")
    assert "table of young people" in caught.value.advice  # the reader's own errors pass through unchanged


def test_a_reader_that_takes_too_long_is_stopped(directory, monkeypatch):
    isolate = _isolate()
    monkeypatch.setattr(isolate, "TIME_LIMIT_SECONDS", 0)
    with pytest.raises(isolate.LimitExceeded, match="longer than"):
        isolate.run(read_return, _return(directory, 4))


def test_a_child_over_its_memory_limit_is_a_rejection_not_a_crash(monkeypatch):
    isolate = _isolate()
    # 5 million distinct cells: some 400 MB as Python strings, over a limit lowered to 512 MB for the test
    # (the child starts at about 190 MB of address space).
    monkeypatch.setattr(isolate, "MEMORY_LIMIT_BYTES", 512 * 1024 ** 2)
    rows = b"\n".join(b",".join(b"%d" % (r * 1000 + c) for c in range(1000)) for r in range(5000))
    with pytest.raises(isolate.LimitExceeded, match="memory|signal"):
        isolate.run(read_return, b"Family Name,First Name,DOB,Post Code\n" + rows)


def test_a_workbook_that_aborts_the_reader_is_answered_and_the_returns_behind_it_go_on(deployment, directory, keys):
    bad = far_cell(_return(directory, 5))
    deployment.deliver(provider_message([("Leavers.xlsx.gpg", keys.encrypt_for_gateway(bad))]))
    for seed in range(2):
        deployment.deliver(provider_message([(f"r{seed}.xlsx.gpg", keys.encrypt_for_gateway(_return(directory, 10 + seed)))]))
    env = {**os.environ, "TEST_IMAP_PASSWORD": deployment.imap.password}
    command = [sys.executable, "-m", "gateway", "--config", str(deployment.config), "run", "--once"]
    done = subprocess.run(command, env=env, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    assert deployment.imap.list_uids("INBOX") == []
    subjects = sorted(str(m["Subject"]).startswith(REJECTION) for m in _to(deployment, PROVIDER_SENDER))
    assert subjects == [False, False, True]  # two receipts, one rejection
    assert len(_to(deployment, ISLINGTON)) == 2


# -- 2. a message the process died on MAX_HANDLING_DEATHS times is set aside on the next run ------------------------------
def _attempts(database, uid: int) -> tuple[str, int] | None:
    if not database.exists():
        return None
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=1) as db:
            row = db.execute("select state, attempts from messages where uid = ?", [uid]).fetchone()
    except sqlite3.Error:
        return None
    return (row[0], row[1] or 0) if row else None


def test_a_message_that_killed_the_gateway_again_and_again_is_set_aside_and_the_five_behind_it_go_on(deployment, directory, keys):
    # The message the process dies on: many parts, so that its handling lasts long enough to be killed in.
    parts = [(f"part{i}.xlsx.gpg", keys.encrypt_for_gateway(far_cell(_return(directory, 40 + i), f"XFD{1048576 - i}")))
             for i in range(15)]
    poison = provider_message(parts)
    deployment.deliver(poison)
    for seed in range(5):
        deployment.deliver(provider_message([(f"r{seed}.xlsx.gpg", keys.encrypt_for_gateway(_return(directory, 20 + seed)))]))
    database = deployment.root / "var" / "gateway.db"
    digest = deployment.imap.list_uids("INBOX")[0]  # the poison came first
    env = {**os.environ, "TEST_IMAP_PASSWORD": deployment.imap.password}
    command = [sys.executable, "-m", "gateway", "--config", str(deployment.config), "run", "--once"]
    for death in range(1, MAX_HANDLING_DEATHS + 1):
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while (_attempts(database, digest) or ("", 0))[1] < death:
            assert time.monotonic() < deadline and process.poll() is None, "the gateway never began on the message"
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)  # killed while handling it, as an abort or the OOM killer would
        process.wait()
        assert _attempts(database, digest) == ("received", death)
    assert deployment.smtp.messages == []

    assert deployment.run_once() == 0

    assert deployment.imap.list_uids("INBOX") == []
    assert len(deployment.imap.list_uids("Quarantine")) == 1
    assert len(deployment.imap.list_uids("Processed")) == 5
    assert len(_to(deployment, ISLINGTON)) == 5
    answers = _to(deployment, PROVIDER_SENDER)
    assert len(answers) == 6
    assert sum(str(m["Subject"]).startswith(REJECTION) for m in answers) == 1
    [notice] = _to(deployment, ADMIN)
    assert "quarantined" in str(notice["Subject"])
    assert f"stopped {MAX_HANDLING_DEATHS} times" in " ".join(notice.get_body(("plain",)).get_content().split())


# -- 3. a compression bomb inside gpg is stopped at the limit -----------------------------------------
def _gpg_bomb(keys, megabytes: int) -> bytes:
    zeros = subprocess.Popen(["head", "-c", str(megabytes * 1024 * 1024), "/dev/zero"], stdout=subprocess.PIPE)
    made = subprocess.run(["gpg", "--batch", "--no-tty", "--homedir", str(keys.provider_home), "--trust-model", "always",
                           "-z", "9", "--encrypt", "-r", keys.gateway_fpr], stdin=zeros.stdout, capture_output=True, timeout=120)
    zeros.wait()
    assert made.returncode == 0, made.stderr.decode(errors="replace")
    return made.stdout


def test_a_gpg_compression_bomb_is_refused_at_50_mb_naming_the_limit(deployment, keys):
    import resource

    bomb = _gpg_bomb(keys, 200)
    assert len(bomb) < 1024 * 1024
    deployment.deliver(provider_message([("Leavers.xlsx.gpg", bomb)]))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()

    assert deployment.run_once() == 0

    took = time.monotonic() - started
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown < 120 * 1024, f"memory grew by {grown // 1024} MB"
    assert took < 20
    [answer] = _to(deployment, PROVIDER_SENDER)
    assert str(answer["Subject"]).startswith(REJECTION)
    text = " ".join(answer.get_body(("plain",)).get_content().split())
    assert "more than 50 MB" in text and "split" in text and "empty" not in text
    assert deployment.imap.list_uids("Processed")  # a rejection, not a quarantine: nothing hostile was opened


# -- 4. files per message ------------------------------------------------------------------------------
def test_more_returns_in_one_message_than_the_limit_get_one_rejection(deployment, directory, keys):
    from gateway.intake.unpack import MAX_RETURNS_PER_MESSAGE

    one = keys.encrypt_for_gateway(_return(directory, 30))
    deployment.deliver(provider_message([(f"r{i}.xlsx.gpg", one) for i in range(MAX_RETURNS_PER_MESSAGE + 5)]))

    assert deployment.run_once() == 0

    [answer] = _to(deployment, PROVIDER_SENDER)
    assert str(answer["Subject"]).startswith(REJECTION)
    assert f"more than {MAX_RETURNS_PER_MESSAGE} files" in " ".join(answer.get_body(("plain",)).get_content().split())
    assert _to(deployment, ISLINGTON) == []


def test_one_file_attached_twice_is_forwarded_once_with_a_note(deployment, directory, keys):
    data = _return(directory, 31)
    # Encrypted twice: the ciphertexts differ, the file inside is the same.
    deployment.deliver(provider_message([("a.xlsx.gpg", keys.encrypt_for_gateway(data)), ("b.xlsx.gpg", keys.encrypt_for_gateway(data))]))

    assert deployment.run_once() == 0

    assert len(_to(deployment, ISLINGTON)) == 1
    [answer] = _to(deployment, PROVIDER_SENDER)
    assert not str(answer["Subject"]).startswith(REJECTION)
    assert "attached 2 times" in " ".join(answer.get_body(("plain",)).get_content().split())


# -- 5. bounces ----------------------------------------------------------------------------------------
SECRET_TEXT = ["Bartholomew Fictitious-Person", "born 14/02/2008", "221B Nowhere Street"]


def _chatty_dsn(returned: bytes | None, sender: str) -> bytes:
    """A delivery-status report stuffed with a stranger's text: 100 KB, names and a date of birth."""
    filler = " ".join(SECRET_TEXT) + " "
    raw = dsn(returned, action=f"failed {filler * 5}", headers={"Original-Message-ID": "<nobody@example.net>"})
    raw = raw.replace(b"MAILER-DAEMON@mx.islington.example", sender.encode())
    return raw.replace(b"I'm sorry to have to inform you", (filler * 1500).encode())


def test_a_strangers_delivery_status_part_is_quarantined_and_its_text_never_stored(deployment):
    deployment.deliver(_chatty_dsn(None, "someone@stranger.example"))

    assert deployment.run_once() == 0

    assert len(deployment.imap.list_uids("Quarantine")) == 1
    [notice] = _to(deployment, ADMIN)
    assert "quarantined" in str(notice["Subject"])
    stored = _database_text(deployment)
    for text in SECRET_TEXT:
        assert text not in stored


def test_a_real_bounce_stores_only_ids_and_codes(deployment, directory, keys):
    deployment.deliver(provider_message([("r.xlsx.gpg", keys.encrypt_for_gateway(_return(directory, 32)))]))
    assert deployment.run_once() == 0
    [package] = [m for m in deployment.smtp.messages if ISLINGTON in m.rcpt_tos]
    deployment.deliver(_chatty_dsn(package.data, "MAILER-DAEMON@mx.islington.example"))

    assert deployment.run_once() == 0

    assert len(deployment.imap.list_uids("Processed")) == 2  # the bounce is a bounce, not a stranger's mail
    stored = _database_text(deployment)
    assert "'bounced'" in stored and "5.1.1" in stored
    for text in SECRET_TEXT:
        assert text not in stored
