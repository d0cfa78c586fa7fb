"""Batch -> workbook or csv -> ciphertext for one recipient's key -> the message that carries it.

The spreadsheet exists only in memory and is encrypted before anything is written. Text that a
spreadsheet program would run as a formula is written so that it stays text.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from datetime import date, datetime, time

from ..keys import Keyring
from ..ledger import Kind
from ..mail import Outgoing, compose, outgoing_id
from ..reference import authorities, ccis, postcodes
from ..returns.read import Return
from ..returns.route import Batch
from ..returns.validate import Accepted, borough_note, cell_text, parse_date
from ..rules import Borough, Provider
from .guard import Medium, guard
from .xlsx import workbook

# One layout for every package, whatever the provider's file looked like (RETURN-SPEC "Packages"), so a
# borough loads every provider's rows with one import. Its version is in each covering note: change it
# whenever the columns change, so an import script can refuse a layout it does not know.
LAYOUT_VERSION = "LDOR package v2"
HEADINGS = (
    "Gateway Reference", "Source Row", "Provider UKPRN", "Provider Name", "Date Received", "Notification",
    "ULN", "Family Name", "First Name", "DOB", "Address", "Post Code", "Home Authority Code", "Home Authority",
    "Routed By", "Contact e-mail", "Phone", "Destination Code", "Destination", "Data Quality",
)


@dataclass(frozen=True)
class Source:
    """Where a batch came from: the provider, when, the gateway's reference, and the return's rows that no
    authority received, counted by why (examine.Examination.held_back)."""

    provider: Provider
    reference: str
    received: datetime
    held_back: tuple[tuple[str, int], ...] = ()


Part = tuple[Return, Batch, Source]  # one return's rows for a borough: a package holds one, a digest several


def sheet_bytes(table: Return, batch: Batch, source: Source, fmt: str) -> bytes:
    """The borough's rows in the one package layout; the provider's own columns after them only for a
    borough that asked for them (extra_columns)."""
    return parts_sheet(((table, batch, source),), batch.borough, fmt)


def parts_sheet(parts: tuple[Part, ...], borough: Borough, fmt: str) -> bytes:
    """Several returns' rows in one sheet (a digest): each row keeps its own Gateway Reference and Source Row.
    A borough that asked for the providers' own columns gets each heading once, filled where a return had it."""
    own: list[tuple[str, int]] = []  # (heading, its n-th time in a return): two "Notes" columns stay two
    placed = []
    for table, _, _ in parts:
        where = _own_columns(table) if borough.extra_columns else {}
        own += [key for key in where if key not in own]
        placed.append(where)
    rows = [_cells(table, item, source) + [_own(item.row.values, where[key]) if key in where else None for key in own]
            for (table, batch, source), where in zip(parts, placed, strict=False) for item in batch.rows]
    headings = [*HEADINGS, *(heading for heading, _ in own)]
    return _csv(headings, rows) if fmt == "csv" else workbook(borough.name, headings, rows)


def _own_columns(table: Return) -> dict[tuple[str, int], int]:
    seen: dict[str, int] = {}
    keys = {}
    for column in table.others():
        heading = table.headings[column]
        seen[heading] = seen.get(heading, 0) + 1
        keys[heading, seen[heading]] = column
    return keys


def _cells(table: Return, item: Accepted, source: Source) -> list[object]:
    """One row in the layout's columns: text as text (a ULN, code, postcode or phone number keeps its
    leading 0), dates as dates, the sheet row as a number."""
    row, received = item.row, source.received.date()

    def text(field: str) -> str:
        return cell_text(row.get(table, field))

    destination = text("destination")
    code = ccis.code_of(destination)  # "230", "230 Further education" or the label alone: the code
    home = item.home or ""
    return [
        source.reference, row.number, source.provider.ukprn, source.provider.name, received, item.reason,
        text("uln"), text("family_name"), text("first_name"), _date(row.get(table, "dob"), received),
        text("address"), item.postcode if postcodes.is_valid(item.postcode) else text("postcode"),
        home, (authorities.load().name(home) or "") if home else "", item.routed_by,
        text("contact_email"), text("phone"), code or "", ccis.CODES[code] if code else destination,
        "; ".join(borough_note(rule, detail) for rule, detail in item.notes),
    ]


