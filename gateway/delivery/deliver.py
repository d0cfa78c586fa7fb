"""Delivery of what is queued: the one place that releases held packages, sends due digests and flushes the outbox."""

from __future__ import annotations

from dataclasses import dataclass

from ..app import Gateway
from .digest import send_digests
from .held import release_held
from .send import Delivery, Flush


@dataclass(frozen=True)
class Delivered:
    """What one delivery did: packages released, digests queued, and the outbox's counts."""

    released: int
    digests: int
    delivery: Delivery


def deliver(gateway: Gateway, retry_now: bool = False, flushing: Flush | None = None) -> Delivered:
    """Release held packages whose recipient now has a key, queue the digests due at the gateway's clock, then
    try the outbox once. `retry_now` tries deferred messages before their next attempt is due (`run --once`).
    `flushing`: the run's flush, begun while its mail was handled; it goes on here with what is left."""
    released = release_held(gateway)  # a key added since the last run lets held packages go
    digests = send_digests(gateway, gateway.clock())
    with flushing or flush_of(gateway, retry_now) as flushed:
        while flushed.step():
            pass
    return Delivered(released, digests, flushed.delivery())


def flush_of(gateway: Gateway, retry_now: bool = False) -> Flush:
    """The gateway's flush of its outbox (`deliver` ends it)."""
    return Flush(gateway.outbox, gateway.ledger, gateway.config.smtp, admin=gateway.config.admin.email,
                 retry_now=retry_now, tokens=gateway.tokens)
