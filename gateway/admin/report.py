"""The monthly monitoring report: which providers returned (on time or late), notifications per borough
by reason, the London totals; as text for the terminal (here) and as an xlsx with charts (report_book.py).

Built from the ledger alone, so it holds what the ledger holds: counts, ids, and the names of providers
and boroughs from rules/, never a young person's details. A month is London time, by when the gateway
received each message.

Reasons per borough come from the "reasons" column of the ledger's package rows (JSON such as
{"Leaver": 3, "Joiner": 1}, from route.Batch.by_reason()). Packages recorded without it count in the
totals, under "reason not recorded". A return's rows for a borough that takes a daily or weekly digest
are recorded as a "part" per recipient when the return is received, and count in that month, whenever the
digest goes; under Packages each part counts as one, sent once its digest is.
"""

from __future__ import annotations

import json
import re
import textwrap
from dataclasses import dataclass
from datetime import UTC, datetime

from ..config import LOCAL
from ..errors import ReportError
from ..ledger import Ledger, MessageRecord, Outcome, OutgoingState, ReportLine
from ..rules import LONDON, OUTSIDE, OUTSIDE_NAME, REASONS, Rules

_MONTH = re.compile(r"^([12]\d{3})-(0[1-9]|1[0-2])$")
NOT_RECORDED = "Reason not recorded"


@dataclass(frozen=True)
class ProviderLine:
    """One provider's month: counts over every message it sent that the ledger dates in the month."""

    ukprn: str
    name: str
    known: bool  # listed in rules/providers.toml now; only known providers count in the share
    first_return: datetime | None  # local time its first accepted return of the month arrived; None: not returned
    on_time: bool | None  # None when it did not return
    returns: int  # messages received from it
    rejected: int  # of which refused as a whole (could not be opened, wrong template, duplicate)
    rows: int
    rows_forwarded: int
    rows_rejected: int
    warnings: int

    @property
    def returned(self) -> bool:
        return self.first_return is not None

    @property
    def status(self) -> str:
        return "not returned" if not self.returned else "on time" if self.on_time else "late"


@dataclass(frozen=True)
class BoroughLine:
    """Notifications routed to one borough (or a total of several) from returns received in the month."""

    code: str
    name: str
    notifications: int
    reasons: tuple[tuple[str, int], ...]  # (reason, count) for each of rules.REASONS
    not_recorded: int  # notifications from packages that did not record their reasons
    providers: int  # how many providers sent it rows
    packages: int  # one per recipient per return
    sent: int  # of those, handed to the relay

    def count(self, reason: str) -> int:
        return dict(self.reasons).get(reason, 0)

    def values(self, columns: list[str]) -> list[int]:
        """The counts under `columns` (MonthlyReport.reason_columns)."""
        return [self.not_recorded if column == NOT_RECORDED else self.count(column) for column in columns]


