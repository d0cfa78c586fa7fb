"""From workbook bytes to a Return: the header block and the table's rows with their sheet row numbers.

The table is found by its headings, not by position: providers move columns, add their own, leave
blank rows and put an instructions sheet first. Values are kept as the sheet holds them; validate.py
judges them.
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import posixpath
import re
import zipfile
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType

import defusedxml.ElementTree as SafeET
import python_calamine

from ..errors import Reach, ReadError, TooBig, Unreadable
from . import extent

# Canonical field -> headings providers use for it (compared after folding case, spaces and punctuation).
# The first is the return's own heading: the template writes it, and a receipt names a field by it when
# the provider's file has no such column.
HEADINGS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "uln": ("ULN", "unique learner number", "learner number"),
    "family_name": ("Family Name", "surname", "last name", "family names"),
    "first_name": ("First Name", "forename", "forenames", "given name", "first names", "given names"),
    "dob": ("DOB", "date of birth", "birth date"),
    "address": ("Address", "home address"),
    "postcode": ("Post Code", "postcode", "postal code", "home postcode"),
    "contact_email": ("Contact e-mail", "contact email", "email", "learner email", "e mail"),
    "phone": ("phone number", "phone", "telephone", "telephone number", "tel", "mobile", "contact number"),
    "joiner": ("Joiner", "joiners"),
    "leaver": ("Leaver", "leavers"),
    "at_risk": ("at risk of dropping out", "at risk", "at risk of dropping out wobbler"),
    "reason": ("Reason", "reason for notification", "notification reason"),
    "destination": ("Destination if known", "destination", "destination code"),
})

# Labels of the header block above the table (the first is the template's).
HEADER_LABELS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "provider_name": ("Provider Name",),
    "provider_number": ("Provider Number", "ukprn", "provider ukprn"),
    "contact_name": ("Contact Name",),
    "contact_tel": ("Tel", "telephone", "contact tel"),
    "contact_email": ("e-mail", "email", "contact email"),
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


@dataclass(frozen=True, slots=True)
class Row:
    number: int  # the row number the provider sees in Excel
    values: tuple[object, ...]  # one per heading, in the sheet's order

    def get(self, table: Return, field: str) -> object:
        column = table.columns.get(field)
        return "" if column is None else self.values[column]

    def __reduce__(self) -> tuple[type[Row], tuple[int, tuple[object, ...]]]:
        # Rows travel from the reading child by the hundred thousand: as their two fields, not a dict of them.
        return Row, (self.number, self.values)


@dataclass(frozen=True)
class Problem:
    """Something about the file the provider should hear of, found while reading it; validate.py makes it a finding."""

    rule: str  # a rule of validate.RULES
    row: int | None  # the row it concerns, None for the whole file
    detail: str = ""  # added to the rule's message: where, never a value


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
    problems: tuple[Problem, ...] = ()  # found while reading: a hidden sheet used, a csv row with a stray quote

    def others(self) -> tuple[int, ...]:
        """The columns that are no field of the return (a provider's own notes, tutor groups): not forwarded,
        unless a borough asks for them (boroughs.toml extra_columns)."""
        fields = set(self.columns.values())
        return tuple(i for i in range(len(self.headings)) if i not in fields)

    def other_headings(self) -> tuple[str, ...]:
        return tuple(self.headings[i] for i in self.others())

    def heading(self, field: str) -> str:
        """The provider's own heading for a field (for receipts), or the field's usual name."""
        column = self.columns.get(field)
        return self.headings[column] if column is not None else HEADINGS[field][0]


# Limits on what is read. A return is a list of young people: the largest (a college's enrolment list)
# has about 100,000 rows of a dozen or two columns. Anything far beyond that is a mistake or an attack,
# and a dense read of it would exhaust the machine, so it is refused before it is read.
MAX_SHEETS = 50  # sheets in one workbook
MAX_ROWS = 200_000  # the last row a sheet may use, and the records of a csv file
MAX_COLUMNS = 200  # the last column (GR) a sheet, or a csv row, may use; trailing empty columns do not count
MAX_CELLS = 5_000_000  # rows x columns of the block a sheet's values span
MAX_CELL_ELEMENTS = 2 * MAX_CELLS  # cells of any kind, blank formatted ones included, in one sheet's XML
MAX_CSV_LINES = 4 * MAX_ROWS  # physical lines of a csv file (a quoted field may hold line breaks)
MAX_CSV_REPAIRS = 100  # csv rows with an unclosed quote mark before the file is refused as unreadable

_LIMITS = extent.Limits(MAX_ROWS, MAX_COLUMNS, MAX_CELLS, MAX_CELL_ELEMENTS)


def read_return(data: bytes) -> Return:
    """Read an xlsx/xlsm/xls/ods workbook or a csv file held in memory."""
    if not data:
        raise ReadError("empty file", "The attached file was empty. Please attach the completed return and send it again.")
    if data[:4] == b"PK\x03\x04" or data[:8] == b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1":
        found = _read_workbook(data)
    else:
        rows, problems = _csv_rows(data)
        found = _table("csv", rows)
        if found:
            found = replace(found, problems=tuple(problems))
    if found:
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

_UNREADABLE = (
    "The spreadsheet inside your file could not be opened: it may be damaged, password protected "
    "in a way we were not told of, or not a spreadsheet. Please save it again from Excel as .xlsx "
    "and send it again."
)


def _unreadable(why: str) -> ReadError:
    return ReadError(f"workbook unreadable ({why})", _UNREADABLE)


def _read_workbook(data: bytes) -> Return | None:
    """The table among the sheets, chosen by its data: of the visible sheets, the one whose heading row names
    the most fields and has the most rows under it; hidden sheets only when no visible sheet holds a table.

    An instructions or lookup sheet that names a few headings in a row never wins over a sheet with rows
    under its headings. Each sheet is checked for size before it is read, and read once. Every visible
    sheet is read to choose, so one that cannot be read (past the limits, damaged) refuses the file,
    wherever it stands: it may be the table.
    """
    parts = _xlsx_parts(data)
    try:
        book = python_calamine.CalamineWorkbook.from_filelike(io.BytesIO(data))
        sheets = [(m.name, m.visible == python_calamine.SheetVisibleEnum.Visible) for m in book.sheets_metadata]
    except Exception as error:  # calamine raises several unrelated types for damaged files
        raise _unreadable(type(error).__name__) from None
    if len(sheets) > MAX_SHEETS:
        raise ReadError(f"{len(sheets)} sheets", (
            f"Your workbook has {len(sheets):,} sheets; a return may have at most {MAX_SHEETS}. Please copy the sheet "
            "with the table of young people into a new workbook, save it as .xlsx and send that."))
    position = {name: number for number, (name, _) in enumerate(sheets, start=1)}
    with parts or contextlib.nullcontext() as archive:
        # A hidden sheet is often last month's table kept for reference: the provider sees the visible ones.
        for visible in (True, False):
            best: Return | None = None
            best_formulas: dict[tuple[int, int], bool] = {}
            for name in (n for n, v in sheets if v is visible):
                found, formulas = _read_sheet(book, archive, name, position[name], visible)
                if found is not None and (best is None or _weight(found) > _weight(best)):
                    best, best_formulas = found, formulas
            if best is not None:
                break  # with no people under its headings, a nil return
        else:
            return None
    below = {cell: saved for cell, saved in best_formulas.items() if cell[0] > best.heading_row}
    notes = () if visible else (Problem("File_03", None),)
    return replace(best, formulas=MappingProxyType(below), problems=notes)


def _weight(table: Return) -> tuple[bool, int, int]:
    """How strongly a sheet's table looks like the return: people under its headings at all, then fields
    named, then people; ties go to the first sheet. A person's row fills two or more of the named columns;
    a line of instructions under a row that happens to name headings fills one at most."""
    named = set(table.columns.values())
    people = sum(1 for row in table.rows if sum(1 for i in named if _text(row.values[i])) >= 2)
    return people > 0, len(table.columns), people


def _read_sheet(book: python_calamine.CalamineWorkbook, archive: zipfile.ZipFile | None, name: str, number: int,
                visible: bool) -> tuple[Return | None, dict[tuple[int, int], bool]]:
    """One sheet's table, if it holds one, and its formula cells; held to the limits before its rows are made."""
    formulas: dict[tuple[int, int], bool] = {}
    if archive is not None:
        formulas = _scan_sheet(archive, name, number, visible)
    try:
        sheet = book.get_sheet_by_name(name)
        end = sheet.end  # calamine read xls and ods whole on opening: check before making Python rows
        if end is not None:
            _check_extent(extent.Extent(end[0] + 1, end[1] + 1), number, visible)
        rows = sheet.to_python(skip_empty_area=False)
    except ReadError:
        raise
    except Exception as error:
        raise _unreadable(type(error).__name__) from None
    return _table(name, rows), formulas


def _xlsx_parts(data: bytes) -> zipfile.ZipFile | None:
    """The zip of an xlsx/xlsm, to scan its sheets' XML; None for xls and ods (calamine sizes those itself)."""
    if data[:4] != b"PK\x03\x04":
        return None
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError):
        raise _unreadable("zip") from None
    names = set(archive.namelist())
    if "xl/workbook.bin" in names:
        archive.close()
        raise ReadError("xlsb workbook", (
            "Your workbook is saved as an Excel Binary Workbook (.xlsb), which the gateway does not read. "
            "Please save it as an Excel Workbook (.xlsx) and send it again."))
    if "xl/workbook.xml" not in names:
        archive.close()
        return None
    try:
        _check_shared_strings(archive)
    except ReadError:
        archive.close()
        raise
    return archive


