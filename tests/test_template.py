"""`gateway template`: the blank return a provider can fill in and send without help, read back as the gateway
reads returns (issue 12, item 4)."""

from __future__ import annotations

import io
from datetime import UTC, date, datetime

import openpyxl
import pytest
from helpers import GATEWAY_ADDRESS

from gateway.admin.scaffold import write_installation
from gateway.admin.template import (
    ASK,
    DATA_ROWS,
    HEADING_ROW,
    TABLE,
    TICKS,
    write_template,
)
from gateway.cli import main
from gateway.delivery.pack import HEADINGS as PACKAGE_HEADINGS
from gateway.delivery.pack import Source, sheet_bytes
from gateway.demo.sample import TABLE_HEADINGS, people, with_changes, workbook
from gateway.reference import ccis
from gateway.returns.read import HEADINGS, read_return
from gateway.returns.route import route
from gateway.returns.validate import _TICKS, RULES, validate
from gateway.rules import Borough, Provider, Rules

FIRST, LAST = HEADING_ROW + 1, HEADING_ROW + DATA_ROWS
TODAY = date(2025, 11, 17)
PROVIDER = Provider("10001234", "Example College", ("mis@example-college.example",), host_la="E09000019")
ISLINGTON = Borough("E09000019", "Islington", ("ldor@islington.example",))


def written(tmp_path, config=None) -> openpyxl.Workbook:
    """The template as `gateway template` writes it, with the given config.toml (by default none)."""
    path = tmp_path / "return.xlsx"
    assert main(["--config", str(config or tmp_path / "none.toml"), "template", str(path)]) == 0
    return openpyxl.load_workbook(path)


def letters() -> dict[str, str]:
    return {field: openpyxl.utils.get_column_letter(i) for i, (field, _, _) in enumerate(TABLE, start=1)}


def instructions_text(book: openpyxl.Workbook) -> list[str]:
    return [" | ".join(str(v) for v in row if v is not None) for row in book["Instructions"].iter_rows(values_only=True)]


def test_the_template_is_a_return_the_gateway_reads(tmp_path):
    path = tmp_path / "return.xlsx"
    write_template(path)
    table = read_return(path.read_bytes())
    assert table.sheet == "Return" and table.heading_row == HEADING_ROW
    assert set(table.header) == {"provider_name", "provider_number", "contact_name", "contact_tel", "contact_email"}
    assert set(table.columns) == set(HEADINGS) - {"reason"}
    assert table.rows == ()
    # Sent back empty, it is refused for its empty header block, not misread.
    assert {f.rule for f in validate(table, None).fatal} == {"Provider_01", "Provider_02"}


def test_instructions_use_the_sheets_own_headings(tmp_path):
    book = written(tmp_path)
    sheet = book["Return"]
    headings = [c.value for c in sheet[HEADING_ROW]]
    # One list: the reader's first heading for each field, in the order providers know (RETURN-SPEC "Layout").
    assert headings == [HEADINGS[field][0] for field, _, _ in TABLE] == list(TABLE_HEADINGS)
    assert headings[:4] == ["ULN", "Family Name", "First Name", "DOB"]
    header = [sheet.cell(row, 1).value for row in range(1, 6)]
    assert header == ["Provider Name", "Provider Number", "Contact Name", "Tel", "e-mail"]
    rows = list(book["Instructions"].iter_rows(values_only=True))
    described = [row[0] for row in rows[rows.index(("Column", "What to put in it", None, None)) + 1:][:len(TABLE)]]
    assert described == headings
    start = rows.index(("Rule", "Severity", "Column", "What the receipt says"))
    listed = {row[0]: row[2] for row in rows[start + 1:]}
    assert set(listed) == set(RULES)
    ticks = "Joiner, Leaver or at risk of dropping out"
    for rule, column in listed.items():
        assert column in {*headings, *header, ticks} or (column is None and RULES[rule].field == ""), (rule, column)
    assert listed["ULN_04"] == "ULN" and listed["DOB_02"] == "DOB" and listed["Reason_01"] == ticks
    text = "\n".join(instructions_text(book))
    assert "Uln" not in text and "Dob" not in text


