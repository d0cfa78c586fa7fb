"""The periodic jobs (APScheduler), calling the pipeline; nothing else imports APScheduler."""

from __future__ import annotations

import logging
import signal
from datetime import datetime, timezone

from apscheduler.schedulers.blocking import BlockingScheduler

from .errors import GatewayError
from .pipeline import Gateway, run_once

log = logging.getLogger(__name__)


def serve(gateway: Gateway, interval: float) -> None:
    """Check the mailbox and deliver the outbox every `interval` seconds until SIGTERM or SIGINT."""
    scheduler = BlockingScheduler(timezone="UTC")

    def check_mailbox() -> None:
        try:
            run_once(gateway)
        except GatewayError as error:  # a dropped connection is retried at the next tick
            log.warning("mailbox check failed, will retry: %s", error)

    # One run at a time; missed ticks collapse into one, so a slow run never piles up work.
    scheduler.add_job(check_mailbox, "interval", seconds=interval, id="mailbox", max_instances=1,
                      coalesce=True, next_run_time=datetime.now(timezone.utc))

    def stop(signum: int, _frame: object) -> None:
        log.info("signal %d: finishing the message in hand, then stopping", signum)
        scheduler.shutdown(wait=True)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("gateway running: mailbox checked every %.0f s", interval)
    scheduler.start()

