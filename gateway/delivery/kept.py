"""What the gateway keeps for itself, encrypted to its own key, to send later: a borough's batch as JSON
(a held package, a digest's waiting part), and the message rebuilt from it under the id it would have had.

Used by held.py (packages held for want of a key) and digest.py (rows waiting for a daily or weekly digest).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any

from ..mail import Outgoing
from ..returns.read import Return, Row
from ..returns.route import Batch
from ..returns.validate import Accepted
from ..rules import Borough, Provider, Rules
from .pack import Part, Source, digest_message

if TYPE_CHECKING:
    from ..app import Gateway


# -- the batch, as JSON, for the gateway's eyes only ----------------------------------------------
def encode(table: Return, batch: Batch, source: Source) -> bytes:
    return json.dumps({
        "headings": list(table.headings),
        "columns": dict(table.columns),  # which column holds which field of the return
        "rows": [[a.row.number, [_value(v) for v in a.row.values], a.postcode, a.reason,
                  [list(note) for note in a.notes], a.home, a.routed_by] for a in batch.rows],
        "held_back": [list(item) for item in source.held_back],
    }).encode()


def decode(data: bytes, borough: Borough) -> tuple[Return, Batch, tuple[tuple[str, int], ...]]:
    """The table, the batch and the return's held-back counts; a package held before rows carried their
    notes and home authority (four items a row) rebuilds with none."""
    held = json.loads(data)
    table = Return(sheet="", header={}, headings=tuple(held["headings"]),
                   columns=held.get("columns", {}), heading_row=0, rows=())
    rows = tuple(_accepted(*row) for row in held["rows"])
    return table, Batch(borough, rows), tuple((why, count) for why, count in held.get("held_back", ()))


def _accepted(number: int, values: list[Any], postcode: str, reason: str, notes: Sequence[Sequence[str]] = (),
              home: str | None = None, routed_by: str = "") -> Accepted:
    return Accepted(Row(number, tuple(_unvalue(v) for v in values)), postcode, reason,
                    tuple((rule, detail) for rule, detail in notes), home, routed_by)


# datetime first: it is also a date
_TYPES: tuple[tuple[str, type[datetime] | type[date] | type[time]], ...] = (
    ("datetime", datetime), ("date", date), ("time", time))


def _value(value: object) -> object:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    for tag, kind in _TYPES:
        if isinstance(value, kind):
            return {tag: value.isoformat()}
    if isinstance(value, timedelta):
        return {"timedelta": value.total_seconds()}
    return str(value)


def _unvalue(value: object) -> object:
    if not isinstance(value, dict):
        return value
    (tag, text), = value.items()
    if tag == "timedelta":
        return timedelta(seconds=text)
    return dict(_TYPES)[tag].fromisoformat(text)


def rebuild_digest(gateway: Gateway, facts: dict[str, Any], plain: bytes, borough: Borough, recipient: str, fingerprint: str) -> Outgoing:
    """A held digest, its recipient now with a key: the message it would have been, under the same id."""
    bundle = json.loads(plain)
    parts = tuple(part(gateway.rules, item["facts"], json.dumps(item["package"]).encode(), borough) for item in bundle)
    config = gateway.config
    return digest_message(parts, borough, recipient, gateway.keyring, fingerprint, config.smtp.from_address,
                          config.admin.email, facts["id"], facts["reference"], datetime.fromisoformat(facts["received"]))


def part(rules: Rules, facts: dict[str, Any], plain: bytes, borough: Borough) -> Part:
    table, batch, held_back = decode(plain, borough)
    provider = rules.providers.get(facts["provider"]) or Provider(facts["provider"], facts["provider"], ())
    return table, batch, Source(provider, facts["reference"], datetime.fromisoformat(facts["received"]), held_back)