def test_a_codes_sheet_lists_every_destination_code_and_feeds_the_dropdown(tmp_path):
    book = written(tmp_path)
    codes = list(book["Codes"].iter_rows(values_only=True))
    assert codes[0] == ("Code", "Meaning", "Group", "In the dropdown")
    expected = [(code, label, group, f"{code} {label}") for group, pairs in ccis.GROUPS for code, label in pairs]
    assert codes[1:] == expected and len(expected) == len(ccis.CODES)
    assert {row[0] for row in codes[1:]} == set(ccis.CODES)
    assert all(book["Codes"].cell(row, 1).number_format == "@" for row in range(2, len(codes) + 1))
    column = letters()["destination"]
    dropdown = {str(v.sqref): v for v in book["Return"].data_validations.dataValidation}[f"{column}{FIRST}:{column}{LAST}"]
    assert dropdown.type == "list" and dropdown.formula1 == f"'Codes'!$D$2:$D${len(codes)}"
    assert not dropdown.showErrorMessage  # a few words of the provider's own stay as typed
    # The reader finds the return on the Return sheet, not on the Codes or Instructions sheets.
    assert book.sheetnames == ["Return", "Instructions", "Codes"]


@pytest.mark.parametrize("given", ["230", " 230 ", "230 Further education", "230  further EDUCATION",
                                   "230 Full-time education - further education", "Full-time education - further education",
                                   "full time education – further education", "Further education", "230 - further education"])
def test_a_destination_is_the_code_the_label_or_both(given):
    assert ccis.code_of(given) == "230"


@pytest.mark.parametrize("given", ["", "Moving to Leeds", "college", "Other", "sixth form", "230 Apprenticeship", "2300", "999"])
def test_other_destinations_stay_free_text(given):
    assert ccis.code_of(given) is None


def test_every_dropdown_choice_reads_as_its_code():
    assert all(ccis.code_of(ccis.choice(code)) == code for code in ccis.CODES)
    assert all(ccis.code_of(label) == code and ccis.code_of(label.upper()) == code for code, label in ccis.CODES.items())


def test_phone_and_uln_cells_are_text_and_dob_cells_dates(tmp_path):
    sheet = written(tmp_path)["Return"]
    column = letters()
    for row in (FIRST, FIRST + 1, LAST):
        assert sheet[f"{column['uln']}{row}"].number_format == "@"
        assert sheet[f"{column['phone']}{row}"].number_format == "@"
        assert sheet[f"{column['dob']}{row}"].number_format.lower() == "dd/mm/yyyy"
    assert sheet["B2"].number_format == "@" and sheet["B4"].number_format == "@"  # the UKPRN and the Tel


def test_tick_dropdown_offers_every_tick_the_reader_takes_over_5000_rows(tmp_path):
    sheet = written(tmp_path)["Return"]
    column = letters()
    validations = {str(v.sqref): v for v in sheet.data_validations.dataValidation}
    ticks = validations[f"{column['joiner']}{FIRST}:{column['at_risk']}{LAST}"]
    assert ticks.type == "list" and ticks.formula1 == '"X,Y,Yes,\u2713,1"'
    assert set(TICKS) == {"X", "Y", "Yes", "\u2713", "1"} and all(t.lower() in _TICKS for t in TICKS)
    assert ticks.errorStyle == "warning"  # another tick the reader takes ("tick", "x") is not refused
    # Every dropdown and check covers the 5,000 rows under the headings.
    assert DATA_ROWS == 5000
    assert len(validations) == 3 and all(ref.endswith(str(LAST)) and f"{FIRST}:" in ref for ref in validations)
    assert validations[f"{column['dob']}{FIRST}:{column['dob']}{LAST}"].type == "date"


def test_instructions_name_the_address_the_key_and_how_to_encrypt(deployment, tmp_path, capsys):
    book = written(tmp_path, deployment.config)
    out, err = capsys.readouterr()
    assert "Template written to" in out and err == ""
    lines = instructions_text(book)
    text = "\n".join(lines)
    fingerprint = deployment.keys.gateway_fpr
    shown = " ".join(fingerprint[i:i + 4] for i in range(0, len(fingerprint), 4))
    assert f"Send the completed return by e-mail to: {GATEWAY_ADDRESS}" in lines
    assert f"Encrypt it first to the gateway's key, fingerprint: {shown}" in lines
    for words in ("Kleopatra", "File > Sign/Encrypt", "gateway's certificate", "GpgOL", "Secure > Encrypt",
                  "Thunderbird", "OpenPGP", "Encrypt with Password", "AES-256", "by phone, never in the same e-mail"):
        assert words in text, words
    assert ASK not in text


