"""The daemon: watch the mailbox (IMAP IDLE, or polling) and run the periodic jobs (APScheduler).

APScheduler decides when each job is due. The jobs themselves run on the main thread, between two
looks at the mailbox, because the ledger's SQLite connection belongs to that thread and one message
is always finished before anything else starts.

The dated jobs (jobs.py: boroughs' digests, key expiry warnings, reminders, retention, the monthly report)
run at [schedule] hour, London time: daily (the digests job sends weekly digests on Mondays), or on their
day of the month. Each also runs once as the daemon starts, before
it first looks at the mailbox, to catch up on a day it missed while stopped; each knows whether it
already did its work for the period.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from apscheduler.schedulers.background import BackgroundScheduler

from .admin.jobs import JOBS
from .app import Gateway
from .config import LOCAL
from .delivery import notices
from .delivery.alerts import notify_admin
from .delivery.deliver import deliver
from .errors import GatewayError, MailboxError, OutboxError, SignInRefused
from .intake.inbox import Inbox
from .logs import describe
from .pipeline import run_once
from .signin import HOLD_MAX

RulesStamp = tuple[tuple[str, int, int], ...]  # each rule file and key file: path, mtime (ns), size
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Timing:
    """How often the daemon looks and acts; the defaults suit a council's mailbox."""

    wait: float = 30.0  # longest IDLE (or poll) wait before looking at signals and due jobs again
    outbox_every: float = 60.0  # seconds between outbox deliveries (retries included)
    heartbeat_after: float | None = None  # alert when no mailbox check has succeeded for this long (seconds);
    # None: [schedule] heartbeat_minutes
    reconnect_max: float = 300.0  # longest wait between two reconnection attempts


