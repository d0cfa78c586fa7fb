"""Build the golden workbooks: odd layouts met in the field, each with its expected findings beside it.

Run `python tests/data/make_golden.py` to rewrite tests/data/*.xlsx and *.expected.json. The output is
byte-for-byte the same on every run. Each row below carries the findings RETURN-SPEC.md says it must
get, reasoned from the spec by hand; nothing here imports the gateway.

Every file is checked as on TODAY, so academic age is taken on 31 August 2025 (16-18 means born
1 Sep 2006 - 31 Aug 2009). Postcodes are real: N1/N7/N19/EC1A Islington, NW1/NW3/WC1E Camden,
E8/E2/N16 Hackney, SW1A/W2 Westminster, M1 1AE Manchester (not served: Route_01), QQ1 1QQ absent
from the ONS directory and GIR 0AA present without a local authority (both Postcode_15). The college is in
Islington (host_la E09000019): rows whose postcode cannot be placed go there, with a note.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from datetime import date, datetime
from pathlib import Path

import openpyxl

HERE = Path(__file__).resolve().parent
TODAY = date(2025, 11, 17)
UKPRN = "10001234"
FIXED = datetime(2025, 1, 1, 0, 0, 0)
STANDARD = ["ULN", "Family Name", "First Name", "DOB", "Address", "Post Code", "Contact e-mail", "phone number",
            "Joiner", "Leaver", "at risk of dropping out", "Destination if known"]


def uln(stem: int) -> str:
    """A valid ULN by the spec's ULN_04 calculation, from the first 9-digit stem from `stem` that can have one."""
    while True:
        digits = str(stem)
        assert len(digits) == 9 and digits[0] != "0", stem
        r = sum((10 - i) * int(d) for i, d in enumerate(digits)) % 11
        if r != 0:  # remainder 0: no check digit makes this stem valid
            return digits + str(10 - r)
        stem += 1


def row(expected: list[tuple[str, str]], **cells: object) -> dict:
    """One data row: its cells by heading and the (severity, rule) findings the spec gives it."""
    return {"cells": cells, "expected": expected}


CLEAN: list[tuple[str, str]] = []


# -- 1. Columns moved, an extra column, an instructions sheet first, blank rows, numeric ULNs ------------------
def moved_columns() -> tuple[list, dict]:
    headings = ["Post Code", "Surname", "First Name", "Tutor Group", "ULN", "DOB", "Address", "Joiner", "Leaver",
                "at risk of dropping out", "Contact e-mail", "phone number", "Destination if known"]
    rows = {
        # An ordinary row: ULN stored as a number, DOB an Excel date cell, postcode typed without its space.
        9: row(CLEAN, **{"Post Code": "N11AA", "Surname": "Adeyemi", "First Name": "Aisha", "Tutor Group": "12B",
                         "ULN": 9276308686, "DOB": date(2008, 5, 25), "Address": "1 Upper Street", "Leaver": "X",
                         "Contact e-mail": "aisha@example.net", "phone number": "07700 900001"}),
        # Check digit wrong (the spec's own invalid example): forwarded with a note, its ULN left out.
        11: row([("W", "ULN_04")], **{"Post Code": "N7 8DB", "Surname": "Brennan", "First Name": "Harry",
                                       "ULN": 9276308687, "DOB": date(2007, 10, 2), "Address": "2 Holloway Road",
                                       "Joiner": "X"}),
        # Camden, lower-case postcode: fine.
        14: row(CLEAN, **{"Post Code": "nw1 2db", "Surname": "Chowdhury", "First Name": "Oscar", "ULN": 1000000043,
                          "DOB": date(2009, 1, 14), "Address": "3 Camden Road", "at risk of dropping out": "X",
                          "Destination if known": 540}),
        # ULN left blank: allowed, with a note.
        15: row([("W", "ULN_01")], **{"Post Code": "E8 1DY", "Surname": "Dimitrova", "First Name": "Wren",
                                       "DOB": date(2008, 2, 18), "Address": "4 Mare Street", "Leaver": "X"}),
        # Lives in Manchester: a valid postcode this gateway does not serve.
        16: row([("E", "Route_01")], **{"Post Code": "M1 1AE", "Surname": "Evans", "First Name": "Ella",
                                         "ULN": 1000000019, "DOB": date(2008, 4, 21), "Address": "5 Piccadilly",
                                         "Joiner": "X"}),
    }
    instructions = [["How to complete this return"], ["One row per young person; tick one reason per row."],
                    ["ULN - the Unique Learner Number, if known"], ["DOB - date of birth, day/month/year"],
                    ["Post Code - the young person's home postcode"]]
    header = {1: ["Provider Name", "Example College"], 2: ["Provider Number", int(UKPRN)],
              3: ["Contact Name", "MIS Team"], 4: ["Tel", "020 7946 0000"], 5: ["e-mail", "mis@example-college.example"]}
    sheets = [("Instructions", {i + 1: r for i, r in enumerate(instructions)}, None),
              ("LDOR Return", header, (8, 1, headings, rows))]
    return sheets, rows


