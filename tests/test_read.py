"""Reading returns: the header block, the table found by its headings, row numbers, csv encodings, files refused."""

from __future__ import annotations

import importlib.util
import io
import json
import re
import subprocess
import sys
import time
import zipfile
from datetime import date, datetime
from pathlib import Path

import openpyxl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.demo.sample import TABLE_HEADINGS, people, workbook
from gateway.errors import ReadError, UnpackError
from gateway.returns.read import MAX_CSV_REPAIRS, MAX_ROWS, MAX_SHEETS, read_return

TODAY = date(2025, 11, 17)


def xlsx(*sheets: tuple[str, list[list[object]]]) -> bytes:
    book = openpyxl.Workbook()
    book.remove(book.active)
    for title, rows in sheets:
        sheet = book.create_sheet(title)
        for row in rows:
            sheet.append(row)
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def everyone(directory):
    return people(directory, {"E09000019": 2, "E09000007": 1}, today=TODAY)


def test_sample_workbook(everyone):
    table = read_return(workbook("Example College", "10001234", [p.cells() for p in everyone]))
    assert table.sheet == "Return"  # the instructions sheet before it is skipped
    assert dict(table.header) == {
        "provider_name": "Example College", "provider_number": "10001234", "contact_name": "MIS Team",
        "contact_tel": "020 7946 0000", "contact_email": "mis@example-college.example",
    }
    assert table.heading_row == 8
    assert table.headings == TABLE_HEADINGS
    assert [row.number for row in table.rows] == [9, 10, 11]
    first = table.rows[0]
    assert first.get(table, "family_name") == everyone[0].family_name
    assert first.get(table, "postcode") == everyone[0].postcode
    dob = first.get(table, "dob")
    assert isinstance(dob, (date, datetime)) and (dob.year, dob.month, dob.day) == (
        everyone[0].dob.year, everyone[0].dob.month, everyone[0].dob.day)


def test_headings_in_any_order_case_spacing_and_line_breaks():
    headings = ["Tutor group", "  POST\nCODE ", "date of birth", "Surname ", "first  name", "u.l.n", "Joiner",
                "LEAVER", "At Risk of\r\nDropping Out", "Destination If Known", "Contact E-Mail", "Phone Number"]
    rows = [headings, ["12B", "n11aa", "25/05/2008", "Okafor", "Femi", "9276308686", "", "X", "", "540", "f@x.example", "0"]]
    table = read_return(xlsx(("Data", rows)))
    row = table.rows[0]
    expected = {"postcode": "n11aa", "dob": "25/05/2008", "family_name": "Okafor", "first_name": "Femi",
                "leaver": "X", "joiner": "", "destination": "540", "contact_email": "f@x.example"}
    for field, value in expected.items():
        assert row.get(table, field) == value, field
    assert table.heading("postcode") == "POST CODE"  # the provider's own words, white space tidied
    assert table.heading("at_risk") == "At Risk of Dropping Out"
    assert row.get(table, "address") == ""  # no such column: blank, not an error


def test_uln_heading_with_dots_is_not_required():
    # "u.l.n" folds to "u l n", not a known heading: the table is still found from the other headings.
    table = read_return(xlsx(("Data", [["u.l.n", "Family Name", "First Name", "DOB", "Post Code"], ["1", "A", "B", "C", "D"]])))
    assert "uln" not in table.columns
    assert table.rows[0].get(table, "uln") == ""


def test_instructions_sheet_is_skipped_even_when_it_names_headings():
    instructions = [["How to fill in this return"], ["ULN: the learner's Unique Learner Number"],
                    ["Family Name: as on the learner's record"], ["DOB: day/month/year"], ["Post Code: home postcode"]]
    data = [["Family Name", "First Name", "DOB", "Post Code"], ["Nowak", "Kacper", "01/02/2008", "N1 1AA"]]
    table = read_return(xlsx(("Instructions", instructions), ("Return", data)))
    assert table.sheet == "Return"
    assert [r.number for r in table.rows] == [2]


def test_blank_rows_are_skipped_and_row_numbers_kept():
    rows = [
        ["Provider Name", "Example College"],
        [],
        ["ULN", "Family Name", "First Name", "DOB", "Post Code"],
        ["9276308686", "A", "B", "01/01/2008", "N1 1AA"],
        [],
        [None, "   ", None, "", None],  # looks blank: spaces only
        ["1000000043", "C", "D", "02/02/2008", "N1 1AB"],
        [],
        [],
        ["1000000019", "E", "F", "03/03/2008", "N1 1AD"],
    ]
    table = read_return(xlsx(("Return", rows)))
    assert table.heading_row == 3
    assert [r.number for r in table.rows] == [4, 7, 10]
    assert [r.get(table, "family_name") for r in table.rows] == ["A", "C", "E"]