def _date(value: object, today: date) -> date | str:
    """A date cell however the provider gave it (a date cell, "31/01/2008", ISO); else their text as it was."""
    return parse_date(value, today) or cell_text(value)


def _own(values: tuple[object, ...], column: int) -> object:
    return values[column] if column < len(values) else None


def _csv(headings: list[str], rows: list[list[object]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow([guard(h, Medium.CSV) for h in headings])
    for values in rows:
        writer.writerow([_csv_cell(v) for v in values])
    return buffer.getvalue().encode("utf-8-sig")  # the BOM lets Excel read the accents right


def _csv_cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime) and value.time() != time():
        return value.isoformat(sep=" ")
    if isinstance(value, (date, datetime)):
        return value.strftime("%Y-%m-%d")  # ISO: what an import script reads without guessing day or month
    return guard(str(value), Medium.CSV)


def _held_back(held_back: tuple[tuple[str, int], ...]) -> str:
    """The covering note's count of the return's rows no authority received, by why (counts only)."""
    total = sum(count for _, count in held_back)
    if not total:
        return "Rows of this return held back from every authority: none"
    lines = [f"Rows of this return held back from every authority: {total} (the provider has been told which, and why)"]
    lines += [f"  {count} {'row' if count == 1 else 'rows'}: {why}" for why, count in held_back]
    return "\n".join(lines)


def _placed(batches: list[Batch]) -> str:
    """Rows that came as the provider's authority, their home unknown: the covering note must not call them residents."""
    unknown = sum(1 for batch in batches for item in batch.rows
                  if item.home is None and item.routed_by == "provider's authority")
    if not unknown:
        return ""
    return (f",\nexcept {unknown} whose home authority the postcode could not show: sent to you as the authority\n"
            "the provider is in (Routed By: provider's authority)")


def _columns(table: Return, borough: Borough) -> str:
    """What became of the columns the provider added that are not part of the return (a count: their
    headings are the provider's own text)."""
    count = len(table.others())
    if not count:
        return "Columns the provider added that are not part of the return: none"
    if borough.extra_columns:
        return (f"Columns the provider added that are not part of the return: {count}, after Data Quality "
                "(your authority asked for them)")
    return f"Columns the provider added that are not part of the return: {count}, left out"


def csv_text(text: str) -> str:
    """Text for a csv cell that Excel shows and never runs as a formula."""
    return guard(text, Medium.CSV)


def package_message(
    table: Return, batch: Batch, source: Source, recipient: str, keyring: Keyring, fingerprint: str,
    sender: str, administrator: str,
) -> Outgoing:
    """Encrypt this borough's rows to the recipient's key and wrap them in a covering note."""
    borough = batch.borough
    ciphertext = keyring.encrypt(sheet_bytes(table, batch, source, borough.format), fingerprint)
    filename = f"{source.reference}-{borough.code}.{borough.format}.gpg"
    item_id = outgoing_id(source.reference, Kind.PACKAGE, borough.code, recipient)
    counts = batch.by_reason()
    body = f"""Leavers and joiners notifications for {borough.name}

Provider: {source.provider.name} (UKPRN {source.provider.ukprn})
Gateway reference: {source.reference}
Received by the gateway: {source.received:%d/%m/%Y %H:%M} UTC
Notifications: {len(batch.rows)} ({_summary(counts)})
{_held_back(source.held_back)}
{_columns(table, borough)}
{_closing(filename, borough, [batch], fingerprint, administrator, "package")}"""
    raw = compose(
        item_id=item_id, sender=sender, to=recipient,
        subject=f"LDOR notifications for {borough.name} from {source.provider.name} [{source.reference}]",
        body=body, attachments=((filename, "application/octet-stream", ciphertext),),
        when=source.received,
    )
    return Outgoing(item_id, Kind.PACKAGE, recipient, raw, borough.code, len(batch.rows), json.dumps(counts, sort_keys=True))


def digest_message(
    parts: tuple[Part, ...], borough: Borough, recipient: str, keyring: Keyring, fingerprint: str, sender: str,
    administrator: str, item_id: str, reference: str, when: datetime,
) -> Outgoing:
    """One recipient's daily or weekly digest: every waiting return's rows in one sheet of the one layout,
    and a covering note listing the returns it holds (reference, provider, rows, rows held back: counts only)."""
    ciphertext = keyring.encrypt(parts_sheet(parts, borough, borough.format), fingerprint)
    filename = f"{reference}-{borough.code}.{borough.format}.gpg"
    counts = parts_by_reason(parts)
    rows = sum(len(batch.rows) for _, batch, _ in parts)
    returns = []
    for table, batch, source in sorted(parts, key=lambda part: (part[2].received, part[2].reference)):
        returns += [
            f"  {source.reference}  {source.provider.name} (UKPRN {source.provider.ukprn}), received "
            f"{source.received:%d/%m/%Y %H:%M} UTC: {len(batch.rows)} {'row' if len(batch.rows) == 1 else 'rows'}",
            *(f"    {line}" for line in _held_back(source.held_back).splitlines()),
            *(f"    {line}" for line in _columns(table, borough).splitlines()),
        ]
    body = f"""Leavers and joiners notifications for {borough.name}: {borough.delivery} digest

Gateway reference of this digest: {reference}
Made by the gateway: {when:%d/%m/%Y %H:%M} UTC
Notifications: {rows} ({_summary(counts)}), from {len(parts)} {'return' if len(parts) == 1 else 'returns'}

Returns in this digest (a row's Gateway Reference and Source Row say which return and row it came from;
counts of rows held back are of the whole return):
{chr(10).join(returns)}
{_closing(filename, borough, [batch for _, batch, _ in parts], fingerprint, administrator, "digest")}"""
    raw = compose(
        item_id=item_id, sender=sender, to=recipient,
        subject=f"LDOR {borough.delivery} digest for {borough.name}: {rows} notifications from {len(parts)} "
                f"{'return' if len(parts) == 1 else 'returns'} [{reference}]",
        body=body, attachments=((filename, "application/octet-stream", ciphertext),), when=when,
    )
    return Outgoing(item_id, Kind.DIGEST, recipient, raw, borough.code, rows, json.dumps(counts, sort_keys=True))


def parts_by_reason(parts: tuple[Part, ...]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for _, batch, _ in parts:
        for reason, count in batch.by_reason().items():
            counts[reason] = counts.get(reason, 0) + count
    return counts


def _summary(counts: dict[str, int]) -> str:
    return ", ".join(f"{reason} {counts[reason]}" for reason in ("Leaver", "Joiner", "At risk") if reason in counts)


def _closing(filename: str, borough: Borough, batches: list[Batch], fingerprint: str, administrator: str, what: str) -> str:
    """The end of every covering note: the layout, the file, how to open it, whom to ask."""
    return f"""Layout: {LAYOUT_VERSION}
(the same columns, in the same order, for every provider; a row's Data Quality column says what the
gateway noted about it, by the rule names the provider's receipt uses)

The attached file {filename} holds only young people resident in {borough.name}{_placed(batches)}.
It is encrypted to your key {fingerprint}.

To open it: save the attachment, then in Kleopatra choose Decrypt/Verify (or run
gpg --output {filename[:-4]} --decrypt {filename}) and open the {borough.format} file that results.
Please store it only where your authority keeps personal data, and contact the young people
promptly: the law asks for these notifications to be acted on as soon as reasonably practicable.

Questions about this {what}: write to the gateway's administrator, {administrator}, quoting
the gateway reference. (Replies to this address are not read by a person.)
"""
