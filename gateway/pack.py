"""Batch -> workbook or csv -> ciphertext for one recipient's key -> the message that carries it.

The spreadsheet exists only in memory and is encrypted before anything is written. Text that a
spreadsheet program would run as a formula is written so that it stays text.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

import xlsxwriter

from .guard import Medium, guard
from .keys import Keyring
from .mail import Outgoing, compose, outgoing_id
from .read import Return
from .route import Batch
from .rules import Provider

ADDED_HEADINGS = ("Provider Name", "Provider UKPRN", "Date Received", "Notification Reason", "Postcode (checked)")


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
    uln = table.columns.get("uln")
    rows = [
        [*_identifiers(item.row.values, uln), provider.name, provider.ukprn, source.received.date(), item.reason, item.postcode]
        for item in batch.rows
    ]
    return _csv(headings, rows) if fmt == "csv" else _xlsx(headings, rows, batch.borough.name)


def _identifiers(values: tuple[object, ...], uln: int | None) -> list[object]:
    """A ULN typed as a number goes out as text, so no spreadsheet shows it rounded or as 1.23E+09."""
    out = list(values)
    if uln is not None and uln < len(out) and isinstance(out[uln], int) and not isinstance(out[uln], bool):
        out[uln] = str(out[uln])
    return out


_NUMBER_FORMATS = (  # datetime before date: a datetime is also a date
    (datetime, "DD/MM/YYYY"), (date, "DD/MM/YYYY"), (time, "hh:mm:ss"), (timedelta, "[hh]:mm:ss"),
)


def _xlsx(headings: list[str], rows: list[list[object]], title: str) -> bytes:
    # Built in memory only: XlsxWriter's in_memory mode keeps each part of the package in memory where
    # its default (and openpyxl, in every mode) writes each worksheet's XML to a temporary file first,
    # which would put the young people's rows on disk in clear. It is also several times faster.
    buffer = io.BytesIO()
    book = xlsxwriter.Workbook(buffer, {
        "in_memory": True,
        # Text is never turned into a formula, a link or a number: every string is written as a string.
        "strings_to_formulas": False, "strings_to_urls": False, "strings_to_numbers": False,
        "nan_inf_to_errors": True, "remove_timezone": True,
    })
    sheet = book.add_worksheet(guard(title, Medium.SHEET))
    sheet.freeze_panes(1, 0)
    bold = book.add_format({"bold": True})
    formats = {kind: book.add_format({"num_format": pattern}) for kind, pattern in _NUMBER_FORMATS}
    for column, heading in enumerate(headings):
        sheet.write_string(0, column, guard(heading, Medium.XLSX), bold)
    for number, values in enumerate(rows, start=1):
        for column, value in enumerate(values):
            _xlsx_cell(sheet, number, column, value, formats)
    book.close()
    return buffer.getvalue()


def _xlsx_cell(sheet, row: int, column: int, value: object, formats: dict) -> None:
    if value is None:
        return
    if isinstance(value, bool):
        sheet.write_boolean(row, column, value)
    elif isinstance(value, (int, float)):
        sheet.write_number(row, column, value)
    else:
        for kind, _ in _NUMBER_FORMATS:
            if isinstance(value, kind):
                sheet.write_datetime(row, column, value, formats[kind])
                return
        # A string, even when it starts with "=": Excel shows it, never runs it.
        sheet.write_string(row, column, guard(str(value), Medium.XLSX))


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
    if isinstance(value, (date, datetime)):
        return value.strftime("%d/%m/%Y")
    return guard(str(value), Medium.CSV)


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
