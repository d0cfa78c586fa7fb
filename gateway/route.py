"""Accepted rows -> one batch per home borough, by the ONS postcode directory and rules/boroughs.toml."""

from __future__ import annotations

from dataclasses import dataclass

from .postcodes import Directory
from .read import Return
from .rules import LONDON, Borough, Rules
from .validate import Accepted, Finding, finding


@dataclass(frozen=True)
class Batch:
    """The rows one borough receives (each of its recipients gets a package of them)."""

    borough: Borough
    rows: tuple[Accepted, ...]

    def by_reason(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for accepted in self.rows:
            counts[accepted.reason] = counts.get(accepted.reason, 0) + 1
        return counts


@dataclass(frozen=True)
class Routed:
    batches: tuple[Batch, ...]
    findings: tuple[Finding, ...]  # rows that could not be routed (severity E: not forwarded)

    @property
    def forwarded(self) -> int:
        return self.forwarded_except(frozenset())

    def forwarded_except(self, held: frozenset[str]) -> int:
        """Rows on their way to a borough, leaving out boroughs whose packages are held."""
        return sum(len(batch.rows) for batch in self.batches if batch.borough.code not in held)


def route(table: Return, accepted: tuple[Accepted, ...], rules: Rules, directory: Directory) -> Routed:
    """Place each row in its home borough; a row that cannot be placed is rejected with a finding."""
    groups: dict[str, list[Accepted]] = {}
    findings = []
    for item in accepted:
        code = directory.authority(item.postcode)
        if code is None:
            findings.append(finding(table, "Postcode_15", item.row.number, source=item.row))
        elif code not in rules.boroughs:
            findings.append(finding(table, "Route_01", item.row.number, f" ({LONDON.get(code, 'local authority code')} {code})", item.row))
        else:
            groups.setdefault(code, []).append(item)
    batches = tuple(Batch(rules.boroughs[code], tuple(rows)) for code, rows in sorted(groups.items()))
    return Routed(batches, tuple(findings))