@dataclass(frozen=True)
class MonthlyReport:
    month: str  # YYYY-MM
    due_day: int
    generated: datetime  # UTC
    providers: tuple[ProviderLine, ...]
    boroughs: tuple[BoroughLine, ...]
    london: BoroughLine  # total over the London boroughs (ONS codes E09...)
    total: BoroughLine  # over every borough and the outside recipient
    messages: int  # every message the ledger dates in the month, returns or not
    quarantined: int

    def totals(self) -> list[BoroughLine]:
        """The London total, and the total over every recipient when some went beyond London."""
        return [self.london] + ([self.total] if self.total.notifications != self.london.notifications else [])

    def reason_columns(self) -> list[str]:
        """The reasons as columns: none when no package recorded them, else each reason, and "reason not
        recorded" when some notifications lack it."""
        total = self.total
        if total.not_recorded == total.notifications:
            return []
        every = [total, *self.boroughs]
        columns = list(dict.fromkeys(list(REASONS) + [r for b in every for r, _ in b.reasons if r not in REASONS]))
        return columns + ([NOT_RECORDED] if total.not_recorded else [])

    @property
    def known_providers(self) -> int:
        return sum(1 for p in self.providers if p.known)

    @property
    def returned(self) -> int:
        return sum(1 for p in self.providers if p.known and p.returned)

    @property
    def on_time(self) -> int:
        return sum(1 for p in self.providers if p.known and p.on_time)

    @property
    def late(self) -> int:
        return self.returned - self.on_time

    @property
    def share_returned(self) -> float:
        """Known providers that returned, as a fraction (0.0 when none is known)."""
        return self.returned / self.known_providers if self.known_providers else 0.0

    @property
    def in_progress(self) -> bool:
        return _month_bounds(self.month)[1] > self.generated

    @property
    def notes(self) -> tuple[str, ...]:
        notes = [
            "A provider returned in the month when at least one return it sent that month was accepted (opened and "
            "checked, even if some rows were rejected). A return refused as a whole (could not be opened, not the "
            "template, a duplicate) does not count.",
            f"On time: its first accepted return of the month reached the gateway by the end of day {self.due_day} "
            "(London time). Months and days are London time, by when the gateway received each message.",
            "Notifications per borough are the rows routed to it from returns received in the month, including "
            "packages not yet delivered (`gateway outbox` lists those) and rows waiting for a borough's daily or "
            "weekly digest (counted in the month their return arrived; `gateway status` lists them). The share of providers that returned counts "
            "only the providers now in rules/providers.toml.",
        ]
        if self.total.not_recorded:
            notes.append(f"{self.total.not_recorded} notification(s) were routed before the gateway recorded reasons "
                         "per package: they count in the totals, not by reason.")
        if any(not p.known for p in self.providers):
            notes.append("Providers marked as not in rules/providers.toml sent returns this month but are no longer listed.")
        if self.in_progress:
            notes.append("The month is not over: these are the figures so far.")
        return tuple(notes)

    def text(self) -> str:
        """A plain summary for the terminal: counts and organisations' names only."""
        rows_read = sum(p.rows for p in self.providers)
        lines = [
            f"LDOR monitoring report for {self.month} (returns due by day {self.due_day})",
            f"From the gateway's ledger at {self.generated:%Y-%m-%d %H:%M} UTC. Counts only, no young person's details.",
            "",
            f"Providers: {self.known_providers} known, {self.returned} returned ({self.share_returned:.0%}): "
            f"{self.on_time} on time, {self.late} late; {self.known_providers - self.returned} not returned.",
            f"Returns received: {sum(p.returns for p in self.providers)} "
            f"({sum(p.rejected for p in self.providers)} refused as a whole); "
            f"messages in all: {self.messages}, of which {self.quarantined} quarantined.",
            f"Rows: {rows_read} read, {sum(p.rows_forwarded for p in self.providers)} forwarded, "
            f"{sum(p.rows_rejected for p in self.providers)} rejected; {sum(p.warnings for p in self.providers)} warning(s).",
            f"Notifications to London boroughs: {self.london.notifications}{_reasons_in_words(self.london)}.",
        ]
        if self.total.notifications != self.london.notifications:
            lines.append(f"Notifications to every recipient (London and beyond): {self.total.notifications}"
                         f"{_reasons_in_words(self.total)}.")
        lines += ["", "Providers"]
        lines += _table(
            ("UKPRN", "Provider", "Returned", "Returns", "Refused", "Rows", "Forwarded", "Rejected", "Warnings"),
            [(p.ukprn, p.name + ("" if p.known else " (not in providers.toml)"), provider_status(p), p.returns,
              p.rejected, p.rows, p.rows_forwarded, p.rows_rejected, p.warnings) for p in self.providers],
        )
        lines += ["", "Notifications per borough"]
        reasons = self.reason_columns()
        lines += _table(
            ("Code", "Borough", "Notifications", *reasons, "Providers"),
            [(b.code, b.name, b.notifications, *b.values(reasons), b.providers) for b in self.boroughs]
            + [("", b.name, b.notifications, *b.values(reasons), b.providers) for b in self.totals()],
        )
        lines += ["", "Notes"] + [textwrap.fill(note, 100, initial_indent="- ", subsequent_indent="  ") for note in self.notes]
        return "\n".join(lines) + "\n"


def monthly_report(ledger: Ledger, rules: Rules, month: str, due_day: int = 10, *,
                   now: datetime | None = None) -> MonthlyReport:
    """The month's figures from the ledger; every provider and borough in `rules` appears, returned or not."""
    if not 1 <= due_day <= 31:
        raise ReportError(f"the due day must be a day of the month (1 to 31), not {due_day}")
    start, end = _month_bounds(month)
    since, until = _iso(start), _iso(end)
    messages = ledger.messages(since, until)
    packages = ledger.report_lines(since, until)  # a digest part counts like a package
    boroughs = _boroughs(rules, packages)
    london = _sum("", "London total", packages, set(LONDON))
    total = _sum("", "All recipients", packages, {b.code for b in boroughs})
    return MonthlyReport(
        month=month, due_day=due_day, generated=(now or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0),
        providers=_providers(rules, messages, due_day), boroughs=boroughs, london=london, total=total,
        messages=len(messages), quarantined=sum(1 for m in messages if m.outcome == Outcome.QUARANTINED),
    )