# -- 2. Dates typed as text, in every form providers use ----------------------------------------------------------
def text_dates() -> tuple[list, dict]:
    people = [
        # (row, DOB as typed, expected, why)
        (8, "25/05/2008", CLEAN),  # day/month/year: 17
        (9, "2008-06-30", CLEAN),  # ISO
        (10, "05/25/2008", [("W", "DOB_02")]),  # month/day: never guessed; forwarded with a note
        (11, "31/02/2008", [("W", "DOB_02")]),  # no such day: forwarded with a note
        (12, "31/08/2009", CLEAN),  # sixteenth birthday on 31 August itself: 16
        (13, "01/09/2009", [("W", "DOB_04")]),  # one day younger: 15
        (14, "15/03/2005", [("W", "DOB_04")]),  # 20: allowed up to 24 with a note
        (15, "15/03/2000", [("E", "DOB_05")]),  # 25: too old
        (16, "01/12/2025", [("W", "DOB_03")]),  # after TODAY: forwarded with a note
        (17, "", [("W", "DOB_01")]),  # missing: forwarded with a note
        (18, "5/6/2008", CLEAN),  # 5 June 2008, day first
        (19, "25.05.2007", CLEAN),  # dots
    ]
    families = ["Fernandes", "Gallagher", "Hussain", "Ivanova", "Johnson", "Kowalski", "Lindqvist", "Mensah",
                "Nowak", "Okafor", "Patel", "Quinn"]
    postcodes = ["N1 9GU", "N19 5PG", "EC1A 1BB", "NW3 2QG", "WC1E 6BT", "E2 8DY", "N16 0AS", "SW1A 1AA", "W2 1JB",
                 "N1 1AA", "NW1 2DB", "E8 1DY"]
    rows = {}
    for i, ((number, dob, expected), family, postcode) in enumerate(zip(people, families, postcodes)):
        ticks = {"Joiner": "X"} if i % 2 else {"Leaver": "X"}
        rows[number] = row(expected, **{"ULN": uln(200000001 + i * 7), "Family Name": family, "First Name": "Sam",
                                        "DOB": dob, "Address": f"{i + 1} High Street", "Post Code": postcode, **ticks})
    header = {1: ["Provider Name", "Example College"], 2: ["Provider Number", UKPRN], 3: ["Contact Name", "MIS Team"],
              4: ["Tel", "020 7946 0000"], 5: ["e-mail", "mis@example-college.example"]}
    return [("Return", header, (7, 1, STANDARD, rows))], rows