_SST_UNIQUE = re.compile(rb"<(?:[A-Za-z_][\w.\-]*:)?sst\b[^>]*?\suniqueCount\s*=\s*[\"']\s*([0-9]+)")


def _check_shared_strings(archive: zipfile.ZipFile) -> None:
    """calamine reserves room for every string the shared-strings table says it holds (`uniqueCount`)
    before reading one, as it opens the workbook: a table claiming a billion aborts the process. Each
    string takes at least `<si></si>` (9 bytes) of the part, and no return has more than MAX_CELL_ELEMENTS."""
    for info in archive.infolist():
        if not info.filename.lower().endswith("sharedstrings.xml"):
            continue
        try:
            with archive.open(info) as part:
                start = part.read(64 * 1024)
        except (zipfile.BadZipFile, ValueError, EOFError, OSError, RuntimeError):
            raise _unreadable("shared strings") from None
        claimed = _SST_UNIQUE.search(start)
        if claimed and int(claimed.group(1)) > min(MAX_CELL_ELEMENTS, info.file_size // 9 + 1):
            raise ReadError("shared strings table claims more strings than it holds", _UNREADABLE)


def _scan_sheet(archive: zipfile.ZipFile, name: str, number: int, visible: bool) -> dict[tuple[int, int], bool]:
    """Hold the sheet to the limits from its own XML; its formula cells, (sheet row, column index) -> value saved."""
    try:
        path = _sheet_paths(archive)[name]
        found = extent.scan(archive, path, _LIMITS)
    except TooBig as error:
        if error.crowded:
            raise ReadError(f"sheet {number}: too many cells", (
                f"{_sheet_words(number, visible)} holds more than {MAX_CELL_ELEMENTS:,} cells, far more than a return needs. "
                "Please copy the table of young people into a new workbook, save it as .xlsx and send that.")) from None
        _check_extent(error.extent, number, visible)
        raise  # pragma: no cover - TooBig is only raised past a limit
    except (KeyError, Unreadable, zipfile.BadZipFile, SafeET.ParseError, ValueError, EOFError, OSError):
        raise _unreadable("sheet xml") from None
    _check_extent(found, number, visible)
    return found.formulas


def _sheet_paths(archive: zipfile.ZipFile) -> dict[str, str]:
    workbook = SafeET.fromstring(archive.read("xl/workbook.xml"))
    relations = SafeET.fromstring(archive.read("xl/_rels/workbook.xml.rels"))
    targets = {r.get("Id"): r.get("Target", "") for r in relations.iter(f"{_RELS}Relationship")}
    paths = {}
    for sheet in workbook.iter(f"{_MAIN}sheet"):
        target = targets.get(sheet.get(f"{_DOC_RELS}id"), "")
        paths[sheet.get("name")] = target.lstrip("/") if target.startswith("/") else posixpath.normpath(f"xl/{target}")
    return paths


def _check_extent(found: Reach, number: int, visible: bool) -> None:
    rows, columns = found.rows, found.columns
    if not _LIMITS.exceeded(rows, columns):
        return
    where = f"row {rows:,} and column {column_letters(columns)}"
    raise ReadError(f"sheet {number} reaches row {rows} column {columns}", (
        f"{_sheet_words(number, visible)} reaches {where}; a return may use at most {MAX_ROWS:,} rows and "
        f"{MAX_COLUMNS} columns (up to column {column_letters(MAX_COLUMNS)}), {MAX_CELLS:,} cells in all. Usually "
        "something was typed or pasted far below or to the right of the table: please delete the rows below and "
        "the columns to the right of your table (or copy the table into a new workbook), save it as .xlsx and send "
        "it again. If your return really has more rows than that, split it into parts and send each."))


def _sheet_words(number: int, visible: bool) -> str:
    # By position, not by name: a sheet's name may be a person's.
    return f"Sheet {number} of your workbook" + ("" if visible else " (a hidden sheet)")


def column_letters(number: int) -> str:
    """1 -> 'A', 16384 -> 'XFD'."""
    letters = ""
    while number > 0:
        number, rest = divmod(number - 1, 26)
        letters = chr(65 + rest) + letters
    return letters


def _csv_rows(data: bytes) -> tuple[list[list[str]], list[Problem]]:
    """The csv file's records, numbered as Excel numbers them, and the rows it had to repair.

    A quote mark opening a field and never closing it makes a csv reader run on through the line breaks,
    swallowing the rows after it into one field. Such a record is caught by its shape (a field holding
    whole rows, or a record of another width than the file's), and its first line is read again on its
    own, the quote mark taken as text; the reading starts afresh on the next line, so no row is lost.
    """
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
    if text.count("\n") + text.count("\r") > 2 * MAX_CSV_LINES:  # cheap first look, \r\n counted twice
        raise _csv_too_long()
    try:
        delimiter = csv.Sniffer().sniff(text[:4096], delimiters=",;\t").delimiter
    except csv.Error:
        delimiter = ","
    # Only the delimiter is taken from the sniffer: its other guesses (a quote of ', no doubled quotes)
    # come from a few lines and would let a stray quote mark run on unseen. Quoting is Excel's.
    dialect = _excel_dialect(delimiter)
    # Lines end at \r, \n or \r\n only, as the csv module sees them (str.splitlines knows more).
    lines = [_trim(line, delimiter) for line in _LINES.findall(text)]
    if len(lines) > MAX_CSV_LINES:
        raise _csv_too_long()
    if any(line.count(delimiter) >= 10 * MAX_COLUMNS for line in lines):
        raise _csv_too_wide()
    records, spans, complete = _parse(lines, 0, dialect)
    if complete and all(span == 1 for span in spans):
        return records, []  # the usual file: nothing spans lines, nothing to doubt
    widths = Counter(len(fields) for fields, span in zip(records, spans, strict=False) if span == 1 and len(fields) > 1)
    width = widths.most_common(1)[0][0] if widths else 0  # the usual number of fields in a row
    records = []
    problems: list[Problem] = []
    start = 0
    while start < len(lines):
        found, spans, complete = _parse(lines, start, dialect, width, delimiter)
        records += found
        if len(records) > MAX_ROWS:
            raise _csv_too_long()
        if complete:
            break
        first = start + sum(spans)  # the line where the record that went wrong began
        records.append(_repaired(lines[first], dialect, width, len(records) + 1, first + 1, problems))
        start = first + 1
        if len(problems) > MAX_CSV_REPAIRS:
            raise ReadError("too many unclosed quote marks", (
                f"More than {MAX_CSV_REPAIRS} rows of your csv file have a quote mark (\") that is not closed, so "
                "the file cannot be read reliably. Please save it again from Excel (File > Save As > CSV UTF-8), "
                "or send the return as .xlsx."))
    return records, problems


def _parse(lines: list[str], start: int, dialect: type[csv.Dialect] | csv.Dialect, width: int = 0,
           delimiter: str = ",") -> tuple[list[list[str]], list[int], bool]:
    """Records from line `start` on, the lines each spans, and whether the end of the file was reached.

    Reading stops before a record a stray quote mark made: one the csv module refuses (a quote closed
    and followed by more text, a quote never closed, a field over its 128 KB limit), or, once the
    file's usual `width` is known, one spanning lines whose fields hold whole rows or are too many.
    """
    records: list[list[str]] = []
    spans: list[int] = []
    reader = csv.reader(itertools.islice(lines, start, None), dialect, strict=True)
    read = 0
    try:
        for fields in reader:
            span, read = reader.line_num - read, reader.line_num
            if span > 1 and width and _swallowed(fields, delimiter, width):
                return records, spans, False
            records.append(fields)
            spans.append(span)
            if len(records) > MAX_ROWS:
                raise _csv_too_long()
    except csv.Error:
        return records, spans, False
    return records, spans, True


def _excel_dialect(delimiter: str) -> type[csv.Dialect]:
    return type("_Dialect", (csv.excel,), {"delimiter": delimiter})


_LINES = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+$")
_BREAK = re.compile(r"\r\n|\r|\n")


def _trim(line: str, delimiter: str) -> str:
    """A line padded with empty fields past the column limit, without them (an export of a sheet formatted
    out to column XFD pads every row so); other lines as they are, so that rows keep one width."""
    if line.count(delimiter) < MAX_COLUMNS:
        return line
    body = line.rstrip("\r\n")
    return body.rstrip(delimiter + " ") + line[len(body):]


def _swallowed(fields: list[str], delimiter: str, width: int) -> bool:
    """Whether a record spanning several lines holds rows a stray quote mark ran into, not an address with line breaks."""
    if width >= 3 and len(fields) > width:
        return True
    inner = (part for f in fields for part in _BREAK.split(f)[1:])
    return any(part.count(delimiter) >= max(width - 1, 2) for part in inner)


def _repaired(line: str, dialect: type[csv.Dialect] | csv.Dialect, width: int, row: int, number: int,
              problems: list[Problem]) -> list[str]:
    """One line read alone with its quote marks taken as text; a W finding if that gives a whole row, else E."""
    try:
        fields = next(csv.reader([line.rstrip("\r\n")], dialect, quoting=csv.QUOTE_NONE), [])
    except csv.Error:
        fields = []
    where = f" (line {number} of the file)"
    if fields and (width < 3 or len(fields) == width):
        problems.append(Problem("Csv_01", row, where))
        return list(fields)
    problems.append(Problem("Csv_02", row, where))
    return [""] if not fields else list(fields)


def _csv_too_long() -> ReadError:
    return ReadError("csv too long", (
        f"Your csv file has more than {MAX_ROWS:,} rows (or {MAX_CSV_LINES:,} lines); a return may have at most "
        f"{MAX_ROWS:,}. Please split it into parts and send each."))


def _csv_too_wide() -> ReadError:
    return ReadError("csv too wide", (
        f"A row of your csv file has more than {10 * MAX_COLUMNS:,} fields; a return may use at most {MAX_COLUMNS} "
        "columns. Please delete the columns to the right of your table, save it again and send it, or send it as .xlsx."))


def _table(sheet: str, rows: Sequence[Sequence[object]]) -> Return | None:
    for index, cells in enumerate(rows):
        columns = _match_headings(cells)
        if len(_CORE & columns.keys()) < _ENOUGH:
            continue
        width = max(i for i, cell in enumerate(cells) if _text(cell)) + 1
        if width > MAX_COLUMNS:
            raise ReadError(f"heading in column {width}", (
                f"Your table has a heading in column {column_letters(width)}; a return may use at most {MAX_COLUMNS} "
                f"columns (up to column {column_letters(MAX_COLUMNS)}). Please delete the columns to the right of your "
                "table, save the file and send it again."))
        headings = tuple(_tidy(cells[i]) if i < len(cells) else "" for i in range(width))
        data = []
        for offset, raw in enumerate(rows[index + 1:], start=index + 2):
            cells = raw[:width] if len(raw) >= width else [*raw, *("",) * (width - len(raw))]
            # Once a cell for every row of the table: text, the usual cell, stripped without a call.
            values = tuple([cell.strip() if cell.__class__ is str else _clean(cell) for cell in cells])
            if values.count("") + values.count(None) < width:  # a row with something in it
                data.append(Row(offset, values))
        header = _header_block(rows[:index])
        return Return(sheet, MappingProxyType(header), headings, MappingProxyType(columns), index + 1, tuple(data))
    return None


def _match_headings(cells: Sequence[object]) -> dict[str, int]:
    columns: dict[str, int] = {}
    for i, cell in enumerate(cells):
        field = _LOOKUP.get(fold(cell)) if isinstance(cell, str) else None
        if field and field not in columns:
            columns[field] = i
    return columns


def _header_block(rows: Sequence[Sequence[object]]) -> dict[str, str]:
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