class Daemon:
    """`gateway run`: handles each return within seconds of its arrival, for years."""

    def __init__(self, config_path: Path, build: Callable[[Path], Gateway], timing: Timing = Timing(),
                 clock: Callable[[], float] = time.monotonic,
                 now: Callable[[], datetime] | None = None) -> None:
        """`clock` measures waits; `now`, when given, replaces the gateway's clock: the date that the dated jobs
        and deliveries work for (tests pass their own)."""
        self.config_path = config_path
        self.build = build
        self.timing = timing
        self.clock = clock
        self.gateway = build(config_path)
        if now is not None:
            self.now = now
        self.last_check = clock()
        self._recorded_check = float("-inf")
        self._stopping = False
        self._waiting = False
        self._due: queue.Queue[str] = queue.Queue()
        self._stamp = self._rules_stamp()
        self._alerted_silence = False

    @property
    def now(self) -> Callable[[], datetime]:
        """The gateway's clock: one "now" for the jobs, the deliveries and the alerts' keys."""
        return self.gateway.clock

    @now.setter
    def now(self, now: Callable[[], datetime]) -> None:
        self.gateway = replace(self.gateway, clock=now)

    # -- lifecycle ----------------------------------------------------------------------------------
    def run(self) -> int:
        scheduler = BackgroundScheduler(timezone="UTC")
        self.schedule(scheduler)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        scheduler.start()
        log.info("gateway running: watching the mailbox")
        try:
            self._run_due()  # the catch-up, before the first look at the mailbox
            self._watch()
        finally:
            scheduler.shutdown(wait=False)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        log.info("gateway stopped")
        return 0

    def schedule(self, scheduler: BackgroundScheduler) -> None:
        """Register every job with its trigger, and queue each dated job once now, to catch up."""
        settings = self.gateway.config.schedule
        scheduler.add_job(self._due.put, "interval", args=["outbox"], seconds=self.timing.outbox_every, id="outbox")
        scheduler.add_job(self._due.put, "interval", args=["heartbeat"], seconds=60, id="heartbeat")
        days = {"digests": "*", "key-expiry": "*", "reminders": settings.reminder_day, "retention": "*", "monthly-report": settings.report_day}
        for minute, name in enumerate(JOBS):  # a few minutes apart, so the log tells them apart
            scheduler.add_job(self._due.put, "cron", args=[name], id=name, day=days[name], hour=settings.hour,
                              minute=minute, timezone=LOCAL)
            self._due.put(name)

    def stop(self) -> None:
        self._stopping = True

    def _on_signal(self, signum: int, _frame: object) -> None:
        log.info("signal %d: finishing the work in hand, then stopping", signum)
        self._stopping = True
        if self._waiting:  # only an idle wait is interrupted; a message in hand is always finished
            raise _Stop()

    # -- the loop -----------------------------------------------------------------------------------
    def _watch(self) -> None:
        backoff = 1.0
        while not self._stopping:
            try:
                with Inbox(self.gateway.config.mailbox, self.gateway.tokens) as watcher:
                    backoff = 1.0
                    self._round(watcher)
                    while not self._stopping:
                        arrived = self._wait(watcher)
                        self._checked()  # a quiet mailbox, looked at successfully, is a healthy one
                        self._reload_if_edited()
                        if arrived:
                            self._round(watcher)
                        self._run_due()
            except _Stop:
                break
            except (MailboxError, OutboxError) as error:  # passing faults: the mail waits in INBOX meanwhile
                if isinstance(error, SignInRefused):  # not passing: the administrator must act; never a loop of sign-ins
                    backoff = max(backoff, error.retry_in)
                    self._refused(error)
                log.warning("%s; trying again in %.0f s", error, backoff)
                self._run_due()
                self._sleep(backoff)
                backoff = min(backoff * 2, self.timing.reconnect_max)

    def _wait(self, watcher: Inbox) -> bool:
        self._waiting = True
        try:
            return watcher.wait_for_mail(self.timing.wait)
        finally:
            self._waiting = False

    def _round(self, watcher: Inbox) -> None:
        # On the watching session: one login for as long as the server keeps it. Deferred mail waits
        # for its turn in the backoff.
        run_once(self.gateway, retry_now=False, inbox=watcher)
        self._checked()

    def _checked(self) -> None:
        """Note a successful look at the mailbox; `gateway status` reads it (at most every 5 minutes)."""
        now = self.clock()
        if now - self._recorded_check >= 300:
            self.gateway.ledger.mailbox_checked()
            self._recorded_check = now
        self.last_check = now
        self._alerted_silence = False

    def _sleep(self, seconds: float) -> None:
        end = self.clock() + seconds
        while not self._stopping and self.clock() < end:
            self._waiting = True
            try:
                time.sleep(min(1.0, max(0.0, end - self.clock())))
            except _Stop:
                return
            finally:
                self._waiting = False

    # -- jobs ---------------------------------------------------------------------------------------
    def _run_due(self) -> None:
        while True:
            try:
                job = self._due.get_nowait()
            except queue.Empty:
                return
            if job in JOBS:
                self._dated(job)
                continue
            try:
                {"outbox": self._outbox, "heartbeat": self._heartbeat}[job]()
            except GatewayError as error:
                log.warning("job %s failed, will run again: %s", job, error)

    def _dated(self, job: str) -> None:
        try:
            queued = JOBS[job](self.gateway, self.now())
        except GatewayError as error:
            log.warning("job %s failed, will run again at its next time: %s", job, error)
            return
        except Exception as error:  # a job that fails must not stop the daemon; it runs again at its next time
            log.error("job %s failed, will run again at its next time: %s", job, describe(error))
            return
        if queued:
            self._outbox()  # its mail goes now, not at the next outbox round

    def _outbox(self) -> None:
        deliver(self.gateway)  # a key added since the last run lets held packages go; due digests go too

    def _refused(self, error: SignInRefused) -> None:
        """The mailbox refused the app's sign-in: tell the administrator through the relay, once a day per cause."""
        gateway = self.gateway
        try:
            if notify_admin(
                gateway.config, gateway.ledger, gateway.outbox, "daemon", *notices.signin_refused(error, HOLD_MAX / 60),
                key=f"{error.cause.name}-{self.now():%Y-%m-%d}",
            ):
                self._outbox()
        except GatewayError as failed:  # the outbox cannot take the alert: the log line is all there is
            log.error("the alert about the refused sign-in could not be queued: %s", failed)

    def _heartbeat(self) -> None:
        silent = self.clock() - self.last_check
        after = self.timing.heartbeat_after or self.gateway.config.schedule.heartbeat_minutes * 60.0
        if silent < after or self._alerted_silence:
            return
        gateway = self.gateway
        minutes = int(silent // 60)
        log.error("no successful mailbox check for %d minutes", minutes)
        notify_admin(
            gateway.config, gateway.ledger, gateway.outbox, "daemon", *notices.mailbox_not_checked(gateway.config, minutes),
            key=self.now().strftime("%Y-%m-%dT%H"),
        )
        self._alerted_silence = True
        self._outbox()

    # -- hot reload ---------------------------------------------------------------------------------
    def _rules_stamp(self) -> RulesStamp:
        paths = self.gateway.config.paths
        files = sorted(paths.rules.glob("*.toml")) + sorted(paths.keys.glob("*.asc"))
        return tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in files)

    def _reload_if_edited(self) -> None:
        stamp = self._rules_stamp()
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            # The tokens stay valid, and the clock is the one the daemon was given.
            self.gateway = replace(self.build(self.config_path), tokens=self.gateway.tokens, clock=self.gateway.clock)
        except GatewayError as error:
            log.error("edited rules or keys refused; the previous ones stay in force")
            gateway = self.gateway
            notify_admin(
                gateway.config, gateway.ledger, gateway.outbox, "rules", *notices.rules_refused(error),
                key=refused_rules_key(stamp),
            )
            self._outbox()
            return
        log.info("rules and keys reloaded")


def refused_rules_key(stamp: RulesStamp) -> str:
    """The alert's key for one refused version of the rule files: the same in every process (Python's
    hash() of a str is salted per process), so a restart never sends the same alert again."""
    return hashlib.sha256(repr(stamp).encode()).hexdigest()[:16]


class _Stop(BaseException):
    """Raised by the signal handler only while the daemon is waiting, never mid-message."""
