"""From workbook bytes to a Return: the header block and the table's rows with their sheet row numbers.

The table is found by its headings, not by position: providers move columns, add their own, leave
blank rows and put an instructions sheet first. Values are kept as the sheet holds them; validate.py
judges them.
"""

from __future__ import annotations

import csv
import io
import re
import zipfile
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Mapping

import defusedxml.ElementTree as SafeET
import python_calamine

from .errors import ReadError

# Canonical field -> headings providers use for it (compared after folding case, spaces and punctuation).
HEADINGS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "uln": ("uln", "unique learner number", "learner number"),
    "family_name": ("family name", "surname", "last name", "family names"),
    "first_name": ("first name", "forename", "forenames", "given name", "first names", "given names"),
    "dob": ("dob", "date of birth", "birth date"),
    "address": ("address", "home address"),
    "postcode": ("post code", "postcode", "postal code", "home postcode"),
    "contact_email": ("contact email", "email", "learner email", "contact e mail", "e mail"),
    "phone": ("phone number", "phone", "telephone", "telephone number", "tel", "mobile", "contact number"),
    "joiner": ("joiner", "joiners"),
    "leaver": ("leaver", "leavers"),
    "at_risk": ("at risk of dropping out", "at risk", "at risk of dropping out wobbler"),
    "reason": ("reason", "reason for notification", "notification reason"),
    "destination": ("destination if known", "destination", "destination code"),
})

# Labels of the header block above the table.
HEADER_LABELS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "provider_name": ("provider name",),
    "provider_number": ("provider number", "ukprn", "provider ukprn"),
    "contact_name": ("contact name",),
    "contact_tel": ("tel", "telephone", "contact tel"),
    "contact_email": ("e mail", "email", "contact email"),
})

# A heading row must name at least this many of these to be taken for the table.
_CORE = {"family_name", "first_name", "dob", "postcode", "uln"}
_ENOUGH = 3

_FOLD = re.compile(r"[^a-z0-9]+")


def fold(text: object) -> str:
    """'  Post\nCode ' -> 'post code': the form headings are compared in."""
    return _FOLD.sub(" ", str(text).lower()).strip()


_LOOKUP = {fold(h): field for field, names in HEADINGS.items() for h in names}
_HEADER_LOOKUP = {fold(h): field for field, names in HEADER_LABELS.items() for h in names}


@dataclass(frozen=True)
class Row:
    number: int  # the row number the provider sees in Excel
    values: tuple[object, ...]  # one per heading, in the sheet's order

    def get(self, table: "Return", field: str) -> object:
        column = table.columns.get(field)
        return "" if column is None else self.values[column]


@dataclass(frozen=True)
class Return:
    """What was read from one file: header block, headings, and the data rows."""

    sheet: str
    header: Mapping[str, str]  # provider_name, provider_number, contact_* when present
    headings: tuple[str, ...]  # as the provider wrote them, white space tidied
    columns: Mapping[str, int]  # canonical field -> index into headings
    heading_row: int
    rows: tuple[Row, ...]
    # Cells of the table that hold formulas: (sheet row, column index) -> whether Excel saved a value.
    formulas: Mapping[tuple[int, int], bool] = field(default_factory=lambda: MappingProxyType({}))

    def heading(self, field: str) -> str:
        """The provider's own heading for a field (for receipts), or the field's usual name."""
        column = self.columns.get(field)
        return self.headings[column] if column is not None else HEADINGS[field][0].title()


def read_return(data: bytes) -> Return:
    """Read an xlsx/xlsm/xls/ods workbook or a csv file held in memory."""
    if not data:
        raise ReadError("empty file", "The attached file was empty. Please attach the completed return and send it again.")
    if data[:4] == b"PK\x03\x04" or data[:8] == b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1":
        sheets = _workbook_sheets(data)
    else:
        sheets = [("csv", _csv_rows(data))]
    for name, rows in sheets:
        found = _table(name, rows)
        if found:
            if data[:4] == b"PK\x03\x04":
                found = replace(found, formulas=MappingProxyType(formula_cells(data, name, found.heading_row)))
            return found
    raise ReadError(
        "no table of young people found",
        "We could not find the table of young people in your file. It needs a heading row naming at "
        "least Family Name, First Name, DOB and Post Code (the LDOR template has them). Please use the "
        "template, or add those headings above your data, and send the file again.",
    )


_MAIN = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"
_RELS = "{http://schemas.openxmlformats.org/package/2006/relationships}"
_DOC_RELS = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}"
_CELL = re.compile(r"^([A-Z]+)([0-9]+)$")