def test_without_a_config_the_instructions_say_to_ask_the_administrator(tmp_path, capsys):
    book = written(tmp_path)
    out, err = capsys.readouterr()
    assert "Template written to" in out
    assert len(err.strip().splitlines()) == 1 and "none.toml" in err and ASK in err
    lines = instructions_text(book)
    assert f"Send the completed return by e-mail to: the secure mailbox ({ASK})" in lines
    assert f"Encrypt it first to the gateway's key, fingerprint: {ASK}" in lines


def test_a_config_whose_gateway_key_is_not_made_yet_gives_the_address_and_says_to_ask_for_the_key(tmp_path, capsys):
    config = write_installation(tmp_path / "gateway", imap=("127.0.0.1", 1143, GATEWAY_ADDRESS, "NO_SUCH_VARIABLE"),
                                smtp=("127.0.0.1", 1025), sender=GATEWAY_ADDRESS, admin="admin@example.org",
                                boroughs={}, providers=[])
    lines = instructions_text(written(tmp_path, config))
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "does not exist yet" in err and ASK in err
    assert f"Send the completed return by e-mail to: {GATEWAY_ADDRESS}" in lines
    assert f"Encrypt it first to the gateway's key, fingerprint: {ASK}" in lines
    assert not (tmp_path / "gateway" / "var" / "gnupg").exists()  # writing a template makes no keyring


def test_a_filled_template_is_read_checked_and_forwarded(tmp_path, directory):
    """A provider fills the template (openpyxl, as Excel saves it): read_return and validate find nothing to
    say, and a destination chosen or typed in any form reaches the borough as its code and label."""
    path = tmp_path / "return.xlsx"
    write_template(path)
    book = openpyxl.load_workbook(path)
    sheet = book["Return"]
    for row, value in enumerate(("Example College", "10001234", "MIS Team", "020 7946 0000", "mis@example-college.example"), 1):
        sheet.cell(row, 2, value)
    destinations = ("230 Further education", ccis.choice("310"), "Full-time education - further education", "540",
                    "Moving to Leeds")
    marks = ("X", "Y", "Yes", "\u2713", 1)
    for n, (person, destination, mark) in enumerate(zip(people(directory, {"E09000019": 5}, today=TODAY),
                                                        destinations, marks, strict=False)):
        cells = with_changes(person, destination=destination).cells()
        cells[8:11] = [mark if i == n % 3 else None for i in range(3)]  # the ticks, each a different mark
        for column, value in enumerate(cells, start=1):
            sheet.cell(FIRST + n, column, value)
    filled = io.BytesIO()  # in memory: the filled return holds (invented) personal data
    book.save(filled)

    table = read_return(filled.getvalue())
    assert table.sheet == "Return" and len(table.rows) == 5
    checked = validate(table, PROVIDER, today=TODAY)
    assert checked.findings == () and len(checked.accepted) == 5
    assert [a.reason for a in checked.accepted] == ["Joiner", "Leaver", "At risk", "Joiner", "Leaver"]
    assert [a.row.get(table, "phone") for a in checked.accepted][0].startswith("07")  # text: the 0 stays

    routed = route(table, checked.accepted, Rules({ISLINGTON.code: ISLINGTON}, {PROVIDER.ukprn: PROVIDER}), directory)
    source = Source(PROVIDER, "LDOR-20251117-ABCDEF0123", datetime(2025, 11, 17, 9, 30, tzinfo=UTC))
    package = openpyxl.load_workbook(io.BytesIO(sheet_bytes(table, routed.batches[0], source, "xlsx")))
    rows = list(package.active.iter_rows(values_only=True))
    code, label = PACKAGE_HEADINGS.index("Destination Code"), PACKAGE_HEADINGS.index("Destination")
    assert [(r[code] or "", r[label]) for r in rows[1:]] == [
        ("230", ccis.CODES["230"]), ("310", ccis.CODES["310"]), ("230", ccis.CODES["230"]), ("540", ccis.CODES["540"]),
        ("", "Moving to Leeds"),
    ]


def test_destination_01_only_for_a_number_that_is_no_code(directory):
    given = ("999", "230 Further education", " 230 ")
    rows = [with_changes(p, destination=d).cells() for p, d in zip(people(directory, {"E09000019": 3}, today=TODAY), given, strict=False)]
    table = read_return(workbook(PROVIDER.name, PROVIDER.ukprn, rows))
    found = [(f.row, f.rule) for f in validate(table, PROVIDER, today=TODAY).findings]
    assert found == [(table.rows[0].number, "Destination_01")]