def test_row_numbers_when_the_sheet_starts_lower_and_further_right():
    book = openpyxl.Workbook()
    sheet = book.active
    for column, heading in zip("CDEFG", ["ULN", "Family Name", "First Name", "DOB", "Post Code"], strict=False):
        sheet[f"{column}5"] = heading
    sheet["D7"], sheet["E7"], sheet["G7"] = "Silva", "Nia", "N1 1AA"
    buffer = io.BytesIO()
    book.save(buffer)
    table = read_return(buffer.getvalue())
    assert table.heading_row == 5
    assert [r.number for r in table.rows] == [7]
    assert table.rows[0].get(table, "family_name") == "Silva"
    assert table.rows[0].get(table, "postcode") == "N1 1AA"


def test_uln_and_ukprn_stored_as_numbers_come_back_as_whole_numbers():
    rows = [["Provider Name", "Example College"], ["Provider Number", 10001234], [],
            ["ULN", "Family Name", "First Name", "DOB", "Post Code"],
            [9276308686, "A", "B", datetime(2008, 5, 25), "N1 1AA"]]
    table = read_return(xlsx(("Return", rows)))
    uln = table.rows[0].get(table, "uln")
    assert uln == 9276308686 and type(uln) is int
    assert table.header["provider_number"] == "10001234"
    dob = table.rows[0].get(table, "dob")
    assert (dob.year, dob.month, dob.day) == (2008, 5, 25)


def test_cells_are_trimmed():
    rows = [["Family Name", "First Name", "DOB", "Post Code"], ["  Quinn ", "\tRory", " 25/05/2008 ", "N1 1AA  "]]
    table = read_return(xlsx(("Return", rows)))
    assert table.rows[0].values == ("Quinn", "Rory", "25/05/2008", "N1 1AA")


def test_extra_columns_are_kept():
    rows = [["Student ID", "Family Name", "First Name", "DOB", "Post Code", "Notes"], ["S1", "A", "B", "C", "D", "E"]]
    table = read_return(xlsx(("Return", rows)))
    assert table.headings == ("Student ID", "Family Name", "First Name", "DOB", "Post Code", "Notes")
    assert table.rows[0].values == ("S1", "A", "B", "C", "D", "E")


def test_header_block_values_may_sit_further_right():
    rows = [["Provider Name:", None, "  Example   College "], ["UKPRN", "", 10001234], [],
            ["Family Name", "First Name", "DOB", "Post Code"], ["A", "B", "C", "D"]]
    table = read_return(xlsx(("Return", rows)))
    assert table.header["provider_name"] == "Example College"
    assert table.header["provider_number"] == "10001234"


