"""Borough packages: one layout whatever the provider sent, in xlsx and csv; formulas stay text;
the provider's own columns left out unless the borough asks; the covering note counts, never names."""

from __future__ import annotations

import csv
import io
import zipfile
from datetime import UTC, date, datetime

import openpyxl
import pytest

from gateway import rules as rules_module
from gateway.delivery.kept import (  # what a package held for want of a key keeps, and rebuilds
    decode,
    encode,
)
from gateway.delivery.pack import (
    HEADINGS,
    LAYOUT_VERSION,
    Source,
    package_message,
    sheet_bytes,
)
from gateway.demo.sample import TABLE_HEADINGS, people, with_changes, workbook
from gateway.reference.ccis import CODES
from gateway.returns.read import read_return
from gateway.returns.route import Batch, route
from gateway.returns.validate import validate
from gateway.rules import Borough, Provider, Rules

TODAY = date(2025, 11, 17)
PROVIDER = Provider("10001234", "Example College", ("mis@example-college.example",), host_la="E09000019")
SOURCE = Source(PROVIDER, "LDOR-20251117-ABCDEF0123", datetime(2025, 11, 17, 9, 30, tzinfo=UTC))
ISLINGTON = Borough("E09000019", "Islington", ("ldor@islington.example",))
ISLINGTON_ALL = Borough("E09000019", "Islington", ("ldor@islington.example",), extra_columns=True)
CAMDEN = Borough("E09000007", "Camden", ("ldor@camden.example",), "csv")
RULES = Rules({b.code: b for b in (ISLINGTON, CAMDEN)}, {PROVIDER.ukprn: PROVIDER})
DANGEROUS = ["=HYPERLINK(\"http://evil.example\",\"click\")", "+44 7700 900123", "-2+3", "@SUM(A1:A2)"]
SPEC = (  # shared/RETURN-SPEC.md, "Packages", in its order
    "Gateway Reference", "Source Row", "Provider UKPRN", "Provider Name", "Date Received", "Notification",
    "ULN", "Family Name", "First Name", "DOB", "Address", "Post Code", "Home Authority Code", "Home Authority",
    "Routed By", "Contact e-mail", "Phone", "Destination Code", "Destination", "Data Quality",
)


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


def records(data: bytes, fmt: str) -> list[dict[str, object]]:
    """A package's rows, each by its headings (the heading row checked to be the layout's)."""
    values = [list(r) for r in load_xlsx(data).iter_rows(values_only=True)] if fmt == "xlsx" else load_csv(data)
    assert tuple(values[0][:len(HEADINGS)]) == HEADINGS
    return [dict(zip(values[0], row, strict=False)) for row in values[1:]]


def test_the_layout_is_the_spec_one():
    assert HEADINGS == SPEC
    assert LAYOUT_VERSION == "LDOR package v2"


def test_xlsx_headings_and_rows(routed, directory):
    table, rows, batches = routed
    sheet = load_xlsx(sheet_bytes(table, batches["E09000019"], SOURCE, "xlsx"))
    assert sheet.title == "Islington"
    values = [list(r) for r in sheet.iter_rows(values_only=True)]
    assert tuple(values[0]) == HEADINGS
    assert len(values) == 1 + 3
    first = dict(zip(HEADINGS, values[1], strict=False))
    assert first["Gateway Reference"] == SOURCE.reference
    assert first["Source Row"] == 2
    assert first["Family Name"] == rows[0].family_name
    assert first["Post Code"] == rows[0].postcode
    assert first["Provider Name"] == "Example College"
    assert first["Provider UKPRN"] == "10001234"
    assert first["Date Received"].date() == date(2025, 11, 17)
    assert first["Notification"] == rows[0].reason
    assert first["DOB"].date() == rows[0].dob
    assert first["ULN"] == rows[0].uln
    assert (first["Home Authority Code"], first["Home Authority"], first["Routed By"]) == ("E09000019", "Islington", "postcode")
    assert first["Contact e-mail"] == rows[0].email
    assert (first["Destination Code"], first["Destination"]) == ("540", CODES["540"])
    assert [dict(zip(HEADINGS, v, strict=False))["Notification"] for v in values[1:]] == [p.reason for p in rows[:3]]
    assert [dict(zip(HEADINGS, v, strict=False))["Source Row"] for v in values[1:]] == [2, 3, 4]


