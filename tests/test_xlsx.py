"""delivery/xlsx.py: the package's workbook, written directly, read back by openpyxl and python-calamine."""

from __future__ import annotations

import io
import math
import zipfile
from datetime import date, datetime, time, timedelta

import openpyxl
import python_calamine

from gateway.delivery.xlsx import CELL_LIMIT, workbook

HEADINGS = ["Text", "Number", "When"]


def _sheet(data: bytes):
    return openpyxl.load_workbook(io.BytesIO(data)).worksheets[0]


def _calamine(data: bytes) -> list[list[object]]:
    return python_calamine.CalamineWorkbook.from_filelike(io.BytesIO(data)).get_sheet_by_index(0).to_python()


def test_text_that_xml_or_excel_would_read_otherwise_comes_back_as_written():
    texts = ["a & b < c > d", "_x0041_ stays", "  spaces kept  ", "two\nlines", 'quote " and \' apostrophe',
             "=1+1", "Zoë Ní Bhriain"]
    data = workbook("Notes", HEADINGS, [[text, None, None] for text in texts])
    assert [row[0].value for row in _sheet(data).iter_rows(min_row=2)] == texts
    assert [row[0] for row in _calamine(data)[1:]] == texts
    sheet_xml = zipfile.ZipFile(io.BytesIO(data)).read("xl/worksheets/sheet1.xml")
    assert b"<f>" not in sheet_xml  # a text starting with "=" is a string, never a formula


def test_text_excel_cannot_hold_is_guarded_and_cut_at_its_cell_limit():
    data = workbook("Notes", HEADINGS, [["a\x00b\x0bc\rd"], ["x" * (CELL_LIMIT + 10)]])
    found = [row[0].value for row in _sheet(data).iter_rows(min_row=2)]
    assert found[0] == "ab\nc\rd"  # a NUL dropped, a vertical tab a line break, a carriage return kept
    assert _calamine(data)[1][0] == "ab\nc\rd"
    assert found[1] == "x" * CELL_LIMIT


def test_numbers_bools_dates_and_times_keep_their_kind():
    when = datetime(2025, 11, 17, 9, 30)
    row = [True, 7, 2.5, date(2008, 1, 31), when, time(12, 0), timedelta(hours=30), date(1900, 2, 28), math.inf]
    sheet = _sheet(workbook("Kinds", [f"c{n}" for n in range(len(row))], [row]))
    cells = list(sheet[2])
    assert [c.value for c in cells[:3]] == [True, 7, 2.5]
    assert cells[3].value == datetime(2008, 1, 31) and cells[3].number_format == "DD/MM/YYYY" and cells[3].is_date
    assert cells[4].value == when and cells[4].is_date
    assert cells[5].value == time(12, 0) and cells[6].value == timedelta(hours=30)
    assert cells[7].value == datetime(1900, 2, 28)  # before Excel's phantom 29 February 1900
    assert cells[8].data_type == "e"
    assert _calamine(workbook("Kinds", ["d"], [[date(2008, 1, 31)]]))[1] == [date(2008, 1, 31)]


def test_layout_headings_bold_and_frozen_columns_sized_and_the_sheet_named():
    data = workbook('A & "B"', HEADINGS, [["wider than its heading", 12345, None]])
    sheet = _sheet(data)
    assert sheet.title == 'A & "B"' and sheet.freeze_panes == "A2"
    assert [c.value for c in sheet[1]] == HEADINGS and all(c.font.b for c in sheet[1])
    widths = [int(sheet.column_dimensions[letter].width) for letter in "ABC"]
    assert widths == [len("wider than its heading") + 2, len("Number") + 2, len("When") + 2]


def test_the_same_rows_make_the_same_bytes_and_repeated_text_is_stored_once():
    rows = [["Islington", n, None] for n in range(50)]
    first, second = workbook("S", HEADINGS, rows), workbook("S", HEADINGS, rows)
    assert first == second
    strings = zipfile.ZipFile(io.BytesIO(first)).read("xl/sharedStrings.xml")
    assert strings.count(b"Islington") == 1


def test_no_rows_is_a_sheet_of_headings():
    sheet = _sheet(workbook("Empty", HEADINGS, []))
    assert [c.value for c in sheet[1]] == HEADINGS and sheet.max_row == 1
