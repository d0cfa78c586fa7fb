"""The provider's receipt, built from findings and batch counts; and the administrator's alerts.

A receipt travels in clear, so it identifies the file by the gateway's reference, time, size and a
short hash, and each problem by row number and column, never by a value, a name or a file name.
"""

from __future__ import annotations

import csv
import io
import textwrap
import zipfile
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType

from ..ledger import Kind
from ..mail import Outgoing, compose, compose_encrypted, entity, outgoing_id
from ..returns.route import Routed
from ..returns.validate import RULES, Finding, sort_findings
from ..rules import Provider
from .guard import Medium, guard

Seal = Callable[[bytes], bytes]  # encrypts a receipt to the provider's own key (armoured)

# A receipt must reach the provider: relays refuse mail over some size (10 MB is a common limit; a
# million-row file once made a 625 MB receipt that was refused, so the provider heard nothing).
RECEIPT_LIMIT = 10 * 1024 * 1024  # bytes of the whole message as sent
LISTED = 200  # findings listed one by one in a receipt's body; all are counted by rule, and in the file
ZIP_OVER = 512 * 1024  # a findings csv larger than this is attached zipped


@dataclass(frozen=True)
class FileFacts:
    """How a receipt names the file it answers."""

    reference: str
    received: datetime
    index: int
    count: int
    size: int
    short_hash: str

    def describe(self) -> str:
        which = f"attachment {self.index} of {self.count}, " if self.count > 1 else ""
        return f"{which}{self.size:,} bytes, SHA-256 {self.short_hash}"


@dataclass(frozen=True)
class Letterhead:
    """What every receipt carries: who sends it, and the gateway's public key for providers to use."""

    sender: str
    fingerprint: str
    public_key: str
    seal: Seal | None = None  # when the provider has a key: encrypt its receipts to it


def acknowledgement(
    facts: FileFacts, provider: Provider, rows_read: int, findings: tuple[Finding, ...], routed: Routed,
    edition: str, to: str, head: Letterhead, *, held: frozenset[str] = frozenset(), left_out: tuple[str, ...] = (),
    digests: Mapping[str, datetime] = MappingProxyType({}),
) -> Outgoing:
    """The receipt for an accepted return. With the letterhead's seal (encryption to the provider's own key) it may
    also show each offending value, so the data officer need not look the rows up. `left_out`: the
    headings of the file's columns that are not part of the return. `digests`: for each borough that
    takes a daily or weekly digest, when the digest holding these rows goes (London time)."""
    ordered = sort_findings(list(findings))
    lines = report_lines(facts, provider, rows_read, ordered, routed, edition, held, values=head.seal is not None, listed=LISTED,
                         left_out=left_out, digests=digests)
    verdict = "nil return" if not rows_read else f"{routed.forwarded_except(held)} of {rows_read} rows forwarded"
    return _receipt(facts, Kind.RECEIPT, f"LDOR receipt {facts.reference}: {verdict}", lines, ordered, to, head)


def report_lines(
    facts: FileFacts, provider: Provider, rows_read: int, findings: list[Finding], routed: Routed, edition: str,
    held: frozenset[str] = frozenset(), values: bool = False, listed: int | None = None,
    left_out: tuple[str, ...] = (), digests: Mapping[str, datetime] = MappingProxyType({}),
) -> list[str]:
    """The body of an acknowledgement: summary, then one line per finding, errors first.

    `held` names boroughs none of whose recipients could be sent a package (no usable key). With
    `listed`, only that many findings are listed one by one, and all of them are counted by rule.
    `left_out` are the headings of the file's own columns that are not part of the return, said once.
    `digests` says when the rows of a borough that takes a daily or weekly digest go.
    """
    ordered = sort_findings(findings)
    tally = Tally.of(ordered)
    lines = [
        "Leavers and joiners return: receipt",
        "",
        *_heading(facts, provider),
        f"Postcode directory used: {edition}",
        "",
        "Summary",
        f"  Rows read:       {rows_read}",
        f"  Rows forwarded:  {routed.forwarded_except(held)}",
    ]
    for batch in sorted(routed.batches, key=lambda b: b.borough.name):
        if batch.borough.code not in held:
            lines.append(f"      {batch.borough.name} ({batch.borough.code}): {len(batch.rows)}")
        if batch.borough.code in digests:
            lines.append(f"        {digest_line(batch.borough.name, batch.borough.delivery, len(batch.rows), digests[batch.borough.code])}")
    waiting = [b for b in routed.batches if b.borough.code in held]
    if waiting:
        lines.append(f"  Rows accepted but not yet sent: {sum(len(b.rows) for b in waiting)}")
        for batch in sorted(waiting, key=lambda b: b.borough.name):
            lines.append(f"      {batch.borough.name} ({batch.borough.code}): {len(batch.rows)} (the borough's encryption key needs renewing; the gateway's administrator has been told)")
    lines += [
        f"  Rows rejected (not forwarded): {tally.rejected_rows}"
        + (f" (with {tally.notes_on_rejected} further {'note' if tally.notes_on_rejected == 1 else 'notes'} on them)"
           if tally.notes_on_rejected else ""),
        # A refused file forwards nothing: its notes are not on forwarded rows.
        f"  Warnings{' (nothing was forwarded)' if tally.refused else ' (on forwarded rows)'}: {tally.warnings}",
        "",
    ]
    if left_out and rows_read:
        lines += [*_wrap(_left_out(left_out, routed, values)), ""]
    if ordered:
        if listed is not None and len(ordered) > listed:
            lines += [
                f"Findings by rule ({len(ordered):,} in all, each in the attached findings file)", *_by_rule(ordered), "",
                f"The first {listed} findings (E = row not forwarded, W = a note; each says whether its row was forwarded)",
                *_table(ordered[:listed], values), "",
            ]
        else:
            lines += ["Findings (E = row not forwarded, W = a note; each says whether its row was forwarded)", *_table(ordered, values), ""]
        lines += [
            "What to do: rows with an E were not forwarded; each message says why. Where it asks for a",
            "correction, correct the row in your records and send that young person again in your next",
            "return (or a new return now). A row with only W notes has been forwarded; please check it.",
            "Each rule name (such as ULN_04) is explained in the Instructions sheet of the template.",
        ]
    if not rows_read:
        lines += ([""] if ordered else []) + NIL_RETURN
    elif not ordered:
        lines.append("No problems found: every row was forwarded. Thank you.")
    return lines