def ods(rows: list[list[object]]) -> bytes:
    """A minimal OpenDocument spreadsheet, as LibreOffice users send."""
    def cell(value: object) -> str:
        if value in (None, ""):
            return "<table:table-cell/>"
        if isinstance(value, (int, float)):
            return f'<table:table-cell office:value-type="float" office:value="{value}"><text:p>{value}</text:p></table:table-cell>'
        return f'<table:table-cell office:value-type="string"><text:p>{value}</text:p></table:table-cell>'

    body = "".join("<table:table-row>" + "".join(cell(v) for v in r) + "</table:table-row>" for r in rows)
    content = (
        '<?xml version="1.0" encoding="UTF-8"?><office:document-content '
        'xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
        'xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0" '
        'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" office:version="1.2"><office:body>'
        f'<office:spreadsheet><table:table table:name="Return">{body}</table:table></office:spreadsheet>'
        "</office:body></office:document-content>"
    )
    manifest = (
        '<?xml version="1.0" encoding="UTF-8"?><manifest:manifest '
        'xmlns:manifest="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0" manifest:version="1.2">'
        '<manifest:file-entry manifest:full-path="/" manifest:media-type="application/vnd.oasis.opendocument.spreadsheet"/>'
        '<manifest:file-entry manifest:full-path="content.xml" manifest:media-type="text/xml"/></manifest:manifest>'
    )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(zipfile.ZipInfo("mimetype"), "application/vnd.oasis.opendocument.spreadsheet")
        archive.writestr("META-INF/manifest.xml", manifest, zipfile.ZIP_DEFLATED)
        archive.writestr("content.xml", content, zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


def test_ods():
    rows = [["Provider Name", "Example College"], ["Provider Number", 10001234], [],
            ["ULN", "Family Name", "First Name", "DOB", "Post Code"],
            [9276308686, "Adeyemi", "Aisha", "25/05/2008", "N1 1AA"], [], ["1000000043", "Brennan", "Harry", "", "NW1 2DB"]]
    table = read_return(ods(rows))
    assert table.header["provider_number"] == "10001234"
    assert table.heading_row == 4
    assert [r.number for r in table.rows] == [5, 7]
    assert table.rows[0].get(table, "uln") == 9276308686
    assert table.rows[1].get(table, "family_name") == "Brennan"


CSV_TEXT = (
    "Provider Name,Example College\r\n"
    "Provider Number,10001234\r\n"
    "\r\n"
    "ULN,Family Name,First Name,DOB,Address,Post Code,Joiner,Leaver,at risk of dropping out\r\n"
    '9276308686,Müller,Zoë,25/05/2008,"Flat 1, 2 Café Row",N1 1AA,X,,\r\n'
    "\r\n"
    "1000000043,O’Brien,Siân,01/09/2007,3 High Street,NW12DB,,X,\r\n"
)


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "cp1252"])
def test_csv_encodings(encoding):
    table = read_return(CSV_TEXT.encode(encoding))
    assert table.sheet == "csv"
    assert table.header["provider_number"] == "10001234"
    assert table.headings[0] == "ULN"  # no byte order mark stuck to the first heading
    assert table.heading_row == 4
    assert [r.number for r in table.rows] == [5, 7]
    first, second = table.rows
    assert first.get(table, "family_name") == "Müller"
    assert first.get(table, "first_name") == "Zoë"
    assert first.get(table, "address") == "Flat 1, 2 Café Row"
    assert first.get(table, "uln") == "9276308686"
    assert second.get(table, "first_name") == "Siân"
    assert second.get(table, "family_name") == "O\u2019Brien"  # 0x92 in Windows-1252
    assert second.get(table, "leaver") == "X"


def test_csv_with_semicolons():
    text = "Family Name;First Name;DOB;Post Code\nSilva;Nia;25/05/2008;N1 1AA\n"
    table = read_return(text.encode())
    assert table.rows[0].values == ("Silva", "Nia", "25/05/2008", "N1 1AA")


def test_a_workbook_read_twice_gives_the_same_return(everyone):
    data = workbook("Example College", "10001234", [p.cells() for p in everyone])
    assert read_return(data) == read_return(data)


@pytest.mark.parametrize("data", [b"", None])
def test_empty_file(data):
    with pytest.raises(ReadError) as caught:
        read_return(data or b"")
    assert isinstance(caught.value, UnpackError)
    assert "empty" in caught.value.advice
    assert "send it again" in caught.value.advice


@pytest.mark.parametrize(
    "data",
    [
        xlsx(("Sheet1", [["Name", "Amount"], ["Widgets", 3]])),
        xlsx(("Instructions", [["Fill in the Return sheet"]])),
        b"name,amount\nwidgets,3\n",
        b"Family Name,Amount\nA,1\n",  # one heading is not a table
        b"\n\n\n",
    ],
    ids=["xlsx-other-table", "xlsx-instructions-only", "csv-other", "csv-one-heading", "csv-blank"],
)
def test_no_table(data):
    with pytest.raises(ReadError) as caught:
        read_return(data)
    advice = caught.value.advice
    for heading in ("Family Name", "First Name", "DOB", "Post Code"):
        assert heading in advice
    assert "template" in advice


