"""`gateway template OUT.xlsx`: the blank return in the layout providers know.

The instructions sheet is generated from the rule registry, so the template and the checks can never
disagree.
"""

from __future__ import annotations

from pathlib import Path

import openpyxl
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.worksheet.datavalidation import DataValidation

from . import ccis
from .validate import RULES

HEADER_LABELS = ("Provider Name", "Provider Number", "Contact Name", "Tel", "e-mail")
TABLE = (
    ("ULN", 13), ("Family Name", 20), ("First Name", 18), ("DOB", 12), ("Address", 36), ("Post Code", 11),
    ("Contact e-mail", 26), ("phone number", 16), ("Joiner", 8), ("Leaver", 8),
    ("at risk of dropping out", 12), ("Destination if known", 14),
)
HEADING_ROW = len(HEADER_LABELS) + 3
DATA_ROWS = 1000
_SEVERITY = {"F": "F - the whole file is rejected", "E": "E - the row is not forwarded", "W": "W - forwarded with a note"}


def write_template(path: Path) -> None:
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "Return"
    _return_sheet(sheet)
    _instructions(book.create_sheet("Instructions"))
    book.save(path)


def _return_sheet(sheet) -> None:
    bold = Font(bold=True)
    for row, label in enumerate(HEADER_LABELS, start=1):
        sheet.cell(row, 1, label).font = bold
        sheet.cell(row, 2).fill = PatternFill("solid", fgColor="FFF2CC")
    sheet.cell(2, 2).number_format = "@"  # a UKPRN is an identifier, not a number to round
    for column, (heading, width) in enumerate(TABLE, start=1):
        cell = sheet.cell(HEADING_ROW, column, heading)
        cell.font = bold
        cell.alignment = Alignment(wrap_text=True, vertical="top")
        sheet.column_dimensions[cell.column_letter].width = width
    sheet.freeze_panes = sheet.cell(HEADING_ROW + 1, 1)
    first, last = HEADING_ROW + 1, HEADING_ROW + DATA_ROWS
    letter = {heading: openpyxl.utils.get_column_letter(i) for i, (heading, _) in enumerate(TABLE, start=1)}
    for row in range(first, last + 1):
        sheet[f"{letter['DOB']}{row}"].number_format = "DD/MM/YYYY"
        sheet[f"{letter['ULN']}{row}"].number_format = "@"
    ticks = DataValidation(type="list", formula1='"X"', allow_blank=True, showErrorMessage=True,
                           errorTitle="Reason", error="Mark one of Joiner, Leaver or at risk with X.")
    ticks.add(f"{letter['Joiner']}{first}:{letter['at risk of dropping out']}{last}")
    codes = ",".join(ccis.CODES)
    destination = DataValidation(type="list", formula1=f'"{codes}"', allow_blank=True, showErrorMessage=False)
    destination.add(f"{letter['Destination if known']}{first}:{letter['Destination if known']}{last}")
    born = DataValidation(type="date", operator="greaterThan", formula1="DATE(1990,1,1)", allow_blank=True,
                          showErrorMessage=True, errorTitle="DOB", error="Enter the date of birth as day/month/year.")
    born.add(f"{letter['DOB']}{first}:{letter['DOB']}{last}")
    for validation in (ticks, destination, born):
        sheet.add_data_validation(validation)


def _instructions(sheet) -> None:
    bold = Font(bold=True)
    lines = [
        ("How to complete the leavers and joiners return", None),
        ("", None),
        ("1. Fill in the header block at the top of the Return sheet: your provider name, your 8-digit UKPRN, and a contact.", None),
        ("2. One row per young person. Mark exactly one of Joiner, Leaver or at risk of dropping out with X.", None),
        ("3. Dates as day/month/year. Postcodes in full (the home postcode, used to find the young person's local authority).", None),
        ("4. Encrypt the file with the gateway's public key (or as agreed with the administrator) and email it to the secure mailbox.", None),
        ("5. You will receive a receipt naming any problems by row number, column and rule. The rules are listed below.", None),
        ("", None),
        ("Rule", "Severity", "Column", "What the receipt says"),
    ]
    for values in lines:
        sheet.append([v for v in values if v is not None] if values[1] is None else list(values))
    sheet["A1"].font = Font(bold=True, size=14)
    for cell in sheet[len(lines)]:
        cell.font = bold
    for rule in RULES.values():
        sheet.append([rule.name, _SEVERITY[rule.severity], rule.field.replace("_", " ").title(), rule.message])
    sheet.append([])
    sheet.append(["Destination if known: a CCIS activity code from this list, or a few words"])
    sheet.cell(sheet.max_row, 1).font = bold
    sheet.append(["Code", "Group", "", "Activity"])
    for cell in sheet[sheet.max_row]:
        cell.font = bold
    for group, codes in ccis.GROUPS:
        for code, label in codes:
            sheet.append([code, group, "", label])
    for letter, width in zip("ABCD", (16, 30, 16, 110)):
        sheet.column_dimensions[letter].width = width