@dataclass(frozen=True)
class Tally:
    """A return's findings counted as the receipt says them: a W note on a row that was held back is one
    of that row's notes, not a warning about a forwarded row."""

    rejected_rows: int  # rows with an E finding: not forwarded
    notes_on_rejected: int  # W findings on those rows
    warnings: int  # every other W finding: on forwarded rows, or about the file
    refused: bool  # an F finding: the whole file was refused

    @classmethod
    def of(cls, findings: list[Finding] | tuple[Finding, ...]) -> Tally:
        rejected = {f.row for f in findings if f.severity == "E" and f.row}
        notes = [f for f in findings if f.severity == "W"]
        on_rejected = sum(1 for f in notes if f.row in rejected)
        return cls(len(rejected), on_rejected, len(notes) - on_rejected, any(f.severity == "F" for f in findings))


def digest_line(name: str, delivery: str, rows: int, when: datetime) -> str:
    """"Hackney takes a daily digest: your 7 rows go at 07:00 on Wednesday 26/11/2026 (London time)"."""
    return (f"{name} takes a {delivery} digest: your {rows} {'row goes' if rows == 1 else 'rows go'} at "
            f"{when:%H:%M} on {when:%A %d/%m/%Y} (London time)")


# A table with its headings and no rows under them: the provider is telling us of no one this month.
NIL_RETURN = [
    "Nil return: your table has its headings but no rows under them, so nothing was forwarded.",
    "You told us of no young people this month; if that is wrong, send the return again with the rows.",
]


def _left_out(headings: tuple[str, ...], routed: Routed, values: bool) -> str:
    """What became of the file's columns that are not part of the return: counted in a clear receipt, named
    only in one encrypted to the provider (a heading is the provider's own text, and could be anything)."""
    one = len(headings) == 1
    named = f": {', '.join(guard(h, Medium.LINE) or '(no heading)' for h in headings)}" if values else ""
    asked = sorted((b.borough.name, b.borough.code) for b in routed.batches if b.borough.extra_columns)
    to = (f"forwarded only to {', '.join(f'{name} ({code})' for name, code in asked)}, which asked for them"
          if asked else "not forwarded to any authority")
    return (f"{len(headings)} {'column' if one else 'columns'} of your file that {'is' if one else 'are'} not part of "
            f"the return (such as tutors' notes) {'was' if one else 'were'} {to}{named}.")


def rejection(facts: FileFacts, provider: Provider, advice: str, to: str, head: Letterhead) -> Outgoing:
    lines = [
        "Leavers and joiners return: NOT ACCEPTED",
        "",
        *_heading(facts, provider),
        "",
        "Nothing from this file has been forwarded to any local authority.",
        "",
        "What happened and what to do:",
        *_wrap(advice),
    ]
    return _receipt(facts, "rejection", f"LDOR return not accepted {facts.reference}", lines, (), to, head)


def findings_csv(findings: list[Finding] | tuple[Finding, ...], values: bool = False) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(["Severity", "Row", "Column", "Rule", "Message"] + (["Value"] if values else []))
    for f in findings:
        writer.writerow([f.severity, f.row or "", guard(f.column, Medium.LINE), f.rule, guard(f.message, Medium.CSV)]
                        + ([guard(f.value, Medium.CSV)] if values else []))
    return buffer.getvalue().encode("utf-8-sig")


def _heading(facts: FileFacts, provider: Provider) -> list[str]:
    return [
        f"Gateway reference: {facts.reference}",
        f"Provider: {provider.name} (UKPRN {provider.ukprn})",
        f"Received: {facts.received:%d/%m/%Y %H:%M} UTC",
        f"File: {facts.describe()}",
    ]


