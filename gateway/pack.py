"""Batch -> workbook or csv -> ciphertext for one recipient's key -> the message that carries it.

The spreadsheet exists only in memory and is encrypted before anything is written. Text that a
spreadsheet program would run as a formula is written so that it stays text.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from datetime import date, datetime

import openpyxl
from openpyxl.cell import WriteOnlyCell
from openpyxl.styles import Font

from .keys import Keyring
from .mail import Outgoing, compose, outgoing_id
from .read import Return
from .route import Batch
from .rules import Provider

ADDED_HEADINGS = ("Provider Name", "Provider UKPRN", "Date Received", "Notification Reason", "Postcode (checked)")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class Source:
    """Where a batch came from: the provider, when, and the gateway's reference."""

    provider: Provider
    reference: str
    received: datetime


def sheet_bytes(table: Return, batch: Batch, source: Source, fmt: str) -> bytes:
    """The borough's rows with the provider's columns plus provider, UKPRN, date received and reason."""
    headings = list(table.headings) + list(ADDED_HEADINGS)
    provider = source.provider
    rows = [
        [*item.row.values, provider.name, provider.ukprn, source.received.date(), item.reason, item.postcode]
        for item in batch.rows
    ]
    return _csv(headings, rows) if fmt == "csv" else _xlsx(headings, rows, batch.borough.name)


# Characters an xlsx cannot hold. A vertical tab or form feed is how some exports (FileMaker) write a
# line break inside a cell, so those become line breaks; the rest carry nothing and are dropped.
_LINE_BREAKS = str.maketrans({"\x0b": "\n", "\x0c": "\n"})
_NOT_IN_XLSX = re.compile(r"[\x00-\x08\x0e-\x1f]")


def _xlsx_text(text: str) -> str:
    return _NOT_IN_XLSX.sub("", text.translate(_LINE_BREAKS))


def _xlsx(headings: list[str], rows: list[list[object]], title: str) -> bytes:
    book = openpyxl.Workbook(write_only=True)
    sheet = book.create_sheet(title[:31] or "Notifications")
    sheet.freeze_panes = "A2"
    bold = Font(bold=True)
    header = []
    for heading in headings:
        cell = WriteOnlyCell(sheet, value=heading)
        cell.font = bold
        cell.data_type = "s"
        header.append(cell)
    sheet.append(header)
    for values in rows:
        cells = []
        for value in values:
            cell = WriteOnlyCell(sheet, value=_xlsx_text(value) if isinstance(value, str) else value)
            if isinstance(value, str):
                cell.data_type = "s"  # a string, even when it starts with "=": Excel shows it, never runs it
            elif isinstance(value, (date, datetime)):
                cell.number_format = "DD/MM/YYYY"
            cells.append(cell)
        sheet.append(cells)
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


def _csv(headings: list[str], rows: list[list[object]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(headings)
    for values in rows:
        writer.writerow([_csv_cell(v) for v in values])
    return buffer.getvalue().encode("utf-8-sig")  # the BOM lets Excel read the accents right


def _csv_cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, (date, datetime)):
        return value.strftime("%d/%m/%Y")
    return csv_text(str(value))


def csv_text(text: str) -> str:
    """Text for a csv cell that Excel shows and never runs as a formula."""
    # OWASP's advice for CSV injection: a leading quote makes Excel treat the cell as text.
    return "'" + text if text.startswith(_FORMULA_START) else text


def package_message(
    table: Return, batch: Batch, source: Source, recipient: str, keyring: Keyring, fingerprint: str,
    sender: str, administrator: str,
) -> Outgoing:
    """Encrypt this borough's rows to the recipient's key and wrap them in a covering note."""
    borough = batch.borough
    ciphertext = keyring.encrypt(sheet_bytes(table, batch, source, borough.format), fingerprint)
    filename = f"{source.reference}-{borough.code}.{borough.format}.gpg"
    item_id = outgoing_id(source.reference, "package", borough.code, recipient)
    counts = batch.by_reason()
    summary = ", ".join(f"{reason} {counts[reason]}" for reason in ("Leaver", "Joiner", "At risk") if reason in counts)
    body = f"""Leavers and joiners notifications for {borough.name}

Provider: {source.provider.name} (UKPRN {source.provider.ukprn})
Gateway reference: {source.reference}
Received by the gateway: {source.received:%d/%m/%Y %H:%M} UTC
Notifications: {len(batch.rows)} ({summary})

The attached file {filename} holds only young people resident in {borough.name}. It is encrypted to
your key {fingerprint}.

To open it: save the attachment, then in Kleopatra choose Decrypt/Verify (or run
gpg --output {filename[:-4]} --decrypt {filename}) and open the {borough.format} file that results.
Please store it only where your authority keeps personal data, and contact the young people
promptly: the law asks for these notifications to be acted on as soon as reasonably practicable.

Questions about this package: write to the gateway's administrator, {administrator}, quoting
the gateway reference. (Replies to this address are not read by a person.)
"""
    raw = compose(
        item_id=item_id, sender=sender, to=recipient,
        subject=f"LDOR notifications for {borough.name} from {source.provider.name} [{source.reference}]",
        body=body, attachments=((filename, "application/octet-stream", ciphertext),),
        when=source.received,
    )
    return Outgoing(item_id, "package", recipient, raw, borough.code, len(batch.rows), json.dumps(counts, sort_keys=True))
