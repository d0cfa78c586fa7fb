"""`gateway template OUT.xlsx`: the blank return in the layout providers know, with what a provider needs to
fill it in and send it without help.

Everything in it comes from one source, so the template, the reader and the checks can never disagree: the
headings from read.HEADINGS (their first name), the rules from validate.RULES, the destination codes from
ccis.py, the ticks from what validate accepts; where to send it and the key to encrypt to from config.toml.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

# openpyxl ships no type information (types-openpyxl is not among the dependencies).
import openpyxl
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.utils import get_column_letter, quote_sheetname
from openpyxl.worksheet.datavalidation import DataValidation

from .. import config as config_module
from ..errors import KeyringError
from ..keys import Keyring
from ..reference import ccis
from ..returns.read import HEADER_LABELS, HEADINGS
from ..returns.validate import RULES

if TYPE_CHECKING:
    from openpyxl.worksheet.worksheet import Worksheet

# The table's fields in the order providers know (RETURN-SPEC "Layout"), each with its column width and
# what the Instructions say of it; the heading is the reader's own (read.HEADINGS).
TABLE = (
    ("uln", 13, "The 10-digit Unique Learner Number, if known (a text cell: nothing is rounded or lost)."),
    ("family_name", 20, "The young person's family name."),
    ("first_name", 18, "The young person's first (given) name."),
    ("dob", 12, "Date of birth as day/month/year, e.g. 31/01/2008."),
    ("address", 36, "The young person's home address."),
    ("postcode", 11, "The home postcode in full, e.g. N1 1AA: it decides which local authority is told."),
    ("contact_email", 26, "The young person's e-mail address, if known."),
    ("phone", 16, "The young person's phone number (a text cell, so the leading 0 stays)."),
    ("joiner", 8, "Started with you (a joiner): mark with {marks}; the dropdown offers them. One reason per row."),
    ("leaver", 8, "Left learning early (a leaver): mark the same way."),
    ("at_risk", 12, "At risk of dropping out: mark the same way."),
    ("destination", 30, "Where the young person went or is going, if known: choose from the list (the Codes sheet "
                        "explains each code), type the code or its meaning, or a few words of your own."),
)
HEADER_FIELDS = ("provider_name", "provider_number", "contact_name", "contact_tel", "contact_email")
HEADING_ROW = len(HEADER_FIELDS) + 3
DATA_ROWS = 5000
TICK_FIELDS = ("joiner", "leaver", "at_risk")
# What the reason dropdown offers: each is a tick the reader takes (validate._TICKS, tested).
TICKS = ("X", "Y", "Yes", "\u2713", "1")
ASK = "ask your administrator for the address and key"
_SEVERITY = {"F": "F - the whole file is rejected", "E": "E - the row is not forwarded", "W": "W - forwarded with a note"}
_TEXT = "@"  # Excel's text format: an identifier keeps its leading 0 and is never rounded
_DATE = "DD/MM/YYYY"


def heading(field: str) -> str:
    """The return's own heading for a field ("ULN", "Post Code"), as the sheet and receipts name it; a field
    only of the header block ("provider_number") by its label there."""
    if field in HEADINGS:
        return HEADINGS[field][0]
    return HEADER_LABELS[field][0] if field in HEADER_LABELS else ""


def _reason_headings() -> str:
    names = [heading(f) for f in TICK_FIELDS]
    return f"{', '.join(names[:-1])} or {names[-1]}"


@dataclass(frozen=True)
class Sending:
    """Where providers send the return and the key they encrypt it to; empty when not known."""

    address: str = ""
    fingerprint: str = ""

    def shown_fingerprint(self) -> str:
        """"ABCD 1234 ...": in groups of four, as Kleopatra and Thunderbird show it."""
        return " ".join(self.fingerprint[i:i + 4] for i in range(0, len(self.fingerprint), 4))


def sending_from(config_path: Path) -> tuple[Sending, str]:
    """The mailbox address ([mailbox] user, else [smtp] from_address) and the gateway's own key's fingerprint
    from config.toml, and a one-line note when either is not known (no config, no usable key): the
    Instructions then tell the provider to ask the administrator."""
    if not Path(config_path).is_file():
        return Sending(), f"note: no {config_path}, so the Instructions say to {ASK} (give --config to fill them in)"
    settings = config_module.load(config_path)  # a config with mistakes stops here, as every command does
    address = settings.mailbox.user if "@" in settings.mailbox.user else settings.smtp.from_address
    notes = [] if address else [f"{config_path} names no mailbox address ([mailbox] user or [smtp] from_address)"]
    fingerprint = ""
    home = settings.gnupg.home
    if not home.is_dir():
        notes.append(f"the gateway's keyring {home} does not exist yet")
    else:
        try:
            own = Keyring(home).own_key()
        except KeyringError as error:
            notes.append(str(error))
        else:
            if own.usable:
                fingerprint = own.fingerprint
            else:
                notes.append(f"the gateway's own key {own.fingerprint} cannot be used ({own.trouble()})")
    note = f"note: {'; '.join(notes)}, so the Instructions say to {ASK} there" if notes else ""
    return Sending(address, fingerprint), note


def write_template(path: Path, sending: Sending = Sending()) -> None:
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "Return"
    codes = book.create_sheet("Codes")
    _return_sheet(sheet, _codes(codes))
    instructions = book.create_sheet("Instructions", 1)
    _instructions(instructions, sending)
    book.save(path)


def _return_sheet(sheet: Worksheet, choices: str) -> None:
    bold = Font(bold=True)
    for row, field in enumerate(HEADER_FIELDS, start=1):
        sheet.cell(row, 1, HEADER_LABELS[field][0]).font = bold
        sheet.cell(row, 2).fill = PatternFill("solid", fgColor="FFF2CC")
        if field in ("provider_number", "contact_tel"):  # a UKPRN and a phone number are not numbers to round
            sheet.cell(row, 2).number_format = _TEXT
    for column, (field, width, _) in enumerate(TABLE, start=1):
        cell = sheet.cell(HEADING_ROW, column, heading(field))
        cell.font = bold
        cell.alignment = Alignment(wrap_text=True, vertical="top")
        sheet.column_dimensions[cell.column_letter].width = width
    sheet.freeze_panes = sheet.cell(HEADING_ROW + 1, 1)
    first, last = HEADING_ROW + 1, HEADING_ROW + DATA_ROWS
    letter = {field: get_column_letter(i) for i, (field, _, _) in enumerate(TABLE, start=1)}
    formats = {letter["uln"]: _TEXT, letter["phone"]: _TEXT, letter["dob"]: _DATE}
    for row in range(first, last + 1):
        for column, number_format in formats.items():
            sheet[f"{column}{row}"].number_format = number_format
    marks = ", ".join(TICKS)
    ticks = DataValidation(type="list", formula1=f'"{",".join(TICKS)}"', allow_blank=True, showErrorMessage=True,
                           errorStyle="warning", errorTitle="Reason",
                           error=f"Mark one of {_reason_headings()} with one of {marks}.")
    ticks.add(f"{letter[TICK_FIELDS[0]]}{first}:{letter[TICK_FIELDS[-1]]}{last}")
    # A list taken from the Codes sheet (a list typed into the rule stops at 255 characters); no error
    # message, so a few words of the provider's own are kept as typed.
    destination = DataValidation(type="list", formula1=choices, allow_blank=True, showErrorMessage=False)
    destination.add(f"{letter['destination']}{first}:{letter['destination']}{last}")
    born = DataValidation(type="date", operator="greaterThan", formula1="DATE(1990,1,1)", allow_blank=True,
                          showErrorMessage=True, errorTitle=heading("dob"),
                          error="Enter the date of birth as day/month/year, e.g. 31/01/2008.")
    born.add(f"{letter['dob']}{first}:{letter['dob']}{last}")
    for validation in (ticks, destination, born):
        sheet.add_data_validation(validation)


def _codes(sheet: Worksheet) -> str:
    """Every CCIS destination code with its meaning (ccis.py); returns the range the dropdown lists."""
    bold = Font(bold=True)
    sheet.append(["Code", "Meaning", "Group", "In the dropdown"])
    for cell in sheet[1]:
        cell.font = bold
    for group, codes in ccis.GROUPS:
        for code, label in codes:
            sheet.append([code, label, group, ccis.choice(code)])
    for row in sheet.iter_rows(min_row=2, max_col=1):
        row[0].number_format = _TEXT
    for column, width in zip("ABCD", (8, 60, 16, 64), strict=False):
        sheet.column_dimensions[column].width = width
    sheet.freeze_panes = "A2"
    return f"{quote_sheetname(sheet.title)}!$D$2:$D${sheet.max_row}"


def sending_lines(sending: Sending) -> list[str]:
    """The Instructions' section on sending: where, the key, and how to encrypt with the usual tools."""
    address = sending.address or f"the secure mailbox ({ASK})"
    to = sending.address or "the secure mailbox"
    key = sending.shown_fingerprint() or ASK
    return [
        f"Send the completed return by e-mail to: {address}",
        f"Encrypt it first to the gateway's key, fingerprint: {key}",
        "Ask your administrator for the gateway's public key file (.asc) if you do not have it, and check that the "
        "fingerprint your program shows for it is the one above. Never send the return unencrypted.",
        "Encrypt it in one of these ways:",
        "- Kleopatra (Gpg4win): File > Import the gateway's public key, then File > Sign/Encrypt, choose the "
        f"return, tick Encrypt for others and choose the gateway's certificate ({to}); attach the .gpg file it "
        "makes to your e-mail.",
        f"- Outlook with GpgOL: import the gateway's public key in Kleopatra, write to {to} with the return "
        "attached, click Secure > Encrypt, then Send.",
        "- Thunderbird: Tools > OpenPGP Key Manager > File > Import the gateway's public key and accept it once the "
        f"fingerprint matches; write to {to} with the return attached, click Encrypt (OpenPGP), then Send.",
        "- Or, when your administrator has agreed a password with you: protect the workbook with it (Excel: File > "
        "Info > Protect Workbook > Encrypt with Password), or put the return in a zip encrypted with AES-256 (7-Zip: "
        "Encryption method AES-256). The password is agreed with the administrator and given by phone, never in the "
        "same e-mail as the return.",
        "You will receive a receipt naming any problems by row number, column and rule; the rules are listed below.",
    ]


