"""Borough sheets: the provider's headings plus four added columns, in xlsx and csv; formulas stay text."""

from __future__ import annotations

import csv
import io
import zipfile
from datetime import date, datetime, timezone

import openpyxl
import pytest

from gateway.pack import ADDED_HEADINGS, Source, sheet_bytes
from gateway.read import read_return
from gateway.route import Batch, route
from gateway.rules import Borough, Provider, Rules
from gateway.sample import TABLE_HEADINGS, people, with_changes, workbook
from gateway.validate import validate

TODAY = date(2025, 11, 17)
PROVIDER = Provider("10001234", "Example College", ("mis@example-college.example",))
SOURCE = Source(PROVIDER, "LDOR-20251117-ABCDEF0123", datetime(2025, 11, 17, 9, 30, tzinfo=timezone.utc))
ISLINGTON = Borough("E09000019", "Islington", ("ldor@islington.example",))
CAMDEN = Borough("E09000007", "Camden", ("ldor@camden.example",), "csv")
RULES = Rules({b.code: b for b in (ISLINGTON, CAMDEN)}, {PROVIDER.ukprn: PROVIDER})
HEADINGS = [*TABLE_HEADINGS, *ADDED_HEADINGS]
DANGEROUS = ["=HYPERLINK(\"http://evil.example\",\"click\")", "+44 7700 900123", "-2+3", "@SUM(A1:A2)"]


@pytest.fixture(scope="module")
def routed(directory):
    base = people(directory, {"E09000019": 3, "E09000007": 2}, today=TODAY)
    rows = [
        with_changes(base[0], address=DANGEROUS[0]),
        with_changes(base[1], family_name=DANGEROUS[3], destination=DANGEROUS[2]),
        with_changes(base[2], phone=DANGEROUS[1]),
        base[3],
        with_changes(base[4], first_name="=1+1"),
    ]
    table = read_return(return_with_text_cells([p.cells() for p in rows]))
    checked = validate(table, PROVIDER, today=TODAY)
    assert len(checked.accepted) == 5
    result = route(table, checked.accepted, RULES, directory)
    batches = {batch.borough.code: batch for batch in result.batches}
    return table, rows, batches


def return_with_text_cells(rows: list[list[object]]) -> bytes:
    """A return as Excel saves one where a cell was typed with a leading apostrophe: "=..." is text, not a formula."""
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(list(TABLE_HEADINGS))
    for number, values in enumerate(rows, start=2):
        for column, value in enumerate(values, start=1):
            cell = sheet.cell(number, column, value)
            if isinstance(value, str):
                cell.data_type = "s"
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


def load_xlsx(data: bytes):
    return openpyxl.load_workbook(io.BytesIO(data)).worksheets[0]


def load_csv(data: bytes) -> list[list[str]]:
    assert data.startswith(b"\xef\xbb\xbf")
    return list(csv.reader(io.StringIO(data.decode("utf-8-sig"))))


def test_the_added_columns_are_the_spec_ones():
    assert ADDED_HEADINGS[:4] == ("Provider Name", "Provider UKPRN", "Date Received", "Notification Reason")


def test_xlsx_headings_and_rows(routed):
    table, rows, batches = routed
    sheet = load_xlsx(sheet_bytes(table, batches["E09000019"], SOURCE, "xlsx"))
    assert sheet.title == "Islington"
    values = [list(r) for r in sheet.iter_rows(values_only=True)]
    assert values[0] == HEADINGS
    assert len(values) == 1 + 3
    first = dict(zip(HEADINGS, values[1]))
    assert first["Family Name"] == rows[0].family_name
    assert first["Post Code"] == rows[0].postcode
    assert first["Provider Name"] == "Example College"
    assert first["Provider UKPRN"] == "10001234"
    assert first["Date Received"].date() == date(2025, 11, 17)
    assert first["Notification Reason"] == rows[0].reason
    assert first["DOB"].date() == rows[0].dob
    assert str(first["ULN"]) == rows[0].uln
    assert [dict(zip(HEADINGS, v))["Notification Reason"] for v in values[1:]] == [p.reason for p in rows[:3]]


def test_xlsx_holds_only_the_borough_rows(routed):
    table, rows, batches = routed
    sheet = load_xlsx(sheet_bytes(table, batches["E09000007"], SOURCE, "xlsx"))
    families = [r[1] for r in sheet.iter_rows(min_row=2, values_only=True)]
    assert families == [rows[3].family_name, rows[4].family_name]