# -- 3. One Reason column instead of ticks; headings in odd case with line breaks; a title row, no header block ----
def reason_column() -> tuple[list, dict]:
    headings = ["uln", "FAMILY NAME ", "first\nname", "Date of\nBirth", "Home Address", "POSTCODE", "Reason",
                "Destination"]
    key = {"uln": "uln", "family": "FAMILY NAME ", "first": "first\nname", "dob": "Date of\nBirth",
           "address": "Home Address", "postcode": "POSTCODE", "reason": "Reason", "destination": "Destination"}
    specs = [
        (4, "Joiner", "", CLEAN),
        (5, "leaver", "", CLEAN),
        (6, "At risk of dropping out", "", CLEAN),
        (7, "", "", [("E", "Reason_01")]),  # no reason given
        (8, "Transferred", "", [("E", "Reason_03")]),  # not one of the three
        (9, "At Risk", "150", [("W", "Destination_01")]),  # 110-150 are for under school-leaving age
        (10, "Leaver", "540", CLEAN),  # NEET seeking work
        (11, "Leaver", "Apprenticeship with a local garage", CLEAN),  # free text is allowed
        (12, "Joiner", "999", [("W", "Destination_01")]),
    ]
    families = ["Rahman", "Silva", "Thompson", "Usman", "Varga", "Williams", "Xu", "Yilmaz", "Zielinski"]
    postcodes = ["N1 1AA", "N7 8DB", "NW1 2DB", "E8 1DY", "N19 5PG", "E2 8DY", "WC1E 6BT", "SW1A 1AA", "N16 0AS"]
    rows = {}
    for i, ((number, reason, destination, expected), family, postcode) in enumerate(zip(specs, families, postcodes)):
        cells = {key["uln"]: uln(300000001 + i * 11), key["family"]: family, key["first"]: "Alex",
                 key["dob"]: date(2008, 1 + i, 10), key["address"]: f"{i + 1} Church Road", key["postcode"]: postcode,
                 key["reason"]: reason, key["destination"]: destination}
        rows[number] = row(expected, **cells)
    title = {1: ["Leavers and joiners return - autumn term 2025"]}
    instructions = {1: ["Reason: write Joiner, Leaver or At risk of dropping out"]}
    return [("Data", title, (3, 1, headings, rows)), ("Instructions", instructions, None)], rows


# -- 4. Ticks of every kind, duplicates, postcode problems; the sheet starts in column B ---------------------------
def ticks_and_duplicates() -> tuple[list, dict]:
    def person(family, first, born, ulnv, postcode, **ticks):
        return {"ULN": ulnv, "Family Name": family, "First Name": first, "DOB": born, "Address": "10 Green Lanes",
                "Post Code": postcode, **ticks}

    rows = {
        8: row(CLEAN, **person("Nowak", "Kacper", date(2008, 3, 1), 4000000003, "N4 2AA", Joiner="\u2713")),
        # The same ULN, this time typed as text: a possible duplicate.
        9: row([("W", "Row_01")], **person("Evans", "Ella", date(2008, 4, 1), "4000000003", "N1 1AA", Leaver="Yes")),
        # The same name and date of birth as row 8, in capitals, with another ULN.
        10: row([("W", "Row_01")], **person("NOWAK", "kacper", date(2008, 3, 1), 5555555554, "N7 8DB",
                                             **{"at risk of dropping out": "y"})),
        # The temporary ULN, twice: a note each time, but two different people, not duplicates.
        11: row([("W", "ULN_02")], **person("Patel", "Priya", date(2007, 10, 10), 9999999999, "NW1 2DB", Leaver=1)),
        12: row([("W", "ULN_02")], **person("Quinn", "Rory", date(2007, 11, 11), "9999999999", "E8 1DY", Joiner="x")),
        # Joined and left in the same month: forwarded as a Leaver, with a note.
        13: row([("W", "Reason_02")], **person("Rahman", "Sana", date(2008, 6, 6), uln(400000001), "N1 9GU",
                                                Joiner="X", Leaver="X")),
        14: row([("E", "Reason_03")], **person("Silva", "Tom", date(2008, 7, 7), uln(400000012), "N1 9GU", Joiner="?")),
        15: row([("E", "Reason_01")], **person("Thompson", "Uma", date(2008, 8, 8), uln(400000023), "N1 9GU")),
        # Postcodes the directory cannot place (not in it; in it without an authority; malformed; blank): each
        # row goes to the college's own authority (its host_la), with a note asking for the postcode.
        16: row([("W", "Postcode_15")], **person("Usman", "Vik", date(2008, 9, 9), uln(400000034), "QQ1 1QQ", Joiner="X")),
        17: row([("W", "Postcode_15")], **person("Varga", "Wren", date(2007, 9, 10), uln(400000045), "GIR 0AA", Joiner="X")),
        18: row([("W", "Postcode_02")], **person("Williams", "Yusuf", date(2007, 9, 11), uln(400000056), "N1 1A", Leaver="X")),
        19: row([("W", "Postcode_01")], **person("Xu", "Zara", date(2007, 9, 12), uln(400000067), "", Leaver="X")),
        20: row(CLEAN, **person("Yilmaz", "Ben", date(2007, 9, 13), uln(400000078), "ec1a1bb", Leaver="\u2714")),
    }
    # Header block in columns B-C with the telephone left blank: a note about the header.
    header = {1: [None, "Provider Name", "Example College"], 2: [None, "Provider Number", UKPRN],
              3: [None, "Contact Name", "MIS Team"], 4: [None, "Tel", None],
              5: [None, "e-mail", "mis@example-college.example"]}
    return [("Sheet1", header, (7, 2, STANDARD[:6] + STANDARD[8:11], rows))], rows