def formula_cells(data: bytes, sheet: str, below: int) -> dict[tuple[int, int], bool]:
    """Formula cells of an xlsx sheet under row `below`: calamine reads only the values Excel saved,
    so the gateway must know where a value came from a formula, and where none was saved."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as book:
            workbook = SafeET.fromstring(book.read("xl/workbook.xml"))
            relations = SafeET.fromstring(book.read("xl/_rels/workbook.xml.rels"))
            ids = {s.get("name"): s.get(f"{_DOC_RELS}id") for s in workbook.iter(f"{_MAIN}sheet")}
            targets = {r.get("Id"): r.get("Target", "") for r in relations.iter(f"{_RELS}Relationship")}
            target = targets.get(ids.get(sheet, ""), "")
            path = target.lstrip("/") if target.startswith("/") else f"xl/{target}"
            found: dict[tuple[int, int], bool] = {}
            with book.open(path) as stream:
                for _, element in SafeET.iterparse(stream):
                    if element.tag != f"{_MAIN}c":
                        continue
                    formula = element.find(f"{_MAIN}f")
                    reference = _CELL.match(element.get("r", ""))
                    if formula is not None and reference and int(reference.group(2)) > below:
                        value = element.find(f"{_MAIN}v")
                        column = _column_index(reference.group(1))
                        found[(int(reference.group(2)), column)] = value is not None and bool(value.text)
                    element.clear()
            return found
    except (KeyError, zipfile.BadZipFile, SafeET.ParseError, ValueError):
        return {}  # not an xlsx laid out as Excel writes them (ods, xls): no formula check


def _column_index(letters: str) -> int:
    index = 0
    for letter in letters:
        index = index * 26 + ord(letter) - 64
    return index - 1


def _workbook_sheets(data: bytes) -> list[tuple[str, list[list[object]]]]:
    try:
        book = python_calamine.CalamineWorkbook.from_filelike(io.BytesIO(data))
        return [(name, book.get_sheet_by_name(name).to_python(skip_empty_area=False)) for name in book.sheet_names]
    except Exception as error:  # calamine raises several unrelated types for damaged files
        raise ReadError(
            f"workbook unreadable ({type(error).__name__})",
            "The spreadsheet inside your file could not be opened: it may be damaged, password protected "
            "in a way we were not told of, or not a spreadsheet. Please save it again from Excel as .xlsx "
            "and send it again.",
        ) from None


def _csv_rows(data: bytes) -> list[list[object]]:
    for encoding in ("utf-8-sig", "cp1252"):
        try:
            text = data.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    else:
        raise ReadError("not text", "The file is neither a spreadsheet nor a csv file we can read. Please send the return as .xlsx.")
    if "\x00" in text:
        raise ReadError("binary file", "The file is neither a spreadsheet nor a csv file we can read. Please send the return as .xlsx.")
    try:
        dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    return [list(row) for row in csv.reader(io.StringIO(text), dialect)]


def _table(sheet: str, rows: list[list[object]]) -> Return | None:
    for index, cells in enumerate(rows):
        columns = _match_headings(cells)
        if len(_CORE & columns.keys()) < _ENOUGH:
            continue
        width = max(i for i, cell in enumerate(cells) if _text(cell)) + 1
        headings = tuple(_tidy(cells[i]) if i < len(cells) else "" for i in range(width))
        data = []
        for offset, raw in enumerate(rows[index + 1:], start=index + 2):
            values = tuple(raw[i] if i < len(raw) else "" for i in range(width))
            if any(_text(v) for v in values):
                data.append(Row(offset, tuple(_clean(v) for v in values)))
        header = _header_block(rows[:index])
        return Return(sheet, MappingProxyType(header), headings, MappingProxyType(columns), index + 1, tuple(data))
    return None


def _match_headings(cells: list[object]) -> dict[str, int]:
    columns: dict[str, int] = {}
    for i, cell in enumerate(cells):
        field = _LOOKUP.get(fold(cell)) if isinstance(cell, str) else None
        if field and field not in columns:
            columns[field] = i
    return columns


def _header_block(rows: list[list[object]]) -> dict[str, str]:
    header: dict[str, str] = {}
    for cells in rows:
        for i, cell in enumerate(cells):
            field = _HEADER_LOOKUP.get(fold(cell)) if isinstance(cell, str) else None
            if not field or field in header:
                continue
            value = next((c for c in cells[i + 1:] if _text(c)), "")
            header[field] = _tidy(_clean(value))
            break
    return header


def _text(value: object) -> str:
    return "" if value is None else str(value).strip()


def _tidy(value: object) -> str:
    return " ".join(str(value).split())


def _clean(value: object) -> object:
    """Whole numbers stored as floats (ULNs, UKPRNs typed as numbers) back to ints; text stripped."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return int(value)
    if isinstance(value, str):
        return value.strip()
    return value
