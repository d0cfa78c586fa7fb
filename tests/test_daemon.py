"""`gateway run` as a daemon against a real Dovecot: IDLE latency, reconnection, hot reload, clean stop."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import datetime

import pytest
from helpers import ADMIN, PROVIDER_SENDER, provider_message
from probe import wait_for

from gateway.cli import build
from gateway.demo.sample import people, workbook
from gateway.scheduler import Daemon, Timing


def _return(directory, keys, seed=1, **where):
    rows = [p.cells() for p in people(directory, where or {"E09000019": 2}, seed=seed)]
    return provider_message([("r.xlsx.gpg", keys.encrypt_for_gateway(workbook("Example College", "10001234", rows)))])


@pytest.fixture
def daemon(deployment, request):
    """The real `gateway run` in a child process; stopped with SIGTERM at the end."""
    env = {**os.environ, "TEST_IMAP_PASSWORD": deployment.imap.password}
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "--config", str(deployment.config), "run", "--interval",
         str(getattr(request, "param", 5))],  # the longest wait between two looks at the mailbox
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    time.sleep(1.5)  # let it log in and enter IDLE
    yield process
    if process.poll() is None:
        process.kill()
        process.wait()
    print(process.stderr.read().decode(errors="replace")[-4000:])  # shown when a test fails


@pytest.mark.parametrize("daemon", [20], indirect=True)
def test_a_return_is_handled_within_seconds_of_arriving_and_sigterm_stops_cleanly(deployment, daemon, directory, keys):
    assert daemon.poll() is None
    deployment.deliver(_return(directory, keys))
    # The wait between looks is 20 s: finishing well inside it shows IDLE woke the daemon.
    start = time.monotonic()
    wait_for(lambda: len(deployment.smtp.messages) >= 2, 15, "the return's packages")
    took = time.monotonic() - start
    assert took < 10
    assert deployment.imap.list_uids("Processed")
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=10) == 0
    assert b"gateway stopped" in daemon.stderr.read()


def test_the_daemon_reconnects_after_the_mail_server_restarts(deployment, daemon, directory, keys):
    deployment.imap.restart()  # a fresh Dovecot log, holding only its own start-up check's login
    deployment.imap.deliver_local(_return(directory, keys, seed=2))
    wait_for(lambda: len(deployment.smtp.messages) >= 2, 30, "the expected mail")
    assert daemon.poll() is None
    assert deployment.imap.logins() == 2  # one login per reconnection: the daemon handles mail on its watching session
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=10) == 0


def test_edited_rules_are_picked_up_and_a_broken_edit_is_refused(deployment, daemon, directory, keys):
    boroughs = deployment.root / "rules" / "boroughs.toml"
    good = boroughs.read_text()
    boroughs.write_text(good + "\n[E09000099]\nname = \"Nowhere\"\nrecipients = [\"x@nowhere.example\"]\n")
    wait_for(lambda: any(ADMIN in m.rcpt_tos for m in deployment.smtp.messages), 40, "the expected mail")
    alert = next(m for m in deployment.smtp.messages if ADMIN in m.rcpt_tos).data.decode()
    assert "edited rules refused" in alert and "E09000099" in alert
    # The previous rules still route Islington's residents.
    deployment.deliver(_return(directory, keys, seed=3))
    wait_for(lambda: any("ldor@islington.example" in m.rcpt_tos for m in deployment.smtp.messages), 30, "the expected mail")
    # A good edit takes effect: Islington is removed, so its residents are now rejected in the receipt.
    assert good.startswith("[E09000019]")  # Islington's table comes first: drop it
    boroughs.write_text(good[good.index("[E09000007]"):])
    time.sleep(1)
    before = len(deployment.smtp.messages)
    deployment.deliver(_return(directory, keys, seed=4))
    wait_for(lambda: any(PROVIDER_SENDER in m.rcpt_tos for m in deployment.smtp.messages[before:]), 40, "the expected mail")
    receipt = next(m for m in deployment.smtp.messages[before:] if PROVIDER_SENDER in m.rcpt_tos).data.decode()
    assert "Route_01" in receipt
    assert not any("ldor@islington.example" in m.rcpt_tos for m in deployment.smtp.messages[before:])


def test_the_administrator_is_told_when_the_mailbox_has_not_been_checked_for_long(deployment, monkeypatch):
    now = [1000.0]
    daemon = Daemon(deployment.config, build, Timing(heartbeat_after=600), clock=lambda: now[0])
    daemon._heartbeat()
    assert deployment.smtp.messages == []
    now[0] += 601
    daemon._heartbeat()
    daemon._heartbeat()  # once, not at every tick
    assert len(deployment.smtp.messages) == 1
    text = deployment.smtp.messages[0].data.decode()
    assert "mailbox not checked" in text and "10 minutes" in text


def _schedule(deployment, **settings) -> None:
    with deployment.config.open("a") as config:
        config.write("\n[schedule]\n" + "".join(f"{key} = {value}\n" for key, value in settings.items()))


def test_the_dated_jobs_are_registered_from_the_schedule_and_each_runs_once_at_start(deployment):
    from apscheduler.schedulers.background import BackgroundScheduler

    _schedule(deployment, hour=6, reminder_day=7, report_day=2)
    daemon = Daemon(deployment.config, build)
    scheduler = BackgroundScheduler(timezone="UTC")
    daemon.schedule(scheduler)
    triggers = {job.id: str(job.trigger) for job in scheduler.get_jobs()}
    assert triggers == {
        "outbox": "interval[0:01:00]", "heartbeat": "interval[0:01:00]",
        "digests": "cron[day='*', hour='6', minute='0']",
        "key-expiry": "cron[day='*', hour='6', minute='1']", "reminders": "cron[day='7', hour='6', minute='2']",
        "retention": "cron[day='*', hour='6', minute='3']", "monthly-report": "cron[day='2', hour='6', minute='4']",
    }
    assert [daemon._due.get_nowait() for _ in range(5)] == ["digests", "key-expiry", "reminders", "retention", "monthly-report"]


def test_a_due_job_runs_with_the_daemons_date_its_mail_goes_at_once_and_a_failing_job_stops_nothing(deployment, directory, keys, monkeypatch, caplog):
    from datetime import timedelta

    from gateway.admin import jobs
    from gateway.admin.report import LOCAL

    deployment.deliver(_return(directory, keys, seed=9))
    assert deployment.run_once() == 0
    deployment.smtp.clear()
    next_month = (datetime.now(LOCAL).replace(day=28) + timedelta(days=5)).replace(day=5, hour=7, minute=0)
    daemon = Daemon(deployment.config, build, now=lambda: next_month)

    def broken(gateway, now):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setitem(jobs.JOBS, "retention", broken)
    for job in ("retention", "reminders", "reminders"):
        daemon._due.put(job)
    daemon._run_due()
    # Example College returned this month, not next month: reminded once, at once, with no outbox round.
    assert [m.rcpt_tos for m in deployment.smtp.messages] == [[PROVIDER_SENDER]]
    assert f"{next_month:%B %Y}" in deployment.smtp.messages[0].data.decode()
    assert "job retention failed, will run again at its next time: OperationalError at test_daemon.py" in caplog.text
    assert "disk I/O error" not in caplog.text  # an exception's text is never logged: it may quote data


def test_the_heartbeat_follows_the_schedules_minutes(deployment):
    _schedule(deployment, heartbeat_minutes=5)
    now = [1000.0]
    daemon = Daemon(deployment.config, build, clock=lambda: now[0])
    now[0] += 299
    daemon._heartbeat()
    assert deployment.smtp.messages == []
    now[0] += 2
    daemon._heartbeat()
    assert len(deployment.smtp.messages) == 1 and "5 minutes" in deployment.smtp.messages[0].data.decode()


def test_a_mailbox_run_that_finds_nothing_is_logged_at_debug(deployment, directory, keys, caplog):
    import logging

    caplog.set_level(logging.DEBUG, logger="gateway")
    assert deployment.run_once() == 0
    [quiet] = [r for r in caplog.records if r.getMessage().startswith("mailbox run:")]
    assert quiet.levelno == logging.DEBUG
    caplog.clear()
    deployment.deliver(_return(directory, keys, seed=11))
    assert deployment.run_once() == 0
    [busy] = [r for r in caplog.records if r.getMessage().startswith("mailbox run:")]
    assert busy.levelno == logging.INFO and "1 messages, 1 processed" in busy.getMessage()


def test_the_refused_rules_alert_has_the_same_key_in_every_process():
    """Keyed by Python's hash(), the alert would differ between processes and be sent again after a restart."""
    script = ("from gateway.scheduler import refused_rules_key; "
              "print(refused_rules_key((('rules/boroughs.toml', 1764158400000000000, 812),)))")
    keys = {subprocess.run([sys.executable, "-c", script], env={**os.environ, "PYTHONHASHSEED": seed},
                           capture_output=True, text=True, check=True).stdout for seed in ("1", "2", "random")}
    assert len(keys) == 1 and len(keys.pop().strip()) == 16
