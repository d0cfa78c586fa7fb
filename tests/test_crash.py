"""Nothing lost, nothing sent twice: `gateway run --once` killed (SIGKILL) at random moments, then run again."""

from __future__ import annotations

import email
import email.policy
import os
import random
import signal
import subprocess
import sys
import time
from collections import defaultdict

from conftest import PROVIDER_SENDER, provider_message
from gateway.sample import people, workbook


def test_kill_minus_nine_at_any_point_loses_nothing_and_sends_nothing_twice(deployment, directory, keys):
    returns = 6
    for seed in range(returns):
        crowd = people(directory, {"E09000019": 2, "E09000007": 1, "E09000012": 1}, seed=100 + seed)
        data = workbook("Example College", "10001234", [p.cells() for p in crowd])
        deployment.deliver(provider_message([(f"r{seed}.xlsx.gpg", keys.encrypt_for_gateway(data))]))
    env = {**os.environ, "TEST_IMAP_PASSWORD": deployment.imap.password}
    command = [sys.executable, "-m", "gateway", "--config", str(deployment.config), "run", "--once"]
    chooser = random.Random(20261125)
    for _ in range(8):
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(chooser.uniform(0.3, 2.0))  # start-up takes most of a second; then work is under way
        process.send_signal(signal.SIGKILL)
        process.wait()
    # The kills fell while work was under way: some was done, not all.
    assert deployment.smtp.messages or deployment.imap.list_uids("Processed")
    assert subprocess.run(command, env=env, capture_output=True, timeout=120).returncode == 0

    assert deployment.imap.list_uids("INBOX") == []
    assert len(deployment.imap.list_uids("Processed")) == returns
    by_id = defaultdict(list)
    for captured in deployment.smtp.messages:
        message = email.message_from_bytes(captured.data, policy=email.policy.default)
        by_id[str(message["Message-ID"])].append((tuple(captured.rcpt_tos), captured.data))
    for message_id, copies in by_id.items():
        # A resend after a crash between the relay's 250 and the ledger's commit is the same message, byte for byte.
        assert len({data for _, data in copies}) == 1, f"{message_id} was sent in two different versions"
    recipients = defaultdict(int)
    for copies in by_id.values():
        recipients[copies[0][0][0]] += 1
    assert recipients[PROVIDER_SENDER] == returns  # one receipt per return
    for borough in ("ldor@islington.example", "ldor@camden.example", "ldor@hackney.example"):
        assert recipients[borough] == returns  # one package per return for each borough