def test_damaged_workbook():
    data = xlsx(("Return", [["Family Name", "First Name", "DOB", "Post Code"]]))
    with pytest.raises(ReadError) as caught:
        read_return(data[: len(data) // 2])
    assert ".xlsx" in caught.value.advice


def test_binary_that_is_not_a_spreadsheet():
    with pytest.raises(ReadError) as caught:
        read_return(b"\x00\x01\x02binary\x00" * 20)
    assert caught.value.advice


@settings(max_examples=50, deadline=None)
@given(st.lists(st.booleans(), min_size=1, max_size=12))
def test_row_numbers_follow_the_sheet_whatever_the_gaps(blank_pattern):
    rows: list[list[object]] = [["Family Name", "First Name", "DOB", "Post Code"]]
    expected = []
    for i, blank in enumerate(blank_pattern):
        if blank:
            rows.append([])
        else:
            rows.append([f"F{i}", f"G{i}", "01/01/2008", "N1 1AA"])
            expected.append(len(rows))
    if not expected:
        rows.append(["last", "row", "01/01/2008", "N1 1AA"])
        expected.append(len(rows))
    table = read_return(xlsx(("Return", rows)))
    assert [r.number for r in table.rows] == expected
    assert all(r.get(table, "family_name") == rows[r.number - 1][0] for r in table.rows)


# -- Odd and hostile files (tests/data/read/, made by make.py there) ----------------------------------------
READ_DATA = Path(__file__).resolve().parent / "data" / "read"
EXPECTED = json.loads((READ_DATA / "expected.json").read_text())
ROOT = Path(__file__).resolve().parent.parent
# Read in a child process with a 2 GiB address-space cap: before the limits, some of these made calamine
# abort the whole process (SIGABRT, no except runs) or take 7.5 GB, which must fail this test, not end the run.
CHILD = """
import json, resource, sys
resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
from gateway.errors import ReadError
from gateway.returns.read import MAX_CSV_REPAIRS, MAX_ROWS, MAX_SHEETS, read_return
try:
    table = read_return(open(sys.argv[1], "rb").read())
except ReadError as error:
    print(json.dumps({"refused": error.advice}))
else:
    print(json.dumps({"rows": len(table.rows), "sheet": table.sheet, "problems": [[p.rule, p.row] for p in table.problems]}))
"""


def read_in_child(path: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, str(path)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"reading {path.name} ended the process ({done.returncode}): {done.stderr[-500:]}"
    return json.loads(done.stdout)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_odd_and_hostile_files_get_their_answer(name):
    expected, started = EXPECTED[name], time.monotonic()
    got = read_in_child(READ_DATA / name)
    assert time.monotonic() - started < 20
    if "refused" in expected:
        assert "refused" in got, got
        assert expected["refused"] in got["refused"] and expected.get("also", "") in got["refused"]
        assert "send" in got["refused"]  # every refusal says what to do
    else:
        assert "refused" not in got, got
        assert (got["rows"], got["problems"]) == (expected["rows"], expected["problems"])
        assert got["sheet"] == expected.get("sheet", got["sheet"])


def test_the_golden_files_are_what_make_py_makes(tmp_path):
    spec = importlib.util.spec_from_file_location("make_read", READ_DATA / "make.py")
    make = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make)
    for name, (data, _) in make.CASES.items():
        assert (READ_DATA / name).read_bytes() == data, name
    for name, (text, _) in make.CSV_CASES.items():
        assert (READ_DATA / name).read_bytes() == text.encode(), name


def test_a_hidden_sheet_loses_to_a_visible_one():
    stale = [["Family Name", "First Name", "DOB", "Post Code"], ["Stale", "Old", "01/01/2007", "N1 1AA"]]
    real = [["Family Name", "First Name", "DOB", "Post Code"], ["Real", "New", "01/01/2008", "N7 6PA"], ["Two", "B", "02/02/2008", "N7 6PA"]]
    table = read_return(_book(("Last month", stale, "hidden"), ("This month", real, "visible")))
    assert table.sheet == "This month"
    assert [r.get(table, "family_name") for r in table.rows] == ["Real", "Two"]
    assert table.problems == ()


def test_a_visible_sheet_reaching_past_the_limits_after_the_table_is_refused():
    # Every visible sheet is read to choose the table, so each is held to the limits first: the one that
    # cannot be read may be the table itself (a nil return or a smaller sheet chosen would lose its rows).
    real = [["Family Name", "First Name", "DOB", "Post Code"], ["Real", "New", "01/01/2008", "N7 6PA"]]
    data = xlsx(("Return", real), ("Scratch", [["x"]]))
    big = _with_sheet_xml(data, "xl/worksheets/sheet2.xml", '<row r="1048576"><c r="XFD1048576" t="inlineStr"><is><t>x</t></is></c></row>')
    with pytest.raises(ReadError) as caught:
        read_return(big)
    assert "Sheet 2 of your workbook reaches row 1,048,576" in caught.value.advice


def test_too_many_sheets():
    data = xlsx(*((f"S{i}", [["x"]]) for i in range(MAX_SHEETS + 1)))
    with pytest.raises(ReadError) as caught:
        read_return(data)
    assert f"at most {MAX_SHEETS}" in caught.value.advice


def test_xlsb_is_refused_with_advice():
    data = xlsx(("Return", [["x"]]))
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(out, "w") as target:
        for item in source.infolist():
            target.writestr(item, source.read(item))
        target.writestr("xl/workbook.bin", b"\x00")
    with pytest.raises(ReadError) as caught:
        read_return(out.getvalue())
    assert ".xlsb" in caught.value.advice and ".xlsx" in caught.value.advice


def test_a_large_return_still_reads_and_its_formulas_are_found():
    rows = [["Family Name", "First Name", "DOB", "Post Code"]] + [[f"F{i}", "G", "01/01/2008", "N1 1AA"] for i in range(20000)]
    data = xlsx(("Return", rows))
    formula = _with_sheet_xml(data, "xl/worksheets/sheet1.xml", '<row r="20002"><c r="A20002"><f>UPPER("x")</f><v>X</v></c>'
                                                                   '<c r="B20002" t="inlineStr"><is><t>G</t></is></c><c r="C20002" t="inlineStr">'
                                                                   '<is><t>01/01/2008</t></is></c></row>')
    started = time.monotonic()
    assert len(read_return(data).rows) == 20000
    table = read_return(formula)
    assert time.monotonic() - started < 30
    assert len(table.rows) == 20001 and dict(table.formulas) == {(20002, 0): True}


def test_csv_stray_quote_never_loses_a_row_or_raises():
    lines = ["Family Name,First Name,DOB,Post Code"] + [f"F{i},G{i},01/01/2008,N1 1AA" for i in range(40)]
    lines[3] = 'F2,"G2,01/01/2008,N1 1AA'  # opened, never closed: swallowed every row after it before
    table = read_return("\n".join(lines).encode())
    assert [r.get(table, "family_name") for r in table.rows] == [f"F{i}" for i in range(40)]
    assert [(p.rule, p.row) for p in table.problems] == [("Csv_01", 4)]
    assert table.rows[2].get(table, "first_name") == '"G2'  # the quote mark kept as text, the row whole


def test_csv_field_over_the_csv_modules_limit_is_a_held_row_not_an_error():
    lines = ["Family Name,First Name,DOB,Post Code", "A,B,01/01/2008,N1 1AA", 'C,"' + "x" * 200_000 + '",01/01/2008,N1 1AA',
             "E,F,01/01/2008,N1 1AA"]
    table = read_return("\n".join(lines).encode())
    assert [r.get(table, "family_name") for r in table.rows] == ["A", "E"]
    assert [(p.rule, p.row) for p in table.problems] == [("Csv_02", 3)]


def test_csv_with_more_than_the_row_limit_is_refused():
    data = ("Family Name,First Name,DOB,Post Code\n" + "A,B,01/01/2008,N1 1AA\n" * (MAX_ROWS + 1)).encode()
    with pytest.raises(ReadError) as caught:
        read_return(data)
    assert "split it into parts" in caught.value.advice


def test_csv_with_unclosed_quotes_everywhere_is_refused():
    data = ("Family Name,First Name,DOB,Post Code\n" + '"A,B,01/01/2008,N1 1AA\n' * (MAX_CSV_REPAIRS + 5)).encode()
    with pytest.raises(ReadError) as caught:
        read_return(data)
    assert "quote mark" in caught.value.advice and ".xlsx" in caught.value.advice


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(alphabet='ab ,"\n\r;\t', max_size=12), min_size=0, max_size=8))
def test_csv_read_raises_nothing_but_read_error(cells):
    text = "Family Name,First Name,DOB,Post Code\n" + "\n".join(f"{c},x,01/01/2008,N1 1AA" for c in cells)
    try:
        read_return(text.encode())
    except ReadError:
        pass


