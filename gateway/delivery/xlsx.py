"""One sheet of rows -> the bytes of an xlsx workbook, written directly as SpreadsheetML, in memory.

A package is one plain sheet: a bold heading row, frozen; text, numbers and dates; columns as wide as
their contents. Writing that XML directly takes a fraction of the time a general spreadsheet library
needs per cell (a 100,000-row return is two million cells), and nothing reaches the disk. Every text
is written as a shared string, never a formula, link or number; text Excel cannot hold is guarded.
"""

from __future__ import annotations

import io
import math
import re
import zipfile
from collections.abc import Iterable, Sequence
from datetime import date, datetime, time, timedelta

from ..returns.read import column_letters
from .guard import Medium, guard

WIDEST = 60  # characters: a column is as wide as its heading and cells, up to this
CELL_LIMIT = 32_767  # characters Excel keeps in one cell

# Cell styles, by their place in styles.xml's cellXfs.
_BOLD, _DATE, _TIME, _DURATION = 1, 2, 3, 4

_MAIN = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
_RELATIONSHIPS = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
_PACKAGE_RELATIONSHIPS = "http://schemas.openxmlformats.org/package/2006/relationships"
_HEAD = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'

_CONTENT_TYPES = _HEAD + (
    '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
    '<Default Extension="xml" ContentType="application/xml"/>'
    '<Override PartName="/xl/workbook.xml" '
    'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
    '<Override PartName="/xl/worksheets/sheet1.xml" '
    'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>'
    '<Override PartName="/xl/styles.xml" '
    'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.styles+xml"/>'
    '<Override PartName="/xl/sharedStrings.xml" '
    'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"/>'
    "</Types>"
)
_ROOT_RELATIONSHIPS = _HEAD + (
    f'<Relationships xmlns="{_PACKAGE_RELATIONSHIPS}">'
    f'<Relationship Id="rId1" Type="{_RELATIONSHIPS}/officeDocument" Target="xl/workbook.xml"/>'
    "</Relationships>"
)
_WORKBOOK_RELATIONSHIPS = _HEAD + (
    f'<Relationships xmlns="{_PACKAGE_RELATIONSHIPS}">'
    f'<Relationship Id="rId1" Type="{_RELATIONSHIPS}/worksheet" Target="worksheets/sheet1.xml"/>'
    f'<Relationship Id="rId2" Type="{_RELATIONSHIPS}/styles" Target="styles.xml"/>'
    f'<Relationship Id="rId3" Type="{_RELATIONSHIPS}/sharedStrings" Target="sharedStrings.xml"/>'
    "</Relationships>"
)
_FONT = '<sz val="11"/><name val="Calibri"/><family val="2"/>'
_STYLES = _HEAD + (
    f'<styleSheet xmlns="{_MAIN}">'
    '<numFmts count="3"><numFmt numFmtId="164" formatCode="DD/MM/YYYY"/>'
    '<numFmt numFmtId="165" formatCode="hh:mm:ss"/><numFmt numFmtId="166" formatCode="[hh]:mm:ss"/></numFmts>'
    f'<fonts count="2"><font>{_FONT}</font><font><b/>{_FONT}</font></fonts>'
    '<fills count="2"><fill><patternFill patternType="none"/></fill><fill><patternFill patternType="gray125"/></fill></fills>'
    '<borders count="1"><border><left/><right/><top/><bottom/><diagonal/></border></borders>'
    '<cellStyleXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0"/></cellStyleXfs>'
    '<cellXfs count="5"><xf numFmtId="0" fontId="0" fillId="0" borderId="0" xfId="0"/>'
    '<xf numFmtId="0" fontId="1" fillId="0" borderId="0" xfId="0" applyFont="1"/>'
    '<xf numFmtId="164" fontId="0" fillId="0" borderId="0" xfId="0" applyNumberFormat="1"/>'
    '<xf numFmtId="165" fontId="0" fillId="0" borderId="0" xfId="0" applyNumberFormat="1"/>'
    '<xf numFmtId="166" fontId="0" fillId="0" borderId="0" xfId="0" applyNumberFormat="1"/></cellXfs>'
    '<cellStyles count="1"><cellStyle name="Normal" xfId="0" builtinId="0"/></cellStyles>'
    "</styleSheet>"
)

# Whatever makes a text need more than a lookup: what the guard changes, what XML escapes, Excel's own
# _xHHHH_ escapes (a literal "_x0041_" would show as "A"), and a carriage return.
_ATTENTION = re.compile(r"[\x00-\x1f&<>\ufffe\uffff]|_x[0-9A-Fa-f]{4}_")
_EXCEL_ESCAPE = re.compile(r"_x[0-9A-Fa-f]{4}_")
_SPACE_AT_ENDS = re.compile(r"^\s|\s$")
_EPOCH = datetime(1899, 12, 31)