def test_xlsx_holds_only_the_borough_rows(routed):
    table, rows, batches = routed
    found = records(sheet_bytes(table, batches["E09000007"], SOURCE, "xlsx"), "xlsx")
    assert [r["Family Name"] for r in found] == [rows[3].family_name, rows[4].family_name]


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
    assert tuple(lines[0]) == HEADINGS
    assert len(lines) == 4
    first, second, third = (dict(zip(HEADINGS, line, strict=False)) for line in lines[1:])
    assert first["Address"] == "'" + DANGEROUS[0]
    assert second["Family Name"] == "'" + DANGEROUS[3]
    assert second["Destination"] == "'" + DANGEROUS[2] and second["Destination Code"] == ""
    assert third["Phone"] == "'" + DANGEROUS[1]
    assert first["Family Name"] == rows[0].family_name  # ordinary text untouched
    assert first["DOB"] == rows[0].dob.isoformat()  # ISO dates: no day/month guessing on import
    assert first["Date Received"] == "2025-11-17"
    assert first["Gateway Reference"] == SOURCE.reference and first["Source Row"] == "2"
    assert first["Provider UKPRN"] == "10001234"
    assert first["Provider Name"] == "Example College"
    assert first["Notification"] == rows[0].reason
    assert first["ULN"] == rows[0].uln
    assert (first["Destination Code"], first["Destination"]) == ("540", CODES["540"])


def test_csv_for_the_other_borough(routed):
    table, rows, batches = routed
    found = records(sheet_bytes(table, batches["E09000007"], SOURCE, "csv"), "csv")
    assert [r["First Name"] for r in found] == [rows[3].first_name, "'=1+1"]


@pytest.mark.parametrize("fmt", ["xlsx", "csv"])
def test_accents_survive(fmt, directory):
    person = with_changes(people(directory, {"E09000019": 1}, today=TODAY)[0], family_name="Ní Bhriain", first_name="Zoë")
    table = read_return(workbook("Example College", "10001234", [person.cells()]))
    checked = validate(table, PROVIDER, today=TODAY)
    found, = records(sheet_bytes(table, Batch(ISLINGTON, checked.accepted), SOURCE, fmt), fmt)
    assert (found["Family Name"], found["First Name"]) == ("Ní Bhriain", "Zoë")


@pytest.mark.parametrize("fmt", ["xlsx", "csv"])
def test_a_control_character_in_a_cell_does_not_stop_the_package(fmt):
    # Some MIS exports (FileMaker) put a vertical tab inside a cell for a line break.
    text = ("Family Name,First Name,DOB,Address,Post Code,Reason\r\n"
            "Okafor,Femi,25/05/2008,Flat 2\x0b10 Upper Street,N1 1AA,Joiner\r\n")
    table = read_return(text.encode())
    checked = validate(table, PROVIDER, today=TODAY)
    assert len(checked.accepted) == 1
    found, = records(sheet_bytes(table, Batch(ISLINGTON, checked.accepted), SOURCE, fmt), fmt)
    assert found["Family Name"] == "Okafor"
    assert "Upper Street" in found["Address"]


# -- issue 9: one guard for headings, sheet names and cells; packages built in memory ----------------
EVIL_HEADING = '=HYPERLINK("http://evil.example/x","Account locked")'