def _instructions(sheet: Worksheet, sending: Sending) -> None:
    bold = Font(bold=True)
    header = ", ".join(HEADER_LABELS[f][0] for f in HEADER_FIELDS)

    def title(text: str, size: int = 12) -> None:
        sheet.append([text])
        sheet.cell(sheet.max_row, 1).font = Font(bold=True, size=size)

    title("How to complete the leavers and joiners return", 14)
    sheet.append([])
    title("Filling it in")
    sheet.append([f"At the top of the Return sheet, fill in {header}: your organisation's name, your 8-digit "
                  "UKPRN, and who to contact about the return."])
    sheet.append([f"Then one row per young person, under the headings in row {HEADING_ROW}:"])
    sheet.append(["Column", "What to put in it"])
    for cell in sheet[sheet.max_row]:
        cell.font = bold
    marks = f"{', '.join(TICKS[:-1])} or {TICKS[-1]}"
    for field, _, help_text in TABLE:
        sheet.append([heading(field), help_text.format(marks=marks)])
    sheet.append([])
    title("Sending it")
    for line in sending_lines(sending):
        sheet.append([line])
    sheet.append([])
    title("The rules your receipt refers to")
    sheet.append(["Rule", "Severity", "Column", "What the receipt says"])
    for cell in sheet[sheet.max_row]:
        cell.font = bold
    for rule in RULES.values():
        column = _reason_headings() if rule.field == "reason" else heading(rule.field)  # the template's ticks
        sheet.append([rule.name, _SEVERITY[rule.severity], column, rule.message])
    for column, width in zip("ABCD", (24, 30, 30, 110), strict=False):
        sheet.column_dimensions[column].width = width
