"""How far an xlsx sheet reaches, and which of its cells hold formulas, found from the sheet's XML before any dense read.

calamine sizes one dense block from the first to the last cell holding a value, so a single cell at
XFD1048576 asks it for half a terabyte and the process aborts. This module reads the sheet's XML as a
stream and returns an upper bound of that block, which read.py holds to its limits. The common case
(every cell names its position, no formulas) is answered by regular expressions in C; anything else
(cells without positions, formulas, tags the expressions cannot vouch for) by an exact streamed parse
that counts as calamine counts.
"""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass, field

import defusedxml.ElementTree as SafeET

from ..errors import TooBig, Unreadable

_CHUNK = 4 * 1024 * 1024
# The quick path reads what Excel, LibreOffice and openpyxl write: every cell tag opens `<c r="B12"`,
# unprefixed. Literal-led patterns let the regular expression engine skip ahead in C.
_ANY_CELL = re.compile(rb"<c[\s>/]")
_CELL_ROW = re.compile(rb'<c r="[A-Z]+([0-9]+)"')
_CELL_COLUMN = re.compile(rb'<c r="([A-Z]+)')
_PREFIXED = re.compile(rb":(?:c|f|row)[\s>/]")
# Attribute spellings the quick path does not count: a second `r` in a tag (calamine keeps the last),
# `r` after a tab or line break, spaces around "=". Any of them, even in a cell's text, sends the sheet
# to the exact parse.
_R_ATTRIBUTES = (b" r=", b"\tr=", b"\nr=", b"\rr=")
_ODD_SPELLINGS = (b"r =", b"r\t=", b"r\n=", b"r\r=")
_FORMULA = re.compile(rb"<f[\s>/]")  # a formula's position is worked out by the exact parse
_DIMENSION = re.compile(rb"<(?:[A-Za-z_][\w.\-]*:)?dimension\s[^>]*?(?<=\s)ref\s*=\s*[\"']([^\"']*)[\"']")
_REFERENCE = re.compile(r"^([A-Z]+)([0-9]+)$")


@dataclass(frozen=True)
class Limits:
    rows: int
    columns: int
    cells: int
    cell_tags: int  # cell elements of any kind, blank ones included: bounds the work of reading

    def exceeded(self, rows: int, columns: int) -> bool:
        return rows > self.rows or columns > self.columns or rows * columns > self.cells


@dataclass(frozen=True)
class Extent:
    rows: int  # the last row holding a value (1-based), 0 for an empty sheet
    columns: int  # the last column holding a value (1-based)
    declared: tuple[int, int] | None = None  # what the sheet's <dimension> claims, when it has one
    # (row, column index) -> whether Excel saved a value, for every cell holding a formula
    formulas: dict[tuple[int, int], bool] = field(default_factory=dict)


def column_number(letters: str | bytes) -> int:
    """'A' -> 1, 'XFD' -> 16384."""
    number = 0
    for letter in letters.upper():
        number = number * 26 + (letter if isinstance(letter, int) else ord(letter)) - 64
    return number


def scan(book: zipfile.ZipFile, path: str, limits: Limits) -> Extent:
    """The extent of the sheet at `path`; TooBig as soon as it passes `limits`, Unreadable if damaged.

    The quick path's bound counts blank formatted cells too; a sheet it finds too big, or cannot vouch
    for, is measured again by the exact parse, which leaves them out as calamine does.
    """
    declared = None
    all_cells = last_row = last_column = 0
    quick = True
    with book.open(path) as stream:
        carry = b""
        while True:
            chunk = stream.read(_CHUNK)
            text = carry + chunk
            if chunk:  # keep a tag cut by the chunk's end for the next round
                cut = text.rfind(b"<")
                text, carry = (text[:cut], text[cut:]) if cut >= 0 else (b"", text)
            if declared is None:
                found = _DIMENSION.search(text)
                if found:
                    declared = _declared(found.group(1))
                    if limits.exceeded(*declared):
                        raise TooBig(Extent(*declared, declared))
            cells = len(_ANY_CELL.findall(text))
            all_cells += cells
            if all_cells > limits.cell_tags:
                raise TooBig(Extent(last_row, last_column, declared), crowded=True)
            if quick:
                rows = _CELL_ROW.findall(text)
                positioned = text.count(b'<c r="')
                quick = (
                    cells == positioned == len(rows)
                    and sum(text.count(s) for s in _R_ATTRIBUTES) == positioned + text.count(b'<row r="')
                    and not any(s in text for s in _ODD_SPELLINGS)
                    and not _PREFIXED.search(text)
                    and not _FORMULA.search(text)
                )
                last_row = max(last_row, max(map(int, set(rows)), default=0))
                last_column = max(last_column, max(map(column_number, set(_CELL_COLUMN.findall(text))), default=0))
                quick = quick and not limits.exceeded(last_row, last_column)
            if not chunk:
                break
    if not quick:
        return _exact(book, path, limits, declared)
    return Extent(last_row, last_column, declared)


def _check(limits: Limits, columns: int, rows: int, declared: tuple[int, int] | None) -> None:
    if limits.exceeded(rows, columns):
        raise TooBig(Extent(rows, columns, declared))


def _declared(reference: bytes) -> tuple[int, int]:
    """The bottom-right corner of a <dimension ref="A1:L500"> as (rows, columns)."""
    last = reference.decode("ascii", "replace").split(":")[-1]
    match = _REFERENCE.match(last)
    if not match:
        raise Unreadable("dimension")
    return int(match.group(2)), column_number(match.group(1))


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1].rsplit(":", 1)[-1]


def _exact(book: zipfile.ZipFile, path: str, limits: Limits, declared: tuple[int, int] | None) -> Extent:
    """Walk the sheet as calamine does: a cell without `r` takes the row's and the next column's place."""
    row_index = column_index = 0  # 0-based, as calamine keeps them
    last_row = last_column = 0
    formulas: dict[tuple[int, int], bool] = {}
    cells = 0
    try:
        with book.open(path) as stream:
            for event, element in SafeET.iterparse(stream, events=("start", "end")):
                name = _local(element.tag)
                if name == "row":
                    if event == "start":
                        number = element.get("r")
                        if number is not None:
                            if not number.isdigit() or int(number) < 1:
                                raise Unreadable("row")
                            row_index = int(number) - 1
                    else:
                        row_index += 1
                        column_index = 0
                        element.clear()
                elif name == "c" and event == "end":
                    cells += 1
                    if cells > limits.cell_tags:
                        raise TooBig(Extent(last_row, last_column, declared), crowded=True)
                    reference = element.get("r")
                    if reference is not None:
                        match = _REFERENCE.match(reference)
                        if not match:
                            raise Unreadable("cell")
                        position = (int(match.group(2)) - 1, column_number(match.group(1)) - 1)
                        column_index = position[1]
                    else:
                        position = (row_index, column_index)
                    column_index += 1
                    children = {_local(child.tag): child for child in element}
                    if children:  # a cell with no child holds no value and is outside calamine's block
                        last_row, last_column = max(last_row, position[0] + 1), max(last_column, position[1] + 1)
                        _check(limits, last_column, last_row, declared)
                    if "f" in children:
                        value = children.get("v")
                        formulas[(position[0] + 1, position[1])] = value is not None and bool(value.text)
                    element.clear()
    except SafeET.ParseError:
        raise Unreadable("xml") from None
    return Extent(last_row, last_column, declared, formulas)