def return_with_a_hostile_heading(directory, fmt: str):
    """A return whose extra column is headed by a formula: what the provider controls besides the cells,
    forwarded to a borough that asks for the provider's own columns."""
    person = people(directory, {"E09000019": 1}, today=TODAY)[0]
    text = ("ULN,Family Name,First Name,DOB,Address,Post Code,Reason,{}\r\n"
            "{},{},{},{},{},{},{},note\r\n").format(
        '"' + EVIL_HEADING.replace('"', '""') + '"', person.uln, person.family_name, person.first_name,
        person.dob.strftime("%d/%m/%Y"), person.address, person.postcode, person.reason)
    table = read_return(text.encode())
    checked = validate(table, PROVIDER, today=TODAY)
    assert len(checked.accepted) == 1
    return sheet_bytes(table, Batch(ISLINGTON_ALL, checked.accepted), SOURCE, fmt)


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
    """Bold headings, the heading row frozen, dates as dates shown day/month/year, codes and ULNs as text,
    columns as wide as their contents."""
    table, rows, batches = routed
    sheet = load_xlsx(sheet_bytes(table, batches["E09000019"], SOURCE, "xlsx"))
    assert sheet.freeze_panes == "A2"
    assert all(cell.font.b for cell in sheet[1])
    row = {heading: cell for heading, cell in zip(HEADINGS, sheet[2], strict=False)}
    assert row["DOB"].is_date and row["DOB"].number_format == "DD/MM/YYYY"
    assert row["Date Received"].is_date and row["Date Received"].number_format == "DD/MM/YYYY"
    for heading in ("ULN", "Provider UKPRN", "Post Code", "Home Authority Code", "Destination Code", "Phone"):
        assert row[heading].data_type == "s", heading
    assert row["ULN"].value == rows[0].uln
    assert row["Source Row"].data_type == "n"
    # Excel stores a width in characters plus a little padding (XlsxWriter adds it): the whole characters count.
    widths = {sheet.cell(1, i + 1).value: int(sheet.column_dimensions[openpyxl.utils.get_column_letter(i + 1)].width)
              for i in range(len(HEADINGS))}
    assert widths["Source Row"] == len("Source Row") + 2
    assert widths["Gateway Reference"] == len(SOURCE.reference) + 2
    assert widths["Address"] == max(len(DANGEROUS[0]), len(rows[1].address), len(rows[2].address)) + 2
    assert max(widths.values()) <= 62


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
    good, bad = people(directory, {"E09000019": 2}, today=TODAY)
    table = read_return(workbook("Example College", "10001234", [good.cells(), with_changes(bad, uln=uln).cells()]))
    checked = validate(table, PROVIDER, today=TODAY)
    assert [f.rule for f in checked.findings] == ["ULN_04"]
    batch = Batch(ISLINGTON, checked.accepted)
    decoded, decoded_batch, _ = decode(encode(table, batch, SOURCE), ISLINGTON)
    for table_used, batch_used in ((table, batch), (decoded, decoded_batch)):
        data = sheet_bytes(table_used, batch_used, SOURCE, fmt)
        found = records(data, fmt)
        assert [r["ULN"] or "" for r in found] == [good.uln, ""]
        assert (found[1]["Family Name"], found[1]["First Name"]) == (bad.family_name, bad.first_name)  # forwarded
        assert found[1]["Data Quality"] == "ULN_04 the provider's ULN failed the check digit, so it was left out"
        assert not found[0]["Data Quality"]
        assert str(uln).encode() not in data


# -- issue 11: one layout for every borough, whatever the provider's file looked like ------------------
NOTE = "Tutor says: ring mum after 6pm"
TUTOR = "T-Group 7B"


def own_csv(persons, dob_text: str = "31/01/2008") -> bytes:
    """A provider's own export: other headings, one Reason column, dates typed as text, two columns of their own."""
    lines = ["ULN,Surname,Forename,Date of Birth,Address,Postcode,Reason,Tutor Group,Notes"]
    for p in persons:
        lines.append(f"{p.uln},{p.family_name},{p.first_name},{dob_text},{p.address},{p.postcode},{p.reason},{TUTOR},{NOTE}")
    return ("\r\n".join(lines) + "\r\n").encode()


def packaged(data: bytes, fmt: str, borough: Borough = ISLINGTON, directory=None) -> tuple[bytes, object]:
    table = read_return(data)
    checked = validate(table, PROVIDER, today=TODAY)
    rules = Rules({borough.code: borough, CAMDEN.code: CAMDEN}, {PROVIDER.ukprn: PROVIDER})
    batch, = [b for b in route(table, checked.accepted, rules, directory, PROVIDER).batches if b.borough.code == borough.code]
    return sheet_bytes(table, batch, SOURCE, fmt), table


def every_text(data: bytes, fmt: str) -> str:
    if fmt == "csv":
        return data.decode("utf-8-sig")
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return " ".join(archive.read(name).decode("utf-8") for name in archive.namelist())


@pytest.mark.parametrize("fmt", ["xlsx", "csv"])
def test_two_providers_with_different_layouts_give_one_layout(fmt, directory):
    first, second = people(directory, {"E09000019": 2}, today=TODAY)
    template, _ = packaged(workbook("Example College", "10001234", [first.cells()]), fmt, directory=directory)
    own, table = packaged(own_csv([second]), fmt, directory=directory)
    assert table.other_headings() == ("Tutor Group", "Notes")
    from_template, from_own = records(template, fmt), records(own, fmt)
    assert list(from_template[0]) == list(from_own[0]) == list(HEADINGS)  # the same heading row, nothing after it
    for found, person, row in ((from_template[0], first, 9), (from_own[0], second, 2)):
        assert found["Gateway Reference"] == SOURCE.reference
        assert str(found["Source Row"]) == str(row)
        assert (found["Family Name"], found["First Name"], found["Notification"]) == (
            person.family_name, person.first_name, person.reason)
        assert found["ULN"] == person.uln
    # The provider's own columns reach no one: neither their headings nor what they hold.
    text = every_text(own, fmt)
    assert NOTE not in text and TUTOR not in text and "Tutor Group" not in text and "Notes" not in text