def test_xlsx_formulas_stay_text(routed):
    table, rows, batches = routed
    data = sheet_bytes(table, batches["E09000019"], SOURCE, "xlsx")
    sheet = load_xlsx(data)
    cells = {cell.value: cell for row in sheet.iter_rows(min_row=2) for cell in row if isinstance(cell.value, str)}
    for text in DANGEROUS:
        assert text in cells, text
        assert cells[text].data_type == "s", text
    assert all(cell.data_type != "f" for row in sheet.iter_rows() for cell in row)
    archive = zipfile.ZipFile(io.BytesIO(data))
    sheets = [archive.read(name) for name in archive.namelist() if name.startswith("xl/worksheets/")]
    assert sheets and not any(b"<f>" in xml for xml in sheets)


def test_csv_headings_rows_and_quoted_formulas(routed):
    table, rows, batches = routed
    lines = load_csv(sheet_bytes(table, batches["E09000019"], SOURCE, "csv"))
    assert lines[0] == HEADINGS
    assert len(lines) == 4
    first, second, third = (dict(zip(HEADINGS, line)) for line in lines[1:])
    assert first["Address"] == "'" + DANGEROUS[0]
    assert second["Family Name"] == "'" + DANGEROUS[3]
    assert second["Destination if known"] == "'" + DANGEROUS[2]
    assert third["phone number"] == "'" + DANGEROUS[1]
    assert first["Family Name"] == rows[0].family_name  # ordinary text untouched
    assert first["DOB"] == rows[0].dob.strftime("%d/%m/%Y")
    assert first["Date Received"] == "17/11/2025"
    assert first["Provider UKPRN"] == "10001234"
    assert first["Provider Name"] == "Example College"
    assert first["Notification Reason"] == rows[0].reason
    assert first["ULN"] == rows[0].uln


def test_csv_for_the_other_borough(routed):
    table, rows, batches = routed
    lines = load_csv(sheet_bytes(table, batches["E09000007"], SOURCE, "csv"))
    assert [line[2] for line in lines[1:]] == [rows[3].first_name, "'=1+1"]


@pytest.mark.parametrize("fmt", ["xlsx", "csv"])
def test_accents_survive(fmt, directory):
    person = with_changes(people(directory, {"E09000019": 1}, today=TODAY)[0], family_name="Ní Bhriain", first_name="Zoë")
    table = read_return(workbook("Example College", "10001234", [person.cells()]))
    checked = validate(table, PROVIDER, today=TODAY)
    data = sheet_bytes(table, Batch(ISLINGTON, checked.accepted), SOURCE, fmt)
    values = [list(r) for r in load_xlsx(data).iter_rows(values_only=True)] if fmt == "xlsx" else load_csv(data)
    assert values[1][1:3] == ["Ní Bhriain", "Zoë"]


@pytest.mark.parametrize("fmt", ["xlsx", "csv"])
def test_a_control_character_in_a_cell_does_not_stop_the_package(fmt):
    # Some MIS exports (FileMaker) put a vertical tab inside a cell for a line break.
    text = ("Family Name,First Name,DOB,Address,Post Code,Reason\r\n"
            "Okafor,Femi,25/05/2008,Flat 2\x0b10 Upper Street,N1 1AA,Joiner\r\n")
    table = read_return(text.encode())
    checked = validate(table, PROVIDER, today=TODAY)
    assert len(checked.accepted) == 1
    data = sheet_bytes(table, Batch(ISLINGTON, checked.accepted), SOURCE, fmt)
    values = [list(r) for r in load_xlsx(data).iter_rows(values_only=True)] if fmt == "xlsx" else load_csv(data)
    assert values[1][0] == "Okafor"
    assert "Upper Street" in values[1][3]


# -- issue 9: one guard for headings, sheet names and cells; packages built in memory ----------------
EVIL_HEADING = '=HYPERLINK("http://evil.example/x","Account locked")'


def return_with_a_hostile_heading(directory, fmt: str):
    """A return whose extra column is headed by a formula: what the provider controls besides the cells."""
    person = people(directory, {"E09000019": 1}, today=TODAY)[0]
    text = ("ULN,Family Name,First Name,DOB,Address,Post Code,Reason,{}\r\n"
            "{},{},{},{},{},{},{},note\r\n").format(
        '"' + EVIL_HEADING.replace('"', '""') + '"', person.uln, person.family_name, person.first_name,
        person.dob.strftime("%d/%m/%Y"), person.address, person.postcode, person.reason)
    table = read_return(text.encode())
    checked = validate(table, PROVIDER, today=TODAY)
    assert len(checked.accepted) == 1
    return sheet_bytes(table, Batch(ISLINGTON, checked.accepted), SOURCE, fmt)