# -- 5. The header names another provider; names, ULNs, contact details wrong ---------------------------------------
def wrong_provider() -> tuple[list, dict]:
    def person(i, **changes):
        cells = {"ULN": uln(500000001 + i * 13), "Family Name": f"Family{chr(65 + i)}", "First Name": "Jo",
                 "DOB": date(2008, 1 + i, 3), "Address": f"{i + 1} Station Road", "Post Code": "N1 1AA",
                 "Contact e-mail": f"jo{i}@example.net", "phone number": "020 7946 0001", "Leaver": "X"}
        cells.update(changes)
        return cells

    rows = {
        8: row(CLEAN, **person(0)),
        9: row([("W", "FamilyName_01")], **person(1, **{"Family Name": ""})),
        10: row([("W", "FirstName_02")], **person(2, **{"First Name": "J" * 101})),
        12: row([("W", "Address_01")], **person(3, Address="")),
        13: row([("W", "Email_01")], **person(4, **{"Contact e-mail": "jo.bloggs at example.org"})),
        14: row([("W", "Phone_01")], **person(5, **{"phone number": "ring me"})),
        16: row([("W", "ULN_03")], **person(6, ULN="0276308686")),  # leading zero
        17: row([("W", "ULN_04")], **person(7, ULN=1000000063)),  # remainder 0
        18: row([("W", "ULN_03")], **person(8, ULN="12345")),  # too short
    }
    header = {1: ["Provider Name", "Example College"], 2: ["Provider Number", "10009999"],
              3: ["Contact Name", "MIS Team"], 4: ["Tel", "020 7946 0000"], 5: ["e-mail", "mis@example-college.example"]}
    return [("Return", header, (7, 1, STANDARD, rows))], rows


# -- 6. Forty rows, one of each fault, beside clean rows: notify first (issue 10) --------------------------------------
ISLINGTON = ["N1 1AA", "N7 8DB", "N19 5PG", "N1 9GU", "N5 1XL"]
CAMDEN = ["NW1 2DB", "NW3 2QG", "WC1E 6BT", "NW5 1TL"]
HACKNEY = ["E8 1DY", "E2 8DY", "N16 0AS", "E5 0LL"]