def _with_sheet_xml(data: bytes, part: str, rows: str) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for item in source.infolist():
            content = source.read(item)
            if item.filename == part:
                content = content.replace(b"</sheetData>", rows.encode() + b"</sheetData>")
            target.writestr(item, content)
    return out.getvalue()


def test_a_shared_strings_table_claiming_a_billion_strings_is_refused_before_calamine_opens_it(tmp_path):
    """calamine reserves room for every string `uniqueCount` claims as it opens the workbook: 999,999,999
    of them is a 24 GB allocation and an abort. The claim is held to what the part can hold."""
    import io
    import zipfile

    import xlsxwriter

    out = io.BytesIO()
    book = xlsxwriter.Workbook(out, {"in_memory": True})
    sheet = book.add_worksheet("Return")
    for column, heading in enumerate(["ULN", "Family Name", "First Name", "DOB", "Post Code"]):
        sheet.write_string(0, column, heading)
    book.close()
    honest = out.getvalue()
    assert read_return(honest).headings[:2] == ("ULN", "Family Name")  # shared strings as Excel writes them
    lying = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(honest)) as source, zipfile.ZipFile(lying, "w") as target:
        for info in source.infolist():
            body = source.read(info.filename)
            if info.filename == "xl/sharedStrings.xml":
                body, count = re.subn(rb'uniqueCount="[0-9]+"', b'uniqueCount="999999999"', body)
                assert count == 1
            target.writestr(info, body)
    with pytest.raises(ReadError) as caught:
        read_return(lying.getvalue())  # in this process: an abort would end the test run
    assert ".xlsx" in caught.value.advice