def workbook(title: str, headings: Sequence[str], rows: Iterable[Sequence[object]]) -> bytes:
    """A workbook of one sheet named `title`: `headings` in bold (frozen), then `rows`. A cell may be text,
    a number, a bool, a date, datetime, time or timedelta (shown day/month/year, or as a time), or None or
    "" for an empty cell; anything else is written as its text."""
    strings = _Strings()
    letters = [column_letters(number) for number in range(1, len(headings) + 1)]
    widths = [len(heading) for heading in headings]
    parts = ["<row r=\"1\">"]
    for column, heading in enumerate(headings):
        parts.append(f'<c r="{letters[column]}1" s="{_BOLD}" t="s"><v>{strings.add(heading)[0]}</v></c>')
    parts.append("</row>")
    last = 1
    known, add, append = strings.known, strings.add, parts.append  # the loop below runs once a cell
    for last, values in enumerate(rows, start=2):
        append(f'<row r="{last}">')
        for column, value in enumerate(values):
            if value is None or value == "":
                continue
            cell = None if type(value) is str else _not_text(value)
            if cell is None:
                index, width = known.get(value) or add(str(value))
                append(f'<c r="{letters[column]}{last}" t="s"><v>{index}</v></c>')
            else:
                append(f'<c r="{letters[column]}{last}"{cell[0]}</c>')
                width = cell[1]
            if width > widths[column]:
                widths[column] = width
        append("</row>")
    corner = f"{letters[-1]}{last}" if letters else "A1"
    columns = "".join(f'<col min="{n}" max="{n}" width="{_width(min(w, WIDEST) + 2)}" customWidth="1"/>'
                      for n, w in enumerate(widths, start=1))
    sheet = (
        f'{_HEAD}<worksheet xmlns="{_MAIN}" xmlns:r="{_RELATIONSHIPS}"><dimension ref="A1:{corner}"/>'
        '<sheetViews><sheetView tabSelected="1" workbookViewId="0">'
        '<pane ySplit="1" topLeftCell="A2" activePane="bottomLeft" state="frozen"/>'
        '<selection pane="bottomLeft" activeCell="A2" sqref="A2"/></sheetView></sheetViews>'
        f'<sheetFormatPr defaultRowHeight="15"/>{f"<cols>{columns}</cols>" if columns else ""}<sheetData>'
    )
    name = _escape(guard(title, Medium.SHEET)).replace('"', "&quot;")
    book = (f'{_HEAD}<workbook xmlns="{_MAIN}" xmlns:r="{_RELATIONSHIPS}"><bookViews><workbookView/></bookViews>'
            f'<sheets><sheet name="{name}" sheetId="1" r:id="rId1"/></sheets></workbook>')
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        _put(archive, "[Content_Types].xml", _CONTENT_TYPES.encode())
        _put(archive, "_rels/.rels", _ROOT_RELATIONSHIPS.encode())
        _put(archive, "xl/workbook.xml", book.encode())
        _put(archive, "xl/_rels/workbook.xml.rels", _WORKBOOK_RELATIONSHIPS.encode())
        _put(archive, "xl/styles.xml", _STYLES.encode())
        _put(archive, "xl/sharedStrings.xml", strings.xml())
        _put(archive, "xl/worksheets/sheet1.xml", (sheet + "".join(parts) + "</sheetData></worksheet>").encode())
    return buffer.getvalue()


class _Strings:
    """The shared strings table: each distinct text once, guarded and escaped the first time it is met."""

    def __init__(self) -> None:
        self.known: dict[object, tuple[int, int]] = {}  # text as given -> (its place, how wide it shows)
        self._items: list[str] = []

    def add(self, text: str) -> tuple[int, int]:
        found = self.known.get(text)
        if found is None:
            shown = guard(text, Medium.XLSX)[:CELL_LIMIT] if _ATTENTION.search(text) else text[:CELL_LIMIT]
            width = max(len(line) for line in shown.split("\n")) if "\n" in shown else len(shown)
            found = self.known[text] = (len(self._items), width)
            self._items.append(_shared(shown))
        return found

    def xml(self) -> bytes:
        count = len(self._items)
        return (f'{_HEAD}<sst xmlns="{_MAIN}" count="{count}" uniqueCount="{count}">'
                + "".join(self._items) + "</sst>").encode()


def _shared(text: str) -> str:
    if _ATTENTION.search(text):
        text = _EXCEL_ESCAPE.sub(lambda m: "_x005F" + m.group(0), text)
        text = _escape(text).replace("\r", "&#13;")  # as a reference, or XML would read it as a line break
    space = ' xml:space="preserve"' if _SPACE_AT_ENDS.search(text) else ""
    return f"<si><t{space}>{text}</t></si>"


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _not_text(value: object) -> tuple[str, int] | None:
    """A number, bool, date or time: the rest of its cell's tag after the reference, and how wide it shows.
    None for anything else, which is written as its text."""
    if isinstance(value, bool):
        return f' t="b"><v>{int(value)}</v>', len(str(value))
    if isinstance(value, int):
        return f"><v>{value}</v>", len(str(value))
    if isinstance(value, float):
        return (f"><v>{value!r}</v>" if math.isfinite(value) else ' t="e"><v>#NUM!</v>'), len(str(value))
    if isinstance(value, (date, time, timedelta)):
        serial, style = _serial(value)
        return f' s="{style}"><v>{serial!r}</v>', 10
    return None


def _serial(value: date | time | timedelta) -> tuple[float | int, int]:
    """Excel's number for a date or time, and its style. Excel counts days from 31 December 1899 and takes
    1900 for a leap year, so from March 1900 on its day numbers are one more than the calendar's."""
    if isinstance(value, timedelta):
        return value.total_seconds() / 86400, _DURATION
    if isinstance(value, time):
        return (value.hour * 3600 + value.minute * 60 + value.second + value.microsecond / 1e6) / 86400, _TIME
    moment = value.replace(tzinfo=None) if isinstance(value, datetime) else datetime(value.year, value.month, value.day)
    delta = moment - _EPOCH
    days = delta.days + (1 if delta.days >= 60 else 0)
    fraction = (delta.seconds + delta.microseconds / 1e6) / 86400
    return (days + fraction if fraction else days), _DATE


def _width(characters: int) -> float:
    """A column width as Excel stores it: characters of the widest digit (7 pixels in the default font) plus
    5 pixels of padding, in 256ths of a character."""
    return int((characters * 7 + 5) / 7 * 256) / 256


def _put(archive: zipfile.ZipFile, name: str, data: bytes) -> None:
    # A fixed time: the same rows make the same workbook.
    archive.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data, zipfile.ZIP_DEFLATED, 1)