# -- the figures ------------------------------------------------------------------------------------
def _month_bounds(month: str) -> tuple[datetime, datetime]:
    """The first instant of the month and of the next, London time (as aware datetimes)."""
    match = _MONTH.match(month or "")
    if not match:
        raise ReportError(f"the month must be given as YYYY-MM, for example 2025-03, not {month!r}")
    year, number = int(match[1]), int(match[2])
    start = datetime(year, number, 1, tzinfo=LOCAL)
    end = datetime(year + number // 12, number % 12 + 1, 1, tzinfo=LOCAL)
    return start, end


def _iso(moment: datetime) -> str:
    """As the ledger writes times (UTC, seconds, +00:00), so that text order is time order."""
    return moment.astimezone(UTC).isoformat(timespec="seconds")


def _providers(rules: Rules, messages: list[MessageRecord], due_day: int) -> tuple[ProviderLine, ...]:
    mine: dict[str, list[MessageRecord]] = {}
    for message in messages:
        if message.provider:
            mine.setdefault(message.provider, []).append(message)
    ukprns = list(rules.providers) + sorted(set(mine) - set(rules.providers))
    lines = []
    for ukprn in ukprns:
        sent = mine.get(ukprn, [])
        accepted = sorted(m.first_seen for m in sent if m.outcome == Outcome.ACCEPTED or (m.rows_forwarded or 0) > 0)
        first = datetime.fromisoformat(accepted[0]).astimezone(LOCAL) if accepted else None
        provider = rules.providers.get(ukprn)
        lines.append(ProviderLine(
            ukprn=ukprn, name=provider.name if provider else ukprn, known=provider is not None,
            first_return=first, on_time=None if first is None else first.day <= due_day,
            returns=len(sent), rejected=sum(1 for m in sent if m.outcome == Outcome.REJECTED),
            rows=_total(sent, "rows_read"), rows_forwarded=_total(sent, "rows_forwarded"),
            rows_rejected=_total(sent, "rows_rejected"), warnings=_total(sent, "warnings"),
        ))
    return tuple(sorted(lines, key=lambda p: (not p.known, p.name.casefold(), p.ukprn)))


def _total(rows: list[MessageRecord], column: str) -> int:
    return sum(getattr(row, column) or 0 for row in rows)


def _boroughs(rules: Rules, packages: list[ReportLine]) -> tuple[BoroughLine, ...]:
    names = {code: b.name for code, b in rules.boroughs.items()}
    outside = rules.routing.outside_borough
    if outside is not None:
        names[outside.code] = outside.name
    for row in packages:  # a borough that received this month but has since left the rules
        if row.borough is not None:  # a row without one is in no borough's line
            names.setdefault(row.borough,
                             LONDON.get(row.borough, OUTSIDE_NAME if row.borough == OUTSIDE else row.borough))
    lines = [_sum(code, name, packages, {code}) for code, name in names.items()]
    # London's boroughs by name, then anything else (the outside recipient, authorities beyond London).
    return tuple(sorted(lines, key=lambda b: (b.code not in LONDON, b.code == OUTSIDE, b.name.casefold())))


def _sum(code: str, name: str, packages: list[ReportLine], codes: set[str]) -> BoroughLine:
    """The figures of the packages for these borough codes.

    A return's rows for a borough go to each of its recipients, so they are counted once: per return and
    borough, the rows of one recipient's packages (a message with two returns has two packages for it)."""
    per_recipient: dict[tuple[str, str], dict[str, list[ReportLine]]] = {}
    for row in packages:
        if row.borough in codes:
            per_recipient.setdefault((row.reference, row.borough), {}).setdefault(row.recipient, []).append(row)
    counts = {reason: 0 for reason in REASONS}
    notifications = not_recorded = 0
    providers = set()
    for recipients in per_recipient.values():
        rows = max(recipients.values(), key=lambda items: sum(r.rows or 0 for r in items))
        for row in rows:
            notifications += row.rows or 0
            providers.add(row.provider)
            known = _reasons(row)
            if known is None:
                not_recorded += row.rows or 0
                continue
            for reason, count in known.items():
                counts[reason] = counts.get(reason, 0) + count
            not_recorded += max(0, (row.rows or 0) - sum(known.values()))
    every = [row for items in per_recipient.values() for rows in items.values() for row in rows]
    return BoroughLine(
        code=code, name=name, notifications=notifications, reasons=tuple(counts.items()), not_recorded=not_recorded,
        providers=len(providers), packages=len(every), sent=sum(1 for row in every if row.state == OutgoingState.SENT),
    )


def _reasons(row: ReportLine) -> dict[str, int] | None:
    """A package row's counts by reason, or None when it did not record them (or not readably)."""
    if not row.reasons:
        return None
    try:
        found = json.loads(row.reasons)
    except ValueError:
        return None
    if not isinstance(found, dict) or not all(isinstance(v, int) for v in found.values()):
        return None
    return {str(reason): count for reason, count in found.items()}


# -- text -------------------------------------------------------------------------------------------
def provider_status(p: ProviderLine) -> str:
    if p.first_return is None:
        return "NOT RETURNED"
    return f"{p.status} ({p.first_return:%d/%m %H:%M})"


def _reasons_in_words(b: BoroughLine) -> str:
    parts = [f"{reason} {count}" for reason, count in b.reasons if count]
    if b.not_recorded and parts:
        parts.append(f"reason not recorded {b.not_recorded}")
    return f" ({', '.join(parts)})" if parts else ""


def _table(headings: tuple[str, ...], rows: list[tuple[object, ...]]) -> list[str]:
    """Columns padded to their widest cell; numbers to the right."""
    cells = [tuple(str(v) for v in headings)] + [tuple(str(v) for v in row) for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headings))]
    numeric = [all(isinstance(row[i], int) for row in rows) and bool(rows) for i in range(len(headings))]
    return ["  ".join(c.rjust(w) if n else c.ljust(w) for c, w, n in zip(row, widths, numeric, strict=False)).rstrip()
            for row in cells]
