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

from helpers import PROVIDER_SENDER, provider_message

from gateway.demo.sample import people, workbook


def test_kill_minus_nine_at_any_point_loses_nothing_and_sends_nothing_twice(deployment, directory, keys):
    returns = 6
    for seed in range(returns):
        crowd = people(directory, {"E09000019": 2, "E09000007": 1, "E09000012": 1}, seed=100 + seed)
        data = workbook("Example College", "10001234", [p.cells() for p in crowd])
        deployment.deliver(provider_message([(f"r{seed}.xlsx.gpg", keys.encrypt_for_gateway(data))]))
    env = {**os.environ, "TEST_IMAP_PASSWORD": deployment.imap.password}
    command = [sys.executable, "-m", "gateway", "--config", str(deployment.config), "run", "--once"]
    chooser = random.Random(20261125)
    kills = 0
    # Eight kills, and more (later each time) until some fell while work was under way: on a loaded
    # machine start-up alone can outlast the first delays.
    while kills < 8 or not (deployment.smtp.messages or deployment.imap.list_uids("Processed")):
        assert kills < 20, "twenty kills and no work done before any of them"
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(chooser.uniform(0.3, 2.0) * (1 + max(0, kills - 7) / 2))  # start-up takes most of a second
        process.send_signal(signal.SIGKILL)
        process.wait()
        kills += 1
    assert subprocess.run(command, env=env, capture_output=True, timeout=120).returncode == 0

    assert_each_return_handled_once(deployment, returns)


# -- kill -9 at each step boundary in turn, then at random moments, over a run of 100 returns (issue 9) ---------
CRASHPOINT = os.path.join(os.path.dirname(__file__), "crashpoint.py")
# (step, at its k-th call, before or after it): every kind of boundary of the journey, early and later on.
KILL_POINTS = [
    ("gateway.ledger:Ledger.receive", 3, "before"),
    ("gateway.ledger:Ledger.receive", 4, "after"),
    ("gateway.ledger:Ledger.event", 5, "after"),
    ("gateway.pipeline:package_message", 4, "after"),
    ("gateway.delivery.outbox:Outbox.put", 6, "before"),
    ("gateway.delivery.outbox:Outbox.put", 9, "after"),
    ("gateway.ledger:Ledger.record_outcome", 3, "before"),
    ("gateway.ledger:Ledger.record_outcome", 4, "after"),
    ("gateway.intake.inbox:Inbox.move", 2, "before"),
    ("gateway.intake.inbox:Inbox.move", 3, "after"),
    ("gateway.ledger:Ledger.set_state", 2, "before"),
    ("gateway.ledger:Ledger.set_state", 3, "after"),
    ("gateway.delivery.send:Relay.send", 5, "before"),
    ("gateway.delivery.send:Relay.send", 7, "after"),  # between the relay's 250 and the ledger's commit: an identical resend at most
    ("gateway.ledger:Ledger.mark_sent", 3, "before"),
    ("gateway.ledger:Ledger.mark_sent", 4, "after"),
    ("gateway.delivery.outbox:Outbox.remove", 2, "after"),
]


def test_kill_minus_nine_at_each_step_boundary_and_at_random_over_a_hundred_returns(deployment, directory, keys):
    returns = 100

    def deliver(seeds) -> None:
        for seed in seeds:
            crowd = people(directory, {"E09000019": 1, "E09000007": 1, "E09000012": 1}, seed=500 + seed)
            data = workbook("Example College", "10001234", [p.cells() for p in crowd])
            deployment.deliver(provider_message([(f"r{seed}.xlsx.gpg", keys.encrypt_for_gateway(data))]))

    # Enough that every boundary is met before the mailbox is empty: workers settle several messages while
    # one is moved, so a run killed at a later boundary has done more than one message's work.
    first = 60
    deliver(range(first))
    env = {**os.environ, "TEST_IMAP_PASSWORD": deployment.imap.password}
    command = [sys.executable, CRASHPOINT, "--config", str(deployment.config), "run", "--once"]
    survived, started = [], time.monotonic()
    for step, count, when in KILL_POINTS:
        done = subprocess.run(command, env={**env, "CRASH_AT": f"{step}@{count}:{when}"},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=180)
        if done.returncode == -signal.SIGKILL:
            survived.append(f"{step}@{count}:{when}")
    deliver(range(first, returns))
    chooser = random.Random(20261126)
    for _ in range(4):  # then at moments no step chose, with forty more returns to do (workers do ten in a second)
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(chooser.uniform(0.7, 1.6))
        process.send_signal(signal.SIGKILL)
        if process.wait() == -signal.SIGKILL:
            survived.append("random")
    # Boundaries that come before the first send are met in every run; those of sending only once mail is queued.
    missed = [f"{s}@{c}:{w}" for s, c, w in KILL_POINTS if f"{s}@{c}:{w}" not in survived]
    print(f"\nkill points survived: {len(survived)} ({len(KILL_POINTS)} step boundaries tried, 4 random) "
          f"in {time.monotonic() - started:.0f} s; not reached: {missed}")
    assert len(missed) <= 2, missed
    assert "random" in survived
    for _ in range(2):  # a clean run, and one more if the first was still finishing work a kill left
        assert subprocess.run(command, env=env, capture_output=True, timeout=300).returncode == 0

    assert_each_return_handled_once(deployment, returns)


def assert_each_return_handled_once(deployment, returns: int) -> None:
    """After the kills and a clean run: INBOX empty, every return archived, forwarded to each borough and
    acknowledged exactly once, and any resend identical to the first send."""
    assert deployment.imap.list_uids("INBOX") == []
    assert deployment.imap.list_uids("Quarantine") == [], "a return was set aside (killed while handling it too often)"
    # A kill while the server carries out MOVE can leave the copy made and the original not yet expunged:
    # the next run finds it handled in the ledger and moves it again, so Processed may hold it twice.
    archived = deployment.imap.fetch_all("Processed")
    assert len(set(archived)) == returns and len(archived) <= returns + 2
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
        assert recipients[borough] == returns  # every row forwarded: one package per return for each borough