def _table(findings: list[Finding], values: bool = False) -> list[str]:
    columns = [guard(f.column, Medium.LINE) for f in findings]
    width = max([len("Column")] + [len(c) for c in columns])
    rows = [f"  {'Sev':<4}{'Row':>6}  {'Column':<{width}}  {'Rule':<15} Message"]
    for f, column in zip(findings, columns, strict=False):
        row = str(f.row) if f.row else "-"
        shown = f" [you wrote: {_cut(f.value)!r}]" if values and f.value else ""
        rows.append(f"  {f.severity:<4}{row:>6}  {column:<{width}}  {f.rule:<15} {f.message}{shown}")
    return rows


def _cut(value: str, limit: int = 80) -> str:
    """Enough of a value for the data officer to find it; a long cell would swell the receipt."""
    return value if len(value) <= limit else value[:limit - 1] + "\u2026"


def _by_rule(findings: list[Finding]) -> list[str]:
    counts = Counter((f.severity, f.rule) for f in findings)
    ordered = sorted(counts.items(), key=lambda item: ("FEW".find(item[0][0]), -item[1], item[0][1]))
    return [f"  {rule:<15} {severity}  {count:>9,}  {RULES[rule].message if rule in RULES else ''}"
            for (severity, rule), count in ordered]


def _footer(head: Letterhead, sealed: bool = False) -> list[str]:
    privacy = (
        "This receipt is encrypted to your organisation's key, so it shows the values that need fixing."
        if sealed else
        "This receipt holds no personal data: rows are named by their row number in your sheet."
    )
    return [
        "",
        privacy,
        f"The gateway's encryption key (fingerprint {head.fingerprint}) is attached as ldor-gateway-key.asc;",
        "encrypt every return to it.",
    ]


def _wrap(text: str, width: int = 96) -> list[str]:
    return textwrap.wrap(" ".join(text.split()), width, break_long_words=False, break_on_hyphens=False)


def _receipt(
    facts: FileFacts, kind: str, subject: str, lines: list[str], findings: tuple[Finding, ...] | list[Finding],
    to: str, head: Letterhead,
) -> Outgoing:
    """The message, kept under RECEIPT_LIMIT: the findings attached (zipped when large), and when even
    that is too big, only as many of the first findings as fit, with a note saying so."""
    item_id = outgoing_id(facts.reference, kind, to)
    key = ("ldor-gateway-key.asc", "application/pgp-keys", head.public_key.encode())
    attached = len(findings)
    seal = head.seal
    while True:
        table = _findings_file(facts, findings[:attached], seal is not None) if findings else None
        note = _attachment_note(table[0], attached, len(findings)) if table else []
        body = "\n".join(lines + note + _footer(head, sealed=seal is not None)) + "\n"
        attachments = ((table,) if table else ()) + (key,)
        if seal is not None:
            ciphertext = seal(entity(body, attachments))
            raw = compose_encrypted(item_id=item_id, sender=head.sender, to=to, subject=subject, ciphertext=ciphertext,
                                    when=facts.received)
        else:
            raw = compose(item_id=item_id, sender=head.sender, to=to, subject=subject, body=body,
                          attachments=attachments, when=facts.received)
        if len(raw) <= RECEIPT_LIMIT or attached == 0:
            return Outgoing(item_id, Kind.RECEIPT, to, raw)
        # Cut in proportion, with room to spare: the body is small, the file is what grows.
        attached = int(attached * RECEIPT_LIMIT / len(raw) * 0.9)


def _findings_file(facts: FileFacts, findings: tuple[Finding, ...] | list[Finding], values: bool) -> tuple[str, str, bytes]:
    name = f"{facts.reference}-findings.csv"
    table = findings_csv(findings, values=values)
    if len(table) <= ZIP_OVER:
        return name, "text/csv", table
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        # Dated by the message, not by now: a receipt rebuilt after a crash must be the same bytes.
        entry = zipfile.ZipInfo(name, facts.received.timetuple()[:6])
        entry.compress_type = zipfile.ZIP_DEFLATED
        archive.writestr(entry, table)
    return f"{facts.reference}-findings.zip", "application/zip", buffer.getvalue()


def _attachment_note(name: str, attached: int, total: int) -> list[str]:
    if attached < total:
        return ["", *_wrap(
            f"The attached file {name} holds the first {attached:,} of the {total:,} findings: the whole list "
            f"would make this receipt larger than mail can carry ({RECEIPT_LIMIT // (1024 * 1024)} MB). Correct "
            "those rows, then send the return again: the next receipt lists the rest. If nearly every row has the "
            "same finding, check the column it names first: a whole column may be in the wrong format.")]
    if name.endswith(".zip"):
        return ["", *_wrap(f"All {total:,} findings are in the attached file {name}, a zip holding one csv "
                           "(open the zip, then the csv in Excel).")]
    return []