def test_a_dob_typed_as_text_becomes_a_date_cell(directory):
    person = people(directory, {"E09000019": 1}, today=TODAY)[0]
    data, _ = packaged(own_csv([person], dob_text="31/01/2008"), "xlsx", directory=directory)
    sheet = load_xlsx(data)
    row = dict(zip(HEADINGS, sheet[2], strict=False))
    assert row["DOB"].is_date and row["DOB"].number_format == "DD/MM/YYYY"
    assert row["DOB"].value.date() == date(2008, 1, 31)  # day first, as every UK date
    assert row["ULN"].data_type == "s" and row["ULN"].value == person.uln
    csv_data, _ = packaged(own_csv([person], dob_text="31/01/2008"), "csv", directory=directory)
    assert records(csv_data, "csv")[0]["DOB"] == "2008-01-31"


@pytest.mark.parametrize("fmt", ["xlsx", "csv"])
def test_a_dob_that_is_no_date_stays_as_the_provider_wrote_it(fmt, directory):
    person = people(directory, {"E09000019": 1}, today=TODAY)[0]
    data, _ = packaged(own_csv([person], dob_text="about 2008"), fmt, directory=directory)
    found, = records(data, fmt)
    assert found["DOB"] == "about 2008"
    assert "DOB_02" in found["Data Quality"]


def test_a_uln_typed_as_a_number_is_text_in_the_package(directory):
    person = people(directory, {"E09000019": 1}, today=TODAY)[0]
    data, _ = packaged(workbook("Example College", "10001234", [with_changes(person, uln=int(person.uln)).cells()]),
                       "xlsx", directory=directory)
    cell = dict(zip(HEADINGS, load_xlsx(data)[2], strict=False))["ULN"]
    assert cell.data_type == "s" and cell.value == person.uln


@pytest.mark.parametrize("fmt", ["xlsx", "csv"])
def test_a_row_without_a_postcode_goes_to_the_providers_authority_marked_so(fmt, directory):
    person = with_changes(people(directory, {"E09000007": 1}, today=TODAY)[0], postcode="")
    data, _ = packaged(workbook("Example College", "10001234", [person.cells()]), fmt, directory=directory)
    found, = records(data, fmt)
    assert found["Family Name"] == person.family_name
    assert (found["Home Authority Code"] or "", found["Home Authority"] or "", found["Post Code"] or "") == ("", "", "")
    assert found["Routed By"] == "provider's authority"
    assert "Postcode_01 home postcode unknown: sent to the authority the provider is in" in found["Data Quality"]


@pytest.mark.parametrize("fmt", ["xlsx", "csv"])
def test_a_borough_that_asks_for_the_providers_columns_gets_them_last(fmt, directory):
    person = people(directory, {"E09000019": 1}, today=TODAY)[0]
    data, _ = packaged(own_csv([person]), fmt, borough=ISLINGTON_ALL, directory=directory)
    values = [list(r) for r in load_xlsx(data).iter_rows(values_only=True)] if fmt == "xlsx" else load_csv(data)
    assert values[0] == [*HEADINGS, "Tutor Group", "Notes"]
    assert values[1][-2:] == [TUTOR, NOTE]


def test_extra_columns_is_read_from_boroughs_toml(tmp_path):
    (tmp_path / "boroughs.toml").write_text(
        '[E09000019]\nrecipients = ["ldor@islington.example"]\nextra_columns = true\n\n'
        '[E09000007]\nrecipients = ["ldor@camden.example"]\n\n'
        '[E09000012]\nrecipients = ["ldor@hackney.example"]\nextra_columns = "yes"\n')
    (tmp_path / "providers.toml").write_text('[10001234]\nname = "Example College"\nsenders = ["mis@example-college.example"]\n')
    found, problems = rules_module.check(tmp_path)
    assert found.boroughs["E09000019"].extra_columns and not found.boroughs["E09000007"].extra_columns
    problem, = problems
    assert problem.line == 10 and "extra_columns must be true or false" in problem.message


def test_a_destination_code_gets_its_label_and_free_text_stays_text(directory):
    first, second, third = people(directory, {"E09000019": 3}, today=TODAY)
    rows = [with_changes(first, destination="310"), with_changes(second, destination="College in Kent"),
            with_changes(third, destination="999")]
    data, _ = packaged(workbook("Example College", "10001234", [p.cells() for p in rows]), "csv", directory=directory)
    found = records(data, "csv")
    assert [(r["Destination Code"], r["Destination"]) for r in found] == [
        ("310", "Apprenticeship"), ("", "College in Kent"), ("", "999")]
    assert "Destination_01" in found[2]["Data Quality"]


