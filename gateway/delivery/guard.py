"""The one guard every text a sender wrote passes before the gateway shows it again: in a csv or xlsx
cell, a sheet name, or a line of a receipt or note that travels in clear.
"""

from __future__ import annotations

import re
import unicodedata
from enum import Enum


class Medium(Enum):
    """Where a text is shown, which decides what would make it dangerous there."""

    CSV = "csv"  # a csv cell: Excel runs a cell that starts with = + - @ as a formula
    XLSX = "xlsx"  # an xlsx cell written as a string (never a formula): only what xlsx cannot hold goes
    SHEET = "sheet"  # a worksheet's name
    LINE = "line"  # a short quote in a message a person reads, possibly in clear: one line, inert


# OWASP's list for CSV injection, and the full-width forms that some Excel input methods take as the same.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n", "\uff1d", "\uff0b", "\uff0d", "\uff20")
# Characters an xlsx cannot hold. A vertical tab or form feed is how some exports (FileMaker) write a
# line break inside a cell, so those become line breaks; the rest carry nothing and are dropped.
_LINE_BREAKS = str.maketrans({"\x0b": "\n", "\x0c": "\n"})
_NOT_IN_XLSX = re.compile(r"[\x00-\x08\x0e-\x1f\ufffe\uffff]")
_NOT_IN_SHEET_NAME = re.compile(r"[\[\]:*?/\\\n\r\t]")
SHEET_NAME_LIMIT = 31  # Excel's
LINE_LIMIT = 60  # a column's name in a receipt; longer than any heading the return spec uses


def guard(text: str, medium: Medium) -> str:
    """`text` as it may be shown in `medium`: never run as a formula, never breaking the format."""
    if medium is Medium.CSV:
        # A leading apostrophe makes Excel and LibreOffice show the cell as text (OWASP's advice).
        return "'" + text if text.startswith(_FORMULA_START) else text
    if medium is Medium.XLSX:
        return _NOT_IN_XLSX.sub("", text.translate(_LINE_BREAKS))
    if medium is Medium.SHEET:
        name = _NOT_IN_SHEET_NAME.sub(" ", guard(text, Medium.XLSX)).strip(" '")[:SHEET_NAME_LIMIT].strip(" '")
        # Excel reserves "History" for its own sheet.
        return name if name and name.casefold() != "history" else "Notifications"
    # A line: no control or format characters (a right-to-left override could make a heading read as
    # something else), one line, short; no link a mail program would make clickable; and, as it may be
    # pasted into a spreadsheet, never a formula.
    shown = " ".join("".join(" " if unicodedata.category(c)[0] == "C" else c for c in text).split())
    if len(shown) > LINE_LIMIT:
        shown = shown[:LINE_LIMIT - 1] + "\u2026"
    return guard(shown.replace("://", "[:]//"), Medium.CSV)
