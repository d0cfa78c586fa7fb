"""Soak: `gateway run` on a real Dovecot for a few minutes, 20 returns at irregular intervals with quiet
periods between them, measured from outside the daemon's process (/proc, its log, Dovecot's log).

What must hold for a daemon that runs for years: at rest it costs next to nothing (CPU, log lines,
logins to the council's mail server), and nothing grows (descriptors, memory). The daemon's clock is
not touched: the figures are rates over real quiet periods, and the dated jobs are scheduled twelve
hours away from now, so that none of them falls inside the test whenever it runs.
"""

from __future__ import annotations

import random
import time
from datetime import datetime

from helpers import PROVIDER_SENDER, provider_message
from probe import RunningDaemon, wait_for

from gateway.admin.report import LOCAL
from gateway.demo.sample import people, workbook

RETURNS = 20
QUIET = {5: 20.0, 11: 65.0, 17: 20.0}  # after these returns, a quiet period of so many seconds is measured


def _receipts(smtp) -> int:
    return sum(PROVIDER_SENDER in m.rcpt_tos for m in smtp.messages)


def test_at_rest_the_daemon_costs_next_to_nothing_and_nothing_grows(deployment, directory, keys):
    with deployment.config.open("a") as config:
        config.write(f"\n[schedule]\nhour = {(datetime.now(LOCAL).hour + 12) % 24}\n")
    messages = []
    for n in range(RETURNS):
        rows = [p.cells() for p in people(directory, {"E09000019": 1, "E09000007": 1}, seed=100 + n)]
        attachment = keys.encrypt_for_gateway(workbook("Example College", "10001234", rows))
        messages.append(provider_message([("return.xlsx.gpg", attachment)]))
    imap, smtp = deployment.imap, deployment.smtp
    gaps = random.Random(15)
    logins_before = imap.logins()  # the test delivers as the mail server's MTA does: no login of its own
    quiet = []
    with RunningDaemon(deployment.config, imap.password, deployment.root / "daemon.log") as daemon:
        wait_for(lambda: imap.logins() > logins_before, 20, "the daemon's login")
        for n, raw in enumerate(messages, start=1):
            imap.deliver_local(raw)
            wait_for(lambda n=n: _receipts(smtp) >= n, 30, f"return {n}'s receipt")
            assert daemon.alive(), daemon.log_tail()
            if n == 1:
                time.sleep(1.0)  # the message moved to Processed, the run logged
                first = {"descriptors": daemon.descriptors(), "rss": daemon.rss_mb()}
            if n in QUIET:
                time.sleep(1.0)
                cpu, lines, start = daemon.cpu_seconds(), daemon.log_lines(), time.monotonic()
                time.sleep(QUIET[n])
                minutes = (time.monotonic() - start) / 60
                quiet.append(((daemon.cpu_seconds() - cpu) / minutes, (daemon.log_lines() - lines) / minutes))
            else:
                time.sleep(gaps.uniform(0.0, 3.0))  # irregular arrivals; some land while the last is in hand
        time.sleep(1.0)
        last = {"descriptors": daemon.descriptors(), "rss": daemon.rss_mb()}
        logins = imap.logins() - logins_before
        assert daemon.stop() == 0, daemon.log_tail()
    report = (f"per quiet minute (CPU s, log lines): {[(round(c, 2), round(n, 1)) for c, n in quiet]}; "
              f"IMAP logins: {logins}; descriptors {first['descriptors']} -> {last['descriptors']}; "
              f"memory {first['rss']:.0f} -> {last['rss']:.0f} MB")
    print(report)
    assert _receipts(smtp) == RETURNS, daemon.log_tail()
    assert [PROVIDER_SENDER in m.rcpt_tos for m in smtp.messages].count(False) == 2 * RETURNS  # Islington, Camden
    for cpu, lines in quiet:
        assert cpu < 0.5, f"{report}\n{daemon.log_tail()}"
        assert lines < 5, f"{report}\n{daemon.log_tail()}"
    assert logins == 1, f"{report}\n{imap.log()[-3000:]}"  # the mail server never restarted: no reconnection
    assert last["descriptors"] <= first["descriptors"], report
    assert last["rss"] - first["rss"] < 20, report