def test_a_held_package_is_released_in_the_same_layout(directory):
    person, other = people(directory, {"E09000019": 2}, today=TODAY)
    source = Source(PROVIDER, SOURCE.reference, SOURCE.received, (("no name given", 2),))
    table = read_return(own_csv([person, with_changes(other, postcode="")]))
    checked = validate(table, PROVIDER, today=TODAY)
    batch, = route(table, checked.accepted, RULES, directory, PROVIDER).batches
    assert {item.routed_by for item in batch.rows} == {"postcode", "provider's authority"}
    decoded, again, held_back = decode(encode(table, batch, source), ISLINGTON)
    assert again == batch and held_back == source.held_back
    assert sheet_bytes(decoded, again, source, "csv") == sheet_bytes(table, batch, source, "csv")
    assert records(sheet_bytes(decoded, again, source, "xlsx"), "xlsx") == records(sheet_bytes(table, batch, source, "xlsx"), "xlsx")


def test_a_package_held_before_the_layout_still_rebuilds(directory):
    """A held copy written before rows carried notes and home authority (four items a row, no held_back)."""
    import json

    person = people(directory, {"E09000019": 1}, today=TODAY)[0]
    table = read_return(workbook("Example College", "10001234", [person.cells()]))
    item, = validate(table, PROVIDER, today=TODAY).accepted
    old = json.dumps({"headings": list(table.headings), "columns": dict(table.columns),
                      "rows": [[item.row.number, [v.isoformat() if isinstance(v, (date, datetime)) else v
                                                  for v in item.row.values], item.postcode, item.reason]]}).encode()
    decoded, batch, held_back = decode(old, ISLINGTON)
    assert held_back == ()
    found, = records(sheet_bytes(decoded, batch, SOURCE, "csv"), "csv")
    assert (found["Family Name"], found["Routed By"], found["Home Authority"]) == (person.family_name, "", "")
    assert found["DOB"] == person.dob.isoformat()


def test_the_covering_note_counts_and_names_no_one(directory, ring):
    first, second = people(directory, {"E09000019": 2}, today=TODAY)
    persons = [first, with_changes(second, postcode="")]  # sent as the provider's authority
    table = read_return(own_csv(persons))
    checked = validate(table, PROVIDER, today=TODAY)
    batch, = route(table, checked.accepted, RULES, directory, PROVIDER).batches
    source = Source(PROVIDER, SOURCE.reference, SOURCE.received, (("no name given", 2), ("over 24, so not a young person", 1)))
    fingerprint = ring.own_fingerprint()
    message = package_message(table, batch, source, "ldor@islington.example", ring, fingerprint,
                              "ldor@example.org", "admin@example.org")
    import email
    import email.policy

    parsed = email.message_from_bytes(message.raw, policy=email.policy.default)
    body = parsed.get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert f"Gateway reference: {SOURCE.reference}" in body
    assert "Provider: Example College (UKPRN 10001234)" in body
    assert "Notifications: 2" in body
    assert "Rows of this return held back from every authority: 3" in body
    assert "  2 rows: no name given\n" in body and "  1 row: over 24, so not a young person\n" in body
    assert "Columns the provider added that are not part of the return: 2, left out" in body
    assert f"\nLayout: {LAYOUT_VERSION}\n" in body
    assert ("resident in Islington, except 1 whose home authority the postcode could not show: sent to you as the "
            "authority the provider is in") in " ".join(body.split())
    for person in (first, second):
        for value in (person.family_name, person.first_name, person.uln, person.postcode, person.address):
            assert value.encode() not in message.raw
    assert NOTE.encode() not in message.raw and b"Tutor Group" not in message.raw
    (attachment,) = list(parsed.iter_attachments())
    package = ring.decrypt(attachment.get_payload(decode=True)).data
    assert [r["Family Name"] for r in records(package, "xlsx")] == [p.family_name for p in persons]


def test_a_covering_note_without_rows_held_back_says_none(routed, ring):
    table, rows, batches = routed
    message = package_message(table, batches["E09000019"], SOURCE, "ldor@islington.example", ring,
                              ring.own_fingerprint(), "ldor@example.org", "admin@example.org")
    text = message.raw.decode("utf-8", "replace")
    assert "Rows of this return held back from every authority: none" in text
    assert "Columns the provider added that are not part of the return: none" in text
    assert "except" not in text  # every row placed by its postcode