# -- the table chosen by its data, not by being first (issue 10, item 3) ----------------------------------
HEADINGS_ROW = ["Family Name", "First Name", "DOB", "Post Code", "Leaver"]


def _book(*sheets: tuple[str, list[list[object]], str]) -> bytes:
    book = openpyxl.Workbook()
    book.remove(book.active)
    for title, rows, state in sheets:
        sheet = book.create_sheet(title)
        sheet.sheet_state = state
        for row in rows:
            sheet.append(row)
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


def _people(count: int) -> list[list[object]]:
    return [[f"Family{n}", f"First{n}", "01/02/2008", "N7 6PA", "X"] for n in range(count)]


def test_an_instructions_row_naming_three_headings_loses_to_the_real_table_after_it():
    instructions = [["How to fill in this return"], ["Columns to fill in:", "Surname", "Forename", "Postcode"],
                    ["Tick one of Joiner, Leaver or At risk on each row."], ["Send it encrypted to the gateway."]]
    table = read_return(xlsx(("Instructions", instructions), ("Return", [HEADINGS_ROW, *_people(33)])))
    assert table.sheet == "Return"
    assert len(table.rows) == 33 and table.rows[0].number == 2
    assert table.problems == ()


def test_of_two_visible_tables_the_one_with_more_fields_and_people_wins_wherever_it_stands():
    lookup = [["Surname", "Forename", "Postcode"], ["Smith", "", "N1 1AA"], ["Jones", "", "N7 6PA"]]  # fewer fields
    example = [HEADINGS_ROW, *_people(1)]  # the same headings, one example row
    real = [HEADINGS_ROW, *_people(5)]
    for order in ((lookup, example, real), (real, lookup, example), (example, real, lookup)):
        names = {id(lookup): "Lookup", id(example): "Example", id(real): "Return"}
        table = read_return(xlsx(*((names[id(rows)], rows) for rows in order)))
        assert table.sheet == "Return" and len(table.rows) == 5


def test_headings_with_no_rows_under_them_are_a_nil_return_even_beside_a_hidden_table():
    stale = [HEADINGS_ROW, *_people(4)]
    data = _book(("Instructions", [["Columns: Surname, Forename, Postcode"]], "visible"),
                 ("Last month", stale, "hidden"), ("Return", [HEADINGS_ROW], "visible"))
    table = read_return(data)
    assert (table.sheet, table.rows, table.problems) == ("Return", (), ())


def test_a_hidden_table_is_read_only_when_no_visible_sheet_holds_one_and_is_flagged():
    data = _book(("Instructions", [["Fill in the Return sheet"]], "visible"),
                 ("Return", [HEADINGS_ROW, *_people(3)], "hidden"))
    table = read_return(data)
    assert table.sheet == "Return" and len(table.rows) == 3
    assert [p.rule for p in table.problems] == ["File_03"]


def test_a_hidden_sheet_past_the_limits_does_not_matter_when_a_visible_sheet_holds_the_table():
    data = _book(("Return", [HEADINGS_ROW, *_people(2)], "visible"), ("Scratch", [["x"]], "hidden"))
    big = _with_sheet_xml(data, "xl/worksheets/sheet2.xml", '<row r="1048576"><c r="XFD1048576" t="inlineStr"><is><t>x</t></is></c></row>')
    table = read_return(big)
    assert table.sheet == "Return" and len(table.rows) == 2
