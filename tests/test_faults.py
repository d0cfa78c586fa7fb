"""Faults around the gateway (issue 9): relay refusing, 4xx, 5xx, hanging; IMAP dropped mid-fetch and
restarted; gpg missing; the outbox's disk full. Each through the real `gateway run --once`: nothing is
lost, the message stays or comes back for the next run, and a log line or an alert says what happened.
"""

from __future__ import annotations

import email
import email.policy
import logging
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from helpers import ADMIN, PROVIDER_SENDER, provider_message
from test_send import SilentRelay

from gateway.delivery.outbox import Outbox
from gateway.demo.sample import people, workbook
from gateway.ledger import Ledger

BOROUGHS = ("ldor@islington.example", "ldor@camden.example", "ldor@hackney.example")
FAULTS: list[str] = []


def _returns(deployment, directory, keys, count: int = 2, seed: int = 300) -> list:
    crowds = []
    for n in range(count):
        crowd = people(directory, {"E09000019": 1, "E09000007": 1, "E09000012": 1}, seed=seed + n)
        data = workbook("Example College", "10001234", [p.cells() for p in crowd])
        deployment.deliver(provider_message([(f"r{n}.xlsx.gpg", keys.encrypt_for_gateway(data))]))
        crowds.append(crowd)
    return crowds


def _set(config: Path, section: str, key: str, value: str) -> None:
    """Change one setting of config.toml in place (the relay moved, a shorter timeout)."""
    text = config.read_text()
    head = text.index(f"[{section}]")
    end = text.find("\n[", head + 1)
    end = len(text) if end < 0 else end
    body = re.sub(rf"(?m)^{key} = .*$", f"{key} = {value}", text[head:end], count=1)
    config.write_text(text[:head] + body + text[end:])


def _delivered_once_each(deployment, returns: int) -> None:
    """Every return's receipt and each borough's package, once; INBOX empty; nothing left queued."""
    counted = Counter()
    for captured in deployment.smtp.messages:
        message = email.message_from_bytes(captured.data, policy=email.policy.default)
        if captured.rcpt_tos[0] != ADMIN:
            counted[(captured.rcpt_tos[0], str(message["Message-ID"]))] += 1
    assert all(n == 1 for n in counted.values()), [k for k, n in counted.items() if n > 1]
    recipients = Counter(address for address, _ in counted)
    assert recipients[PROVIDER_SENDER] == returns
    assert all(recipients[b] == returns for b in BOROUGHS), recipients
    assert deployment.imap.list_uids("INBOX") == []
    assert len(deployment.imap.list_uids("Processed")) == returns
    assert Outbox(deployment.root / "outbox").pending() == []


def _ledger(deployment) -> Ledger:
    return Ledger(deployment.root / "var" / "gateway.db")


@pytest.fixture(scope="module", autouse=True)
def faults_covered():
    yield
    print(f"\nfaults survived: {len(FAULTS)}: {', '.join(FAULTS)}")


# -- the relay ------------------------------------------------------------------------------------------------
def test_a_relay_refusing_connections_keeps_everything_queued_until_it_listens(deployment, directory, keys, caplog):
    caplog.set_level(logging.INFO)
    _returns(deployment, directory, keys)
    deployment.smtp.stop()

    assert deployment.run_once() == 0

    assert deployment.imap.list_uids("INBOX") == []  # handled: its answers are durably queued
    assert len(Outbox(deployment.root / "outbox").pending()) == 2 * 4
    assert any(r.levelno >= logging.WARNING and re.search(r"relay|smtp|connect", r.getMessage(), re.I) for r in caplog.records), (
        [r.getMessage() for r in caplog.records])
    deployment.smtp.start()  # a new port: the administrator points the gateway at the relay again
    _set(deployment.config, "smtp", "port", str(deployment.smtp.port))

    assert deployment.run_once() == 0

    _delivered_once_each(deployment, 2)
    FAULTS.append("relay refusing connections")


@pytest.mark.parametrize("stage", ["rcpt", "data"])
def test_a_relay_answering_4xx_defers_and_the_next_run_delivers(deployment, directory, keys, stage):
    _returns(deployment, directory, keys)
    deployment.smtp.fail_on = stage
    deployment.smtp.fail_with = "451 4.3.0 Mailbox busy, try again later"

    assert deployment.run_once() == 0

    assert deployment.smtp.messages == []
    assert deployment.imap.list_uids("INBOX") == []
    deferred = _ledger(deployment).outgoing_in("deferred", "queued")
    assert len(deferred) == 8 and all(d.last_error for d in deferred if d.state == "deferred")
    deployment.smtp.fail_with = None

    assert deployment.run_once() == 0

    _delivered_once_each(deployment, 2)
    FAULTS.append(f"relay 4xx at {stage}")


def test_a_relay_answering_5xx_sets_mail_aside_with_an_alert_and_a_retry_delivers_it(deployment, directory, keys, caplog):
    caplog.set_level(logging.INFO)
    _returns(deployment, directory, keys, count=1)
    deployment.smtp.fail_with = "554 5.7.1 Relay access denied"

    assert deployment.run_once() == 0

    outbox = Outbox(deployment.root / "outbox")
    aside = outbox.set_aside_ids()
    assert len(aside) >= 4, "every refused message is kept, set aside (and the alerts about them)"
    assert any(r.levelno >= logging.WARNING and "554" in r.getMessage() for r in caplog.records) or any(
        ADMIN in m.rcpt_tos for m in deployment.smtp.messages)
    deployment.smtp.fail_with = None
    from gateway.cli import main

    for item_id in aside:  # what an administrator does after fixing the relay
        assert main(["--config", str(deployment.config), "outbox", "--retry", item_id]) == 0
    assert deployment.run_once() == 0

    _delivered_once_each(deployment, 1)
    FAULTS.append("relay 5xx")