def test_a_formula_heading_stays_text_in_a_csv_package(directory):
    heading = load_csv(return_with_a_hostile_heading(directory, "csv"))[0]
    assert "'" + EVIL_HEADING in heading
    assert not any(h.startswith(("=", "+", "-", "@")) for h in heading)


def test_a_formula_heading_stays_text_in_an_xlsx_package(directory):
    data = return_with_a_hostile_heading(directory, "xlsx")
    sheet = load_xlsx(data)
    headings = {cell.value: cell for cell in sheet[1]}
    assert headings[EVIL_HEADING].data_type == "s"
    assert headings[EVIL_HEADING].font.b
    archive = zipfile.ZipFile(io.BytesIO(data))
    xml = b"".join(archive.read(n) for n in archive.namelist() if n.startswith("xl/worksheets/"))
    assert b"<f>" not in xml and b"<hyperlink" not in xml


@pytest.mark.parametrize("name, shown", [
    ("Islington", "Islington"), ("Barking/Dagenham [East]: *?", "Barking Dagenham  East"),
    ("'quoted'", "quoted"), ("History", "Notifications"), ("", "Notifications"),
    ("A very long borough name that Excel would refuse", "A very long borough name that E"),
])
def test_sheet_names_pass_the_guard(name, shown, directory):
    person = people(directory, {"E09000019": 1}, today=TODAY)[0]
    table = read_return(workbook("Example College", "10001234", [person.cells()]))
    checked = validate(table, PROVIDER, today=TODAY)
    borough = Borough("E09000019", name, ("ldor@islington.example",))
    assert load_xlsx(sheet_bytes(table, Batch(borough, checked.accepted), SOURCE, "xlsx")).title == shown


def test_the_xlsx_layout(routed):
    """Bold headings, the heading row frozen, dates as dates shown day/month/year, ULNs as text."""
    table, rows, batches = routed
    sheet = load_xlsx(sheet_bytes(table, batches["E09000019"], SOURCE, "xlsx"))
    assert sheet.freeze_panes == "A2"
    assert all(cell.font.b for cell in sheet[1])
    row = {heading: cell for heading, cell in zip(HEADINGS, sheet[2])}
    assert row["DOB"].is_date and row["DOB"].number_format == "DD/MM/YYYY"
    assert row["Date Received"].is_date and row["Date Received"].number_format == "DD/MM/YYYY"
    assert row["ULN"].data_type == "s" and row["ULN"].value == rows[0].uln


def test_an_xlsx_package_touches_no_file(routed, tmp_path, monkeypatch):
    """Nothing is written to the temp folder while a package is built: openpyxl wrote each sheet there."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    table, rows, batches = routed
    created = []

    def watch(event, args):
        if event == "open" and str(args[0]).startswith(str(tmp_path)):
            created.append(args[0])

    from leakwatch import audit_hook

    with audit_hook(watch):
        sheet_bytes(table, batches["E09000019"], SOURCE, "xlsx")
    assert created == [] and list(tmp_path.iterdir()) == []


# -- issue 10: a ULN failing its check never reaches the borough, not even through a held copy ------
@pytest.mark.parametrize("fmt", ["xlsx", "csv"])
@pytest.mark.parametrize("uln", ["9276308687", 1000000063])  # typed as text, and stored as a number
def test_a_uln_failing_its_check_leaves_the_package_cell_empty(fmt, uln, directory):
    from gateway.held import _decode, _encode  # what a package held for want of a key keeps, and rebuilds

    good, bad = people(directory, {"E09000019": 2}, today=TODAY)
    table = read_return(workbook("Example College", "10001234", [good.cells(), with_changes(bad, uln=uln).cells()]))
    checked = validate(table, PROVIDER, today=TODAY)
    assert [f.rule for f in checked.findings] == ["ULN_04"]
    batch = Batch(ISLINGTON, checked.accepted)
    for table_used, batch_used in ((table, batch), _decode(_encode(table, batch), ISLINGTON)):
        data = sheet_bytes(table_used, batch_used, SOURCE, fmt)
        values = [list(r) for r in load_xlsx(data).iter_rows(values_only=True)] if fmt == "xlsx" else load_csv(data)
        assert [v[0] or "" for v in values[1:]] == [good.uln, ""]
        assert values[2][1:3] == [bad.family_name, bad.first_name]  # the row itself is forwarded
        assert str(uln).encode() not in data
