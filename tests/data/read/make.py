"""Build the odd and hostile files read.py must answer well, with the answer each must get.

Run `python tests/data/read/make.py` to rewrite the files beside it and expected.json. Output is the same
on every run. Each workbook is a small valid return (a header block, a heading row, three people) whose
sheet XML is then edited the way a careless exporter or an attacker would; nothing here imports the gateway.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
MAIN = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
HEADINGS = ["ULN", "Family Name", "First Name", "DOB", "Address", "Post Code", "Leaver"]
PEOPLE = [
    ["", "Adeyemi", "Aisha", "25/05/2008", "1 Upper Street", "N1 1AA", "X"],
    ["", "Brennan", "Ben", "02/03/2008", "2 Holloway Road", "N7 6PA", "X"],
    ["", "Chowdhury", "Chloe", "14/11/2007", "3 Mare Street", "E8 1HE", "X"],
]
STALE = [["", "Stale", "Old", "01/01/2007", "9 Old Road", "N1 1AA", "X"]]


def _letters(number: int) -> str:
    letters = ""
    while number:
        number, rest = divmod(number - 1, 26)
        letters = chr(65 + rest) + letters
    return letters


def _cell(row: int, column: int, text: str) -> str:
    return f'<c r="{_letters(column)}{row}" t="inlineStr"><is><t>{text}</t></is></c>'


def sheet_rows(people: list[list[str]]) -> list[str]:
    """The rows of a return sheet: header block, a blank row, headings on row 4, then the people."""
    block = [["Provider Name", "Example College"], ["Provider Number", "10001234"]]
    rows = block + [[]] + [HEADINGS] + people
    return [f'<row r="{r}">' + "".join(_cell(r, c, v) for c, v in enumerate(cells, 1) if v) + "</row>"
            for r, cells in enumerate(rows, 1) if cells]


def sheet(rows: list[str], dimension: str | None = "A1:G7", before: str = "") -> str:
    dim = f'<dimension ref="{dimension}"/>' if dimension else ""
    return (f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<worksheet xmlns="{MAIN}">{dim}{before}'
            f'<sheetData>{"".join(rows)}</sheetData></worksheet>')


def workbook(*sheets: tuple[str, str, str]) -> bytes:
    """(name, state, sheet XML) per sheet -> xlsx bytes, fixed timestamps so the output never changes."""
    rels = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
    parts = {
        "[Content_Types].xml": (
            '<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
            '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
            '<Default Extension="xml" ContentType="application/xml"/>'
            '<Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
            + "".join(f'<Override PartName="/xl/worksheets/sheet{i}.xml" ContentType="application/vnd.openxmlformats-officedocument.'
                      'spreadsheetml.worksheet+xml"/>' for i in range(1, len(sheets) + 1)) + "</Types>"),
        "_rels/.rels": (
            '<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            f'<Relationship Id="rId1" Type="{rels}/officeDocument" Target="xl/workbook.xml"/></Relationships>'),
        "xl/workbook.xml": (
            f'<?xml version="1.0" encoding="UTF-8"?><workbook xmlns="{MAIN}" xmlns:r="{rels}"><sheets>'
            + "".join(f'<sheet name="{name}" sheetId="{i}" state="{state}" r:id="rId{i}"/>'
                      for i, (name, state, _) in enumerate(sheets, 1)) + "</sheets></workbook>"),
        "xl/_rels/workbook.xml.rels": (
            '<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            + "".join(f'<Relationship Id="rId{i}" Type="{rels}/worksheet" Target="worksheets/sheet{i}.xml"/>'
                      for i in range(1, len(sheets) + 1)) + "</Relationships>"),
    }
    for i, (_, _, xml) in enumerate(sheets, 1):
        parts[f"xl/worksheets/sheet{i}.xml"] = xml
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as book:
        for name, text in parts.items():
            book.writestr(zipfile.ZipInfo(name, (2025, 1, 1, 0, 0, 0)), text, zipfile.ZIP_DEFLATED)
    return out.getvalue()


def one_sheet(rows: list[str], **kwargs: object) -> bytes:
    return workbook(("Return", "visible", sheet(rows, **kwargs)))


FAR = '<row r="{row}"><c r="{column}{row}" t="inlineStr"><is><t>x</t></is></c></row>'
GOOD = sheet_rows(PEOPLE)
REFUSED_SIZE = "a return may use at most 200,000 rows and 200 columns"

# name -> (bytes, expected): "refused" holds a phrase of the advice; otherwise rows read and problems.
CASES: dict[str, tuple[bytes, dict]] = {
    # The 1.9 KB workbook: calamine would size 16384 x 1048576 cells and abort the process.
    "cell_at_xfd1048576.xlsx": (one_sheet(GOOD + [FAR.format(row=1048576, column="XFD")]),
                                {"refused": REFUSED_SIZE, "also": "column XFD"}),
    # Read at 7.5 GB before: inside Excel's sheet, far outside a return.
    "cell_at_xfd12000.xlsx": (one_sheet(GOOD + [FAR.format(row=12000, column="XFD")]), {"refused": "row 12,000 and column XFD"}),
    # The same cell, the <dimension> claiming only the table: the cells, not the claim, decide.
    "dimension_lies.xlsx": (one_sheet(GOOD + [FAR.format(row=12000, column="XFD")], dimension="A1:G7"), {"refused": REFUSED_SIZE}),
    # No <dimension> at all.
    "no_dimension.xlsx": (one_sheet(GOOD + [FAR.format(row=300000, column="A")], dimension=None), {"refused": "row 300,000"}),
    # A <dimension> claiming the whole sheet: refused on the claim, before a cell is read.
    "dimension_whole_sheet.xlsx": (one_sheet(GOOD, dimension="A1:XFD1048576"), {"refused": REFUSED_SIZE}),
    # Cells without r take the next column: 300 of them pass column GR (200) at GS, where reading stops.
    "cells_without_positions.xlsx": (one_sheet(GOOD + ['<row r="9">' + '<c t="inlineStr"><is><t>x</t></is></c>' * 300 + "</row>"]),
                                     {"refused": "column GS"}),
    # A cell with two r attributes: calamine keeps the last one. Not well-formed XML, so unreadable.
    "two_positions.xlsx": (one_sheet(GOOD + ['<row r="9"><c r="A9" r="XFD1048576" t="inlineStr"><is><t>x</t></is></c></row>']),
                           {"refused": "could not be opened"}),
    # Prefixed elements, as some .NET writers make them.
    "prefixed_cell.xlsx": (one_sheet(GOOD + [f'<row r="9"><x:c xmlns:x="{MAIN}" r="XFD9" t="inlineStr"><x:is><x:t>x</x:t></x:is></x:c></row>']),
                           {"refused": "column XFD"}),
    # Formatted blank cells out to XFD hold no value: the return is read as usual.
    "formatted_blanks_to_xfd.xlsx": (one_sheet(GOOD + ['<row r="9"><c r="XFD9" s="0"/></row>']), {"rows": 3, "problems": []}),
    # A heading in column XFD (past Excel's own limit once the package adds its columns).
    "heading_in_xfd.xlsx": (one_sheet(GOOD[:3] + [GOOD[3].replace("</row>", _cell(4, 16384, "Notes") + "</row>")] + GOOD[4:]),
                            {"refused": "column XFD"}),
    # A hidden first sheet with last month's table: the visible sheet is the return.
    "hidden_stale_sheet.xlsx": (workbook(("Old", "hidden", sheet(sheet_rows(STALE))), ("Return", "visible", sheet(GOOD))),
                                {"rows": 3, "problems": [], "sheet": "Return"}),
    # Only a hidden sheet holds a table: it is read, with a warning.
    "only_hidden_table.xlsx": (workbook(("Notes", "visible", sheet(['<row r="1">' + _cell(1, 1, "Notes") + "</row>"])),
                                        ("Return", "hidden", sheet(GOOD))),
                               {"rows": 3, "problems": [["File_03", None]], "sheet": "Return"}),
}


def csv_text(lines: list[list[str]]) -> str:
    return "".join(",".join(cells) + "\r\n" for cells in lines)


ROWS40 = [["", f"Family{i}", f"Given{i}", "01/01/2008", f"{i} High Street", "N1 1AA", "X"] for i in range(40)]


def _stray(rows: list[list[str]], index: int, column: int) -> list[list[str]]:
    changed = [list(r) for r in rows]
    changed[index][column] = '"' + changed[index][column]
    return changed


CSV_CASES: dict[str, tuple[str, dict]] = {
    # The issue's file: a stray quote in row 4's address swallowed the 38 rows after it ("Rows read: 2").
    "stray_quote.csv": (csv_text([HEADINGS] + _stray(ROWS40, 2, 4)), {"rows": 40, "problems": [["Csv_01", 4]]}),
    # Two stray quotes: the second closes the first and the rows between were one field.
    "two_stray_quotes.csv": (csv_text([HEADINGS] + _stray(_stray(ROWS40, 2, 1), 20, 4)),
                             {"rows": 40, "problems": [["Csv_01", 4], ["Csv_01", 22]]}),
    # An address with a line break, quoted as Excel writes it: one row, nothing to report.
    "address_with_line_break.csv": (csv_text([HEADINGS] + ROWS40[:2]) + ',Family2,Given2,01/01/2008,"2 High Street\r\nLondon",N1 1AA,X\r\n',
                                    {"rows": 3, "problems": []}),
    # Rows padded with empty fields far past the column limit by an export: trailing empty columns do not count.
    "padded_far_right.csv": ("".join(",".join(r) + "," * 1000 + "\r\n" for r in [HEADINGS] + ROWS40[:3]), {"rows": 3, "problems": []}),
    # A heading 300 columns to the right.
    "heading_far_right.csv": (csv_text([HEADINGS + [""] * 300 + ["Notes"]] + ROWS40[:3]), {"refused": "column KV"}),
}


def main() -> None:
    expected = {}
    for name, (data, outcome) in CASES.items():
        (HERE / name).write_bytes(data)
        expected[name] = outcome
    for name, (text, outcome) in CSV_CASES.items():
        (HERE / name).write_bytes(text.encode())
        expected[name] = outcome
    (HERE / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")


if __name__ == "__main__":
    main()