def test_a_relay_that_hangs_delays_but_loses_nothing(deployment, directory, keys):
    _returns(deployment, directory, keys)
    _set(deployment.config, "smtp", "timeout", "1")
    with SilentRelay() as relay:
        _set(deployment.config, "smtp", "port", str(relay.port))
        assert deployment.run_once() == 0
    assert deployment.imap.list_uids("INBOX") == []
    assert len(Outbox(deployment.root / "outbox").pending()) == 8
    _set(deployment.config, "smtp", "port", str(deployment.smtp.port))

    assert deployment.run_once() == 0

    _delivered_once_each(deployment, 2)
    FAULTS.append("relay hanging")


# -- the mailbox ----------------------------------------------------------------------------------------------
def test_imap_dropped_mid_fetch_and_restarted_loses_and_repeats_nothing(deployment, directory, keys, monkeypatch, caplog, capsys):
    """The server dies (SIGKILL) while the gateway fetches the second message; it comes back; one more run."""
    caplog.set_level(logging.INFO)
    _returns(deployment, directory, keys, count=3)
    from gateway.intake.inbox import Inbox

    fetch = Inbox._fetch
    calls = []

    def dropping(self, uid):  # a test-side wrapper: the real server really goes away
        calls.append(uid)
        if len(calls) == 2:
            deployment.imap.stop(graceful=False)
        return fetch(self, uid)

    monkeypatch.setattr(Inbox, "_fetch", dropping)

    code = deployment.run_once()

    assert code == 2, "the run must say the mailbox was lost"
    assert len(calls) == 2
    said = capsys.readouterr().err + "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)
    assert re.search(r"mailbox|imap", said, re.I), said
    monkeypatch.setattr(Inbox, "_fetch", fetch)
    deployment.imap.start()

    assert deployment.run_once() == 0

    _delivered_once_each(deployment, 3)
    FAULTS.append("IMAP dropped mid-fetch, server restarted")


# -- gpg --------------------------------------------------------------------------------------------------------
def test_gpg_missing_for_one_run_leaves_the_return_for_the_next(deployment, directory, keys, tmp_path):
    _returns(deployment, directory, keys, count=1)
    bare = tmp_path / "no-gpg-here"
    bare.mkdir()
    env = {**os.environ, "PATH": str(bare)}
    command = [sys.executable, "-m", "gateway", "--config", str(deployment.config), "run", "--once"]

    broken = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)

    assert deployment.imap.list_uids("INBOX") != [] or deployment.smtp.messages == [], (
        "a return was answered while gpg could not run")
    said = broken.stdout + broken.stderr
    assert "Traceback" not in said, said[-2000:]
    assert re.search(r"gpg|gnupg|keyring", said, re.I), said[-2000:]
    assert not [m for m in deployment.smtp.messages if m.rcpt_tos[0] == PROVIDER_SENDER], "the provider was told something wrong"
    try:
        quarantined = deployment.imap.list_uids("Quarantine")
    except Exception:
        quarantined = []
    assert quarantined == [], "a return was quarantined because gpg could not run"

    assert deployment.run_once() == 0

    _delivered_once_each(deployment, 1)
    FAULTS.append("gpg missing")


# -- the disk ---------------------------------------------------------------------------------------------------
def _mount_tmpfs(folder: Path, size: str) -> bool:
    if shutil.which("mount") is None or os.geteuid() != 0:
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
    return done.returncode == 0


def test_the_outbox_disk_full_leaves_the_message_in_the_mailbox_and_says_so(deployment, directory, keys, caplog, capsys):
    caplog.set_level(logging.INFO)
    outbox = deployment.root / "outbox"
    outbox.mkdir(exist_ok=True)
    if not _mount_tmpfs(outbox, "8k"):
        pytest.skip("mounting a small tmpfs over the outbox is not allowed here (needs root and mount rights)")
    try:
        (outbox / "filler").write_bytes(b"\0" * 4096)  # nearly full: a package (several kB) cannot be written
        _returns(deployment, directory, keys, count=1)

        code = deployment.run_once()

        assert deployment.imap.list_uids("INBOX") != [], "the message left INBOX though its answers were never written"
        assert deployment.smtp.messages == [] or all(m.rcpt_tos[0] == ADMIN for m in deployment.smtp.messages)
        # `run --once` says it on standard error (the daemon logs it and tries again with backoff).
        text = "\n".join(r.getMessage() for r in caplog.records) + capsys.readouterr().err
        assert re.search(r"No space left on device", text), text[-2000:]
        assert "free space" in text, text[-2000:]
        assert code == 2
    finally:
        subprocess.run(["umount", "-l", str(outbox)], check=False)
    # The administrator frees space; the next run handles the message.
    assert deployment.run_once() == 0

    _delivered_once_each(deployment, 1)
    FAULTS.append("outbox disk full")
