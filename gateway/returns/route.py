"""Accepted rows -> one batch per borough that takes them, by the ONS postcode directory and rules/.

Where a row goes: its postcode's override in routing.toml, else the directory, names the local authority;
the home authority is the upper tier responsible for it (a district's county, authorities.py); a borough in
boroughs.toml takes it if it takes that reason. routing.toml says what becomes of a row
whose postcode the directory cannot place, or whose authority has no table. Every row not forwarded
gets a finding that says why.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..reference import authorities as authorities_module
from ..reference import postcodes
from ..reference.postcodes import Directory
from ..rules import HOST_BOROUGH, Borough, Provider, Rules
from .read import Return
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
    findings: tuple[Finding, ...]  # E: a row not forwarded, and why; W: a row forwarded somewhere unusual

    @property
    def forwarded(self) -> int:
        return self.forwarded_except(frozenset())

    def forwarded_except(self, held: frozenset[str]) -> int:
        """Rows on their way to a borough, leaving out boroughs whose packages are held."""
        return sum(len(batch.rows) for batch in self.batches if batch.borough.code not in held)


def route(table: Return, accepted: tuple[Accepted, ...], rules: Rules, directory: Directory,
          provider: Provider | None = None) -> Routed:
    """Place each row with the borough that takes it. `provider` (the registered sender) is needed for
    routing.toml's unplaceable = "host_borough" (the default); without it such rows are held back."""
    destinations: dict[str, Borough] = {}
    groups: dict[str, list[Accepted]] = {}
    findings: list[Finding] = []
    for item in accepted:
        borough, placed, said = _destination(table, item, rules, directory, provider)
        findings += said
        if borough is not None:
            destinations[borough.code] = borough
            groups.setdefault(borough.code, []).append(placed)
    batches = tuple(Batch(destinations[code], tuple(rows)) for code, rows in sorted(groups.items()))
    return Routed(batches, tuple(findings))


def _destination(table: Return, item: Accepted, rules: Rules, directory: Directory,
                 provider: Provider | None) -> tuple[Borough | None, Accepted, list[Finding]]:
    """The borough a row goes to (None: not forwarded), the row as placed (home authority, how it was
    routed, its notes), and the finding that explains anything unusual."""
    row, routing = item.row, rules.routing
    shaped = postcodes.is_valid(item.postcode)  # else validation has noted it missing or malformed
    code = routing.override(item.postcode) if shaped else None
    routed_by = "override" if code else "postcode"
    code = code or (directory.authority(item.postcode) if shaped else None)
    code = authorities_module.load().upper_tier(code) or code if code else None
    notes, said = list(item.notes), []
    if code is None:
        host = _host_borough(rules, provider)
        rule = "Postcode_15" if shaped else "Postcode_02" if item.postcode else "Postcode_01"
        if host is None:  # validation's W note on a missing or malformed postcode becomes this E (settle())
            return None, item, [finding(table, rule, row.number, source=row, held=True, severity="E")]
        borough, routed_by = host, "provider's authority"
        if shaped:
            said.append(finding(table, rule, row.number, source=row))
            notes.append((rule, ""))
    elif code in rules.boroughs:
        borough = rules.boroughs[code]
    elif routing.outside_borough is not None:
        borough = routing.outside_borough
        said.append(finding(table, "Route_03", row.number, f"; home authority {authority(code)}, sent to {', '.join(borough.recipients)}", row))
        notes.append(("Route_03", f" ({authority(code)})"))
    else:
        return None, item, [finding(table, "Route_01", row.number, f": {authority(code)}", row)]
    if not borough.takes(item.reason):
        return None, item, [finding(table, "Route_02", row.number, _not_taken(borough, item.reason), row)]
    return borough, item.placed(tuple(notes), code, routed_by), said


def _host_borough(rules: Rules, provider: Provider | None) -> Borough | None:
    """Where routing.toml sends a row the directory cannot place: the provider's own authority, when served here."""
    if rules.routing.unplaceable != HOST_BOROUGH or provider is None or not provider.host_la:
        return None
    host = authorities_module.load().upper_tier(provider.host_la) or provider.host_la
    return rules.boroughs.get(host)


def authority(code: str) -> str:
    """An authority as a receipt names it: "Essex (E10000012)", or "local authority code W99999999"."""
    return authorities_module.load().label(code)


def _not_taken(borough: Borough, reason: str) -> str:
    taken = " and ".join(borough.reasons)
    return (f" ({borough.name} takes {taken} notifications only). Nothing more is needed from you, unless "
            f"{borough.name} has asked you for {reason} notifications: then send them to {borough.name} directly")