def one_of_each() -> tuple[list, dict]:
    """Every row fault a provider makes, once each, among clean rows of three boroughs. The college is in
    Islington (its host_la), where rows whose postcode cannot be placed go. Dates of birth make the young
    people 16-18 on 31 August 2025 and 2026 alike, so the file reads the same in either year."""
    postcodes = ISLINGTON + CAMDEN + HACKNEY

    def person(i: int, **changes: object) -> dict:
        cells = {"ULN": uln(600000001 + i * 17), "Family Name": f"Family{i:02d}", "First Name": "Robin",
                 "DOB": date(2008, 9 + i % 4, 1 + i % 27), "Address": f"{i + 1} Canal Street",
                 "Post Code": postcodes[i % len(postcodes)], "Contact e-mail": f"robin{i}@example.net",
                 "phone number": "020 7946 0001", ("Leaver", "Joiner", "at risk of dropping out")[i % 3]: "X"}
        for key, value in changes.items():
            cells[key.replace("_", " ")] = value
        return cells

    faults = [
        ([("W", "ULN_01")], {"ULN": ""}),
        ([("W", "ULN_02")], {"ULN": "9999999999"}),
        ([("W", "ULN_03")], {"ULN": "0276308686"}),
        ([("W", "ULN_04")], {"ULN": "9276308687"}),  # fails its check: forwarded with the ULN left out
        ([("W", "FamilyName_01")], {"Family Name": ""}),
        ([("W", "FirstName_01")], {"First Name": ""}),
        ([("E", "Name_01")], {"Family Name": "", "First Name": ""}),  # names no one: held back
        ([("W", "DOB_01")], {"DOB": ""}),
        ([("W", "DOB_02")], {"DOB": "31/02/2008"}),
        ([("W", "DOB_03")], {"DOB": date(2099, 1, 1)}),
        ([("W", "DOB_04")], {"DOB": date(2005, 3, 15)}),  # 20 or 21: allowed with a note
        ([("E", "DOB_05")], {"DOB": date(1995, 3, 15)}),  # 30: not a young person
        ([("W", "Address_01")], {"Address": ""}),
        ([("W", "Postcode_01")], {"Post Code": ""}),  # no fixed abode: to Islington, the college's authority
        ([("W", "Postcode_02")], {"Post Code": "N1 1A"}),  # a slip: to Islington
        ([("W", "Postcode_15")], {"Post Code": "QQ1 1QQ"}),  # not in the directory (a new build): to Islington
        ([("W", "Email_01")], {"Contact e-mail": "robin at example.net"}),
        ([("W", "Phone_01")], {"phone number": "ring after 5"}),
        ([("E", "Reason_01")], {"Leaver": None, "Joiner": None, "at risk of dropping out": None}),  # says nothing
        ([("E", "Reason_03")], {"Leaver": "?", "Joiner": None, "at risk of dropping out": None}),
        ([("W", "Reason_02")], {"Leaver": "X", "Joiner": "X", "at risk of dropping out": None}),  # goes as a Leaver
        ([("W", "Destination_01")], {"Destination if known": "999"}),
        ([("E", "Route_01")], {"Post Code": "M1 1AE"}),  # Manchester: not served here, named in the receipt
        ([("E", "Route_01")], {"Post Code": "LS1 4DY"}),  # Leeds
    ]
    rows: dict[int, dict] = {}
    number = 8
    for i, (expected, changes) in enumerate(faults):
        rows[number] = row(expected, **person(i, **changes))
        number += 1
    first_clean = number
    while number < 8 + 39:
        rows[number] = row(CLEAN, **person(number))
        number += 1
    # The last row repeats the first clean row's ULN: a possible duplicate, forwarded with a note.
    rows[number] = row([("W", "Row_01")], **person(number, ULN=rows[first_clean]["cells"]["ULN"]))
    header = {1: ["Provider Name", "Example College"], 2: ["Provider Number", UKPRN], 3: ["Contact Name", "MIS Team"],
              4: ["Tel", "020 7946 0000"], 5: ["e-mail", "mis@example-college.example"]}
    return [("Return", header, (7, 1, STANDARD, rows))], rows


