"""Delivery of what is queued: the one place that releases held packages, sends due digests and flushes the outbox."""

from __future__ import annotations

from dataclasses import dataclass

from ..app import Gateway
from .digest import send_digests
from .held import release_held
from .send import Delivery, flush


@dataclass(frozen=True)
class Delivered:
    """What one delivery did: packages released, digests queued, and the outbox's counts."""

    released: int
    digests: int
    delivery: Delivery


def deliver(gateway: Gateway, retry_now: bool = False) -> Delivered:
    """Release held packages whose recipient now has a key, queue the digests due at the gateway's clock, then
    try the outbox once. `retry_now` tries deferred messages before their next attempt is due (`run --once`)."""
    released = release_held(gateway)  # a key added since the last run lets held packages go
    digests = send_digests(gateway, gateway.clock())
    delivery = flush(gateway.outbox, gateway.ledger, gateway.config.smtp, admin=gateway.config.admin.email,
                     retry_now=retry_now, tokens=gateway.tokens)
    return Delivered(released, digests, delivery)