GOLDEN = {
    "moved_columns": (moved_columns, [], "columns in another order, an extra column, instructions sheet first"),
    "text_dates": (text_dates, [], "dates typed as text: UK, ISO, dots, a month/day date, impossible and future dates"),
    "reason_column": (reason_column, [], "one Reason column, headings in odd case with line breaks, no header block"),
    "ticks_and_duplicates": (ticks_and_duplicates, [("W", None, "Header_01")],
                             "tick marks of every kind, duplicates, temporary ULNs, postcode problems, table from column B"),
    "wrong_provider": (wrong_provider, [("F", None, "Provider_03")],
                       "the header names another provider's UKPRN: the file is rejected"),
    "one_of_each": (one_of_each, [], "forty rows, one of each row fault among clean rows of three boroughs"),
}


def build(folder: Path = HERE) -> list[Path]:
    written = []
    for name, (layout, file_findings, about) in GOLDEN.items():
        sheets, rows = layout()
        path = folder / f"{name}.xlsx"
        path.write_bytes(_workbook(sheets))
        findings = sorted([list(f) for f in file_findings] +
                          [[severity, number, rule] for number, r in rows.items() for severity, rule in r["expected"]],
                          key=lambda f: ("FEW".index(f[0]), f[1] or 0, f[2]))
        rejected = {number for number, r in rows.items() if any(s == "E" for s, _ in r["expected"])}
        fatal = any(f[0] == "F" for f in findings)
        expected = {
            "about": about,
            "today": TODAY.isoformat(),
            "provider": UKPRN,
            "rows_read": len(rows),
            "file_rejected": fatal,
            "forwarded": 0 if fatal else len(rows) - len(rejected),
            "findings": findings,
        }
        (folder / f"{name}.expected.json").write_text(_dump(expected))
        written.append(path)
    return written


def _dump(expected: dict) -> str:
    """JSON with one finding per line, so a diff of an expected file reads as a list of findings."""
    lines = [f"  {json.dumps(key)}: {json.dumps(value)}," for key, value in expected.items() if key != "findings"]
    findings = ",\n".join(f"    {json.dumps(f)}" for f in expected["findings"])
    return "{\n" + "\n".join(lines) + '\n  "findings": [\n' + findings + "\n  ]\n}\n"


def _workbook(sheets: list) -> bytes:
    book = openpyxl.Workbook()
    book.remove(book.active)
    for title, top, table in sheets:
        sheet = book.create_sheet(title)
        for number, values in top.items():
            for column, value in enumerate(values, start=1):
                if value is not None:
                    sheet.cell(number, column, value)
        if table is None:
            continue
        heading_row, first_column, headings, rows = table
        for offset, heading in enumerate(headings):
            sheet.cell(heading_row, first_column + offset, heading)
        for number, r in rows.items():
            unknown = set(r["cells"]) - set(headings)
            assert not unknown, unknown
            for offset, heading in enumerate(headings):
                value = r["cells"].get(heading)
                if value in (None, ""):
                    continue
                cell = sheet.cell(number, first_column + offset, value)
                if isinstance(value, date):
                    cell.number_format = "DD/MM/YYYY"
                elif isinstance(value, str):
                    cell.data_type = "s"  # typed text, never a formula
    book.properties.creator = "ldor-gateway tests"
    book.properties.created = FIXED
    buffer = io.BytesIO()
    book.save(buffer)
    return _fixed_zip(buffer.getvalue())


def _fixed_zip(data: bytes) -> bytes:
    """Rewrite the xlsx with fixed timestamps, so the same script always writes the same bytes."""
    source = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            content = source.read(info.filename)
            if info.filename == "docProps/core.xml":
                content = re.sub(rb"(<dcterms:modified[^>]*>)[^<]*", rb"\g<1>2025-01-01T00:00:00Z", content)
            fixed = zipfile.ZipInfo(info.filename, date_time=(2025, 1, 1, 0, 0, 0))
            fixed.compress_type = zipfile.ZIP_DEFLATED
            target.writestr(fixed, content)
    return out.getvalue()


if __name__ == "__main__":
    for written in build():
        print(written.relative_to(HERE.parent.parent))
