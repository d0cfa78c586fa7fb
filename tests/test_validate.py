"""Validation: every rule in RULES passes and fails where RETURN-SPEC.md says, ULNs, dates, ages, reasons, duplicates."""

from __future__ import annotations

import io
import re
from datetime import date, datetime, timedelta

import openpyxl
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from gateway.demo.sample import (
    TABLE_HEADINGS,
    Person,
    people,
    reason_csv,
    valid_uln,
    with_changes,
    workbook,
)
from gateway.returns.read import read_return
from gateway.returns.route import route
from gateway.returns.validate import (
    RULES,
    academic_age,
    parse_date,
    reason_of,
    uln_problem,
    validate,
)
from gateway.rules import LONDON, Borough, Provider, Rules

TODAY = date(2025, 11, 17)  # academic age is taken on 31 August 2025
UKPRN = "10001234"
PROVIDER = Provider(UKPRN, "Example College", ("mis@example-college.example",))
FIRST_ROW = 9  # sample.workbook: five header lines, two blank rows, headings on row 8
CONTACT = [("Contact Name", "MIS Team"), ("Tel", "020 7946 0000"), ("e-mail", "mis@example-college.example")]

VALID_ULNS = ["9276308686", "1000000043", "1000000019", "4000000003", "5555555554"]
INVALID_ULNS = {"1000000063": "ULN_04", "9276308687": "ULN_04", "0276308686": "ULN_03"}


@pytest.fixture(scope="module")
def person(directory) -> Person:
    """A young person with nothing wrong: aged 16-18, real Islington postcode, valid ULN, one reason."""
    return people(directory, {"E09000019": 1}, today=TODAY)[0]


def xlsx(rows: list[list[object]]) -> bytes:
    book = openpyxl.Workbook()
    for row in rows:
        book.active.append(row)
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


def check(*rows: Person | list[object], provider: Provider | None = PROVIDER, ukprn: str = UKPRN, name: str = "Example College"):
    cells = [row.cells() if isinstance(row, Person) else row for row in rows]
    table = read_return(workbook(name, ukprn, cells))
    return table, validate(table, provider, today=TODAY)


def rules_at(checked, row: int | None) -> list[str]:
    return sorted(f.rule for f in checked.findings if f.row == row)


def born_aged(age: int) -> date:
    """A birthday giving this academic age on 31 August 2025 (born in March)."""
    return date(2025 - age, 3, 15)


# -- every rule: a failing and a passing case ------------------------------------------------------

ROW_CASES = [
    # (rule, the change that breaks it, a change that must not)
    ("ULN_01", {"uln": ""}, {"uln": "9276308686"}),
    ("ULN_02", {"uln": "9999999999"}, {"uln": "1000000043"}),
    ("ULN_03", {"uln": "0276308686"}, {"uln": "4000000003"}),
    ("ULN_03", {"uln": "92763086"}, {"uln": "5555555554"}),
    ("ULN_04", {"uln": "9276308687"}, {"uln": "9276308686"}),
    ("ULN_04", {"uln": "1000000063"}, {"uln": "1000000019"}),
    ("FamilyName_01", {"family_name": ""}, {"family_name": "O'Neill-Smith"}),
    ("FamilyName_02", {"family_name": "A" * 101}, {"family_name": "A" * 100}),
    ("FirstName_01", {"first_name": "  "}, {"first_name": "Zoë"}),
    ("FirstName_02", {"first_name": "B" * 101}, {"first_name": "B" * 100}),
    ("DOB_01", {"dob": ""}, {"dob": date(2008, 5, 25)}),
    ("DOB_02", {"dob": "05/25/2008"}, {"dob": "25/05/2008"}),
    ("DOB_02", {"dob": "31/02/2008"}, {"dob": "29/02/2008"}),
    ("DOB_02", {"dob": "unknown"}, {"dob": "2008-05-25"}),
    ("DOB_03", {"dob": TODAY + timedelta(days=1)}, {"dob": date(2008, 1, 1)}),
    ("DOB_04", {"dob": born_aged(20)}, {"dob": born_aged(18)}),
    ("DOB_04", {"dob": born_aged(15)}, {"dob": born_aged(16)}),
    ("DOB_05", {"dob": born_aged(25)}, {"dob": born_aged(17)}),
    ("Address_01", {"address": ""}, {"address": "Flat 2, 10 Upper Street"}),
    ("Postcode_01", {"postcode": ""}, {"postcode": "N1 1AA"}),
    ("Postcode_02", {"postcode": "N1 1A"}, {"postcode": "n11aa"}),
    ("Postcode_02", {"postcode": "N1-1AA"}, {"postcode": " N1  1AA "}),
    ("Email_01", {"email": "not-an-address"}, {"email": ""}),
    ("Email_01", {"email": "someone@nowhere"}, {"email": "someone@example.ac.uk"}),
    ("Phone_01", {"phone": "12345"}, {"phone": ""}),
    ("Phone_01", {"phone": "call after 5"}, {"phone": "020 7946 0000"}),
    ("Phone_01", {"phone": "0770090012345678901"}, {"phone": "+44 7700 900123"}),
    ("Phone_01", {"phone": "phone"}, {"phone": "+44 (0)20 7946 0000"}),  # the usual UK international form
    ("Destination_01", {"destination": "150"}, {"destination": "540"}),
    ("Destination_01", {"destination": "999"}, {"destination": "Apprenticeship with a local garage"}),
    ("Destination_01", {"destination": "211"}, {"destination": "381"}),
]
# Notify first: only DOB_05 (not a young person) holds a row back here. A missing or malformed postcode is
# a note: routing sends the row to the provider's own authority (tests/test_route.py).
SEVERITY = {"DOB_05": "E"}


@pytest.mark.parametrize("rule, failing, passing", ROW_CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(ROW_CASES)])
def test_row_rule(person, rule, failing, passing):
    table, checked = check(with_changes(person, **failing), with_changes(person, **{"uln": valid_uln(99), "first_name": "Other", **passing}))
    bad = [f for f in checked.findings if f.row == FIRST_ROW]
    assert [f.rule for f in bad] == [rule]
    assert bad[0].severity == SEVERITY.get(rule, "W") == RULES[rule].severity
    assert bad[0].message.startswith(RULES[rule].message)
    assert bad[0].column == table.heading(RULES[rule].field)
    assert rules_at(checked, FIRST_ROW + 1) == []
    accepted = [a.row.number for a in checked.accepted]
    assert (FIRST_ROW in accepted) == (bad[0].severity == "W")
    assert FIRST_ROW + 1 in accepted


REASON_CASES = [
    ("Reason_01", ["", "", ""], ["", "x", ""]),
    ("Reason_03", ["maybe", "", ""], ["Yes", "", ""]),
]


@pytest.mark.parametrize("rule, failing, passing", REASON_CASES)
def test_reason_rule(person, rule, failing, passing):
    cells = person.cells()
    other = with_changes(person, uln=valid_uln(42), first_name="Other").cells()
    table, checked = check(cells[:8] + failing + cells[11:], other[:8] + passing + other[11:])
    bad = [f for f in checked.findings if f.row == FIRST_ROW]
    assert [(f.severity, f.rule) for f in bad] == [("E", rule)]
    assert bad[0].column == "Joiner / Leaver / at risk of dropping out"
    assert rules_at(checked, FIRST_ROW + 1) == []
    assert [a.row.number for a in checked.accepted] == [FIRST_ROW + 1]


def test_duplicate_rule(person):
    other = with_changes(person, uln=valid_uln(5), family_name="Quinn")
    _, unique = check(person, other)
    assert rules_at(unique, FIRST_ROW + 1) == []
    _, twice = check(person, other, with_changes(person, first_name="Someone", family_name="Else"))
    [duplicate] = [f for f in twice.findings if f.row == FIRST_ROW + 2]
    assert (duplicate.severity, duplicate.rule) == ("W", "Row_01")
    assert f"row {FIRST_ROW}" in duplicate.message
    assert len(twice.accepted) == 3  # a warning: still forwarded


@pytest.mark.parametrize(
    "rule, number, name, provider",
    [
        ("Provider_01", UKPRN, "", PROVIDER),
        ("Provider_02", "1234", "Example College", PROVIDER),
        ("Provider_02", "01234567", "Example College", PROVIDER),
        ("Provider_02", "100012345", "Example College", PROVIDER),
        ("Provider_03", "10009999", "Example College", PROVIDER),
    ],
)
def test_provider_rules_fail_the_file(person, rule, number, name, provider):
    _, checked = check(person, ukprn=number, name=name, provider=provider)
    assert [(f.severity, f.row, f.rule) for f in checked.fatal] == [("F", None, rule)]
    assert checked.findings[0].rule == rule  # F before anything else


@pytest.mark.parametrize("provider", [PROVIDER, None])
def test_provider_rules_pass(person, provider):
    _, checked = check(person, provider=provider)
    assert checked.findings == ()
    assert len(checked.accepted) == 1


def test_a_sheet_without_header_block_takes_the_provider_from_the_sender(person):
    table = read_return(xlsx([list(TABLE_HEADINGS), person.cells()]))
    checked = validate(table, PROVIDER, today=TODAY)
    assert checked.findings == ()


def header_sheet(person: Person, contact: list[tuple[str, str]]) -> bytes:
    return xlsx([["Provider Name", "Example College"], ["Provider Number", UKPRN], *map(list, contact), [],
                 list(TABLE_HEADINGS), person.cells()])


@pytest.mark.parametrize(
    "contact",
    [
        [("Contact Name", "MIS Team"), ("Tel", ""), ("e-mail", "mis@example-college.example")],
        [("Contact Name", ""), ("Tel", "020 7946 0000"), ("e-mail", "mis@example-college.example")],
        CONTACT[:2],
        [("Contact Name", "MIS Team"), ("Tel", "020 7946 0000"), ("e-mail", "n/a")],  # spec: plausible format
        [("Contact Name", "MIS Team"), ("Tel", "none"), ("e-mail", "mis@example-college.example")],
    ],
    ids=["no-tel", "no-name", "no-email-line", "email-not-plausible", "tel-not-plausible"],
)
def test_header_contact_rule(person, contact):
    checked = validate(read_return(header_sheet(person, contact)), PROVIDER, today=TODAY)
    assert [(f.severity, f.row, f.rule) for f in checked.findings] == [("W", None, "Header_01")]
    assert len(checked.accepted) == 1


def test_header_contact_rule_passes(person):
    checked = validate(read_return(header_sheet(person, CONTACT)), PROVIDER, today=TODAY)
    assert checked.findings == ()


def test_ukprn_typed_as_a_number_is_the_same_provider(person):
    sheet = xlsx([["Provider Name", "Example College"], ["Provider Number", int(UKPRN)], *map(list, CONTACT), [],
                  list(TABLE_HEADINGS), person.cells()])
    checked = validate(read_return(sheet), PROVIDER, today=TODAY)
    assert checked.findings == ()


def route_rules() -> Rules:
    boroughs = {code: Borough(code, name, (f"ldor@{code.lower()}.example",)) for code, name in LONDON.items()}
    return Rules(boroughs, {UKPRN: PROVIDER})


@pytest.mark.parametrize(
    "rule, postcode, detail",
    [("Postcode_15", "QQ1 1QQ", ""), ("Postcode_15", "GIR 0AA", ""), ("Route_01", "M1 1AE", "E08000003")],
)
def test_lookup_rules(directory, person, rule, postcode, detail):
    table, checked = check(with_changes(person, postcode=postcode), with_changes(person, uln=valid_uln(3), first_name="Other"))
    assert len(checked.accepted) == 2  # the format is right: the lookup happens when routing
    routed = route(table, checked.accepted, route_rules(), directory)
    assert [(f.severity, f.row, f.rule) for f in routed.findings] == [("E", FIRST_ROW, rule)]
    assert detail in routed.findings[0].message
    assert [(b.borough.code, [a.row.number for a in b.rows]) for b in routed.batches] == [("E09000019", [FIRST_ROW + 1])]
    assert routed.forwarded == 1


@pytest.mark.parametrize("age, rules", [(15, ["DOB_04"]), (16, []), (18, []), (19, ["DOB_04"]), (24, ["DOB_04"]), (25, ["DOB_05"])])
def test_age_boundaries(person, age, rules):
    _, checked = check(with_changes(person, dob=born_aged(age)))
    assert rules_at(checked, FIRST_ROW) == rules
    if rules == ["DOB_04"]:
        assert f"(age {age})" in checked.findings[0].message


def test_zz99_pseudo_postcode_fails_the_format(person):
    # Z cannot be the second letter under the spec's pattern, so ZZ99 is refused before any lookup.
    _, checked = check(with_changes(person, postcode="ZZ99 3VZ"))
    assert rules_at(checked, FIRST_ROW) == ["Postcode_02"]


def test_every_rule_has_a_test():
    tested = {c[0] for c in ROW_CASES} | {c[0] for c in REASON_CASES}
    tested |= {"Row_01", "Provider_01", "Provider_02", "Provider_03", "Header_01", "Postcode_15", "Route_01"}
    tested |= {"File_02"}  # a warning about weak zip encryption: tests/test_intake.py (ZipCrypto)
    tested |= {"File_01"}  # an unreadable file: tests/test_cli.py (gateway validate)
    tested |= {"File_04"}  # a file sent twice: tests/test_end_to_end.py, tests/test_examine.py
    tested |= {"Formula_01", "Formula_02"}  # test_formula_cells below
    tested |= {"Route_02", "Route_03"}  # tests/test_route.py
    tested |= {"File_03", "Csv_01", "Csv_02"}  # test_problems_met_while_reading_become_findings below
    tested |= {"Name_01", "Reason_02"}  # the notify-first tests at the end
    assert tested == set(RULES)


def test_a_clean_return_has_no_findings(directory):
    everyone = people(directory, {"E09000019": 4, "E09000007": 3, "E09000012": 3}, today=TODAY)
    table, checked = check(*everyone)
    assert checked.findings == ()
    assert [a.row.number for a in checked.accepted] == list(range(FIRST_ROW, FIRST_ROW + 10))
    assert [a.reason for a in checked.accepted] == [p.reason for p in everyone]
    assert [a.postcode for a in checked.accepted] == [p.postcode for p in everyone]


def test_a_csv_export_with_one_reason_column(directory):
    everyone = people(directory, {"E09000019": 3, "E09000012": 3}, today=TODAY)
    table = read_return(reason_csv(everyone))
    checked = validate(table, PROVIDER, today=TODAY)
    assert checked.findings == ()
    assert [a.reason for a in checked.accepted] == [p.reason for p in everyone]
    assert [a.postcode for a in checked.accepted] == [p.postcode for p in everyone]


def test_accepted_postcode_is_normalised(person):
    _, checked = check(with_changes(person, postcode=" n1 1aa"))
    assert checked.accepted[0].postcode == "N1 1AA"


def test_errors_before_warnings(person):
    _, checked = check(
        with_changes(person, address=""),  # W
        with_changes(person, uln=valid_uln(6), dob=born_aged(30), first_name="B"),  # E
        with_changes(person, uln="", first_name="C", phone="x"),  # W, W
        with_changes(person, uln=valid_uln(8), first_name="", family_name="", postcode="bad"),  # E, W
    )
    severities = [f.severity for f in checked.findings]
    assert severities == ["E", "E", "W", "W", "W", "W"]
    assert [f.row for f in checked.findings if f.severity == "E"] == [FIRST_ROW + 1, FIRST_ROW + 3]


# -- ULN --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("uln", VALID_ULNS)
def test_spec_valid_ulns(uln):
    assert uln_problem(uln) is None
    assert uln_problem(int(uln)) is None
    assert uln_problem(float(uln)) is None  # a ULN cell stored as a number
    assert uln_problem(f" {uln} ") is None


@pytest.mark.parametrize("uln, rule", INVALID_ULNS.items())
def test_spec_invalid_ulns(uln, rule):
    assert uln_problem(uln) == rule


def spec_uln_valid(text: str) -> bool:
    """RETURN-SPEC.md's ULN_04 calculation, written out independently."""
    if len(text) != 10 or not text.isdigit() or text[0] == "0":
        return False
    r = sum((10 - i) * int(text[i]) for i in range(9)) % 11
    return r != 0 and int(text[9]) == 10 - r


@given(st.from_regex(r"\A[0-9]{10}\Z"))
def test_uln_check_agrees_with_the_spec(text):
    assume(text != "9999999999")
    assert (uln_problem(text) is None) == spec_uln_valid(text)


@given(st.integers(min_value=0, max_value=10**12))
def test_valid_uln_builds_valid_ulns(number):
    uln = valid_uln(number)
    assert spec_uln_valid(uln)
    assert uln_problem(uln) is None


@given(st.integers(min_value=0, max_value=10**9), st.integers(min_value=1, max_value=9))
def test_one_wrong_check_digit_is_caught(number, shift):
    uln = valid_uln(number)
    wrong = uln[:9] + str((int(uln[9]) + shift) % 10)
    assert uln_problem(wrong) == "ULN_04"


# -- dates ------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "value, expected",
    [
        (datetime(2008, 5, 25, 0, 0), date(2008, 5, 25)),  # an Excel date cell
        (date(2008, 5, 25), date(2008, 5, 25)),
        ("2008-05-25", date(2008, 5, 25)),
        ("2008-05-25 00:00:00", date(2008, 5, 25)),
        ("25/05/2008", date(2008, 5, 25)),
        (" 25/05/2008 ", date(2008, 5, 25)),
        ("25.05.2008", date(2008, 5, 25)),
        ("25-05-2008", date(2008, 5, 25)),
        ("5/6/2008", date(2008, 6, 5)),  # day first: 5 June, never 6 May
        ("04/03/2008", date(2008, 3, 4)),
        ("25/05/08", date(2008, 5, 25)),
        ("29/02/2008", date(2008, 2, 29)),
    ],
)
def test_parse_date(value, expected):
    assert parse_date(value, TODAY) == expected


@pytest.mark.parametrize("value", ["05/25/2008", "12/31/2007", "31/02/2008", "29/02/2009", "00/01/2008", "2008-13-01",
                                   "25 May 2008", "", None, "yesterday", "25/05"])
def test_parse_date_refuses(value):
    assert parse_date(value, TODAY) is None


@given(st.dates(min_value=date(1950, 1, 1), max_value=date(2030, 12, 31)))
def test_uk_and_iso_text_dates_round_trip(day):
    assert parse_date(day.strftime("%d/%m/%Y"), TODAY) == day
    assert parse_date(day.isoformat(), TODAY) == day


@given(st.dates(min_value=date(1990, 1, 1), max_value=date(2020, 12, 31)).filter(lambda d: d.day > 12))
def test_month_first_dates_are_refused_never_guessed(day):
    assert parse_date(f"{day.month:02d}/{day.day:02d}/{day.year}", TODAY) is None


@pytest.mark.parametrize(
    "born, today, age",
    [
        (date(2009, 8, 31), TODAY, 16),  # sixteenth birthday on 31 August itself
        (date(2009, 9, 1), TODAY, 15),  # a day younger: the next school year
        (date(2006, 9, 1), TODAY, 18),
        (date(2006, 8, 31), TODAY, 19),
        (date(2009, 8, 31), date(2025, 8, 31), 15),  # on 31 August the year that started in 2024 is still running
        (date(2009, 8, 31), date(2025, 9, 1), 16),
        (date(2009, 2, 28), date(2026, 3, 1), 16),  # spring term: still measured on 31 August 2025
        (date(2008, 2, 29), TODAY, 17),
    ],
)
def test_academic_age(born, today, age):
    assert academic_age(born, today) == age


@given(st.dates(min_value=date(1990, 1, 1), max_value=date(2015, 12, 31)),
       st.dates(min_value=date(2025, 9, 1), max_value=date(2026, 8, 31)))
def test_academic_age_is_fixed_for_the_whole_year(born, today):
    assert academic_age(born, today) == academic_age(born, date(2025, 9, 1))


# -- reasons ----------------------------------------------------------------------------------------

TICKS = ["X", "x", "Y", "y", "Yes", "YES", "yes", "\u2713", "\u2714", "\u2611", "1", 1, 1.0, True]


@pytest.mark.parametrize("tick", TICKS, ids=[repr(t) for t in TICKS])
@pytest.mark.parametrize("column, reason", [(8, "Joiner"), (9, "Leaver"), (10, "At risk")])
def test_reason_by_tick(person, tick, column, reason):
    cells = person.cells()
    cells[8:11] = ["", "", ""]
    cells[column] = tick
    table, checked = check(cells)
    assert checked.findings == ()
    assert checked.accepted[0].reason == reason
    assert reason_of(table, table.rows[0]) == (reason, None)


@pytest.mark.parametrize("blank", ["", "n", "No", "0", 0, "-"])
def test_unticked_marks_are_not_reasons(person, blank):
    cells = person.cells()
    cells[8:11] = ["X", blank, blank]
    _, checked = check(cells)
    assert checked.accepted[0].reason == "Joiner"


def reason_sheet(words: list[object]) -> bytes:
    headings = ["ULN", "Family Name", "First Name", "DOB", "Address", "Post Code", "Reason"]
    rows = [[valid_uln(i * 1000), "Family", f"First{i}", date(2008, 5, 1 + i), "1 High Street", "N1 1AA", word]
            for i, word in enumerate(words)]
    return xlsx([headings, *rows])


def test_reason_column():
    words = ["Joiner", "leaver", "LEAVER ", "At risk of dropping out", "at-risk", "At risk", "", "Transferred", "X"]
    table = read_return(reason_sheet(words))
    checked = validate(table, None, today=TODAY)
    assert [a.reason for a in checked.accepted] == ["Joiner", "Leaver", "Leaver", "At risk", "At risk", "At risk"]
    problems = [(f.row, f.rule, f.column) for f in checked.findings]
    assert problems == [(8, "Reason_01", "Reason"), (9, "Reason_03", "Reason"), (10, "Reason_03", "Reason")]


# -- duplicates -------------------------------------------------------------------------------------

def test_duplicates(person):
    first = with_changes(person, uln="9276308686")
    rows = [
        first,
        with_changes(first, family_name="Other", first_name="Person"),  # same ULN
        with_changes(first, uln="1000000043", family_name=first.family_name.upper()),  # same name + DOB
        with_changes(first, uln="9999999999", first_name="Tmp1", family_name="A"),
        with_changes(first, uln="9999999999", first_name="Tmp2", family_name="B"),  # temporary ULNs are not a match
        with_changes(first, uln="4000000003", first_name="Sibling", dob=date(2008, 1, 2)),  # same family, other DOB
        with_changes(first, first_name="Third", family_name="Time"),  # same ULN again: points at the first
    ]
    _, checked = check(*rows)
    duplicates = [(f.row, f.message) for f in checked.findings if f.rule == "Row_01"]
    assert [row for row, _ in duplicates] == [FIRST_ROW + 1, FIRST_ROW + 2, FIRST_ROW + 6]
    assert all(f"(row {FIRST_ROW})" in message for _, message in duplicates)
    assert len(checked.accepted) == len(rows)


def test_uln_as_number_and_as_text_are_the_same_learner(person):
    cells = with_changes(person, uln="9276308686").cells()
    other = with_changes(person, uln="9276308686", family_name="X", first_name="Y").cells()
    other[0] = 9276308686
    _, checked = check(cells, other)
    assert rules_at(checked, FIRST_ROW + 1) == ["Row_01"]


def _with_formulas(directory) -> bytes:
    """A real workbook whose Address cells on two rows hold formulas, one with a saved value, one without."""
    import io
    import zipfile

    everyone = people(directory, {"E09000019": 3}, today=TODAY)
    data = workbook("Example College", "10001234", [p.cells() for p in everyone])
    source = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for item in source.infolist():
            content = source.read(item.filename)
            if item.filename == "xl/worksheets/sheet2.xml":  # the Return sheet (Instructions is sheet1)
                text = content.decode()
                first = FIRST_ROW
                text = re.sub(rf'<c r="E{first}"[^>]*>.*?</c>',
                              f'<c r="E{first}" t="str"><f>"1 High Street"</f><v>1 High Street</v></c>', text, count=1)
                text = re.sub(rf'<c r="E{first + 1}"[^>]*>.*?</c>',
                              f'<c r="E{first + 1}" t="str"><f>A1&amp;B1</f></c>', text, count=1)
                content = text.encode()
            target.writestr(item, content)
    return out.getvalue()


def test_formula_cells(directory):
    table = read_return(_with_formulas(directory))
    checked = validate(table, PROVIDER, today=TODAY)
    formula = [(f.severity, f.row, f.column, f.rule) for f in checked.findings if f.rule.startswith("Formula")]
    assert formula == [("E", FIRST_ROW + 1, "Address", "Formula_02"), ("W", FIRST_ROW, "Address", "Formula_01")]
    assert [a.row.number for a in checked.accepted] == [FIRST_ROW, FIRST_ROW + 2]
    assert table.rows[0].values[4] == "1 High Street"


def test_problems_met_while_reading_become_findings(directory):
    everyone = people(directory, {"E09000019": 3}, today=TODAY)
    lines = ["ULN,Family Name,First Name,DOB,Address,Post Code,Leaver"]
    for p in everyone:
        lines.append(f"{p.uln},{p.family_name},{p.first_name},{p.dob:%d/%m/%Y},{p.address},{p.postcode},X")
    lines[2] = lines[2].replace(f",{everyone[1].address},", f',"{everyone[1].address},')  # read alone, the row is whole
    # A stray quote before a properly quoted address: read alone, the line splits into too many columns.
    lines[3] = lines[3].replace(f",{everyone[2].first_name},", f',"{everyone[2].first_name},').replace(
        f",{everyone[2].address},", ',"Flat 1, 2 Road",')
    checked = validate(read_return("\n".join(lines).encode()), PROVIDER, today=TODAY)
    assert [(f.severity, f.row, f.rule) for f in checked.findings if f.rule.startswith("Csv")] == [("E", 4, "Csv_02"), ("W", 3, "Csv_01")]
    assert "(line 3 of the file)" in next(f.message for f in checked.findings if f.rule == "Csv_01")
    assert [a.row.number for a in checked.accepted] == [2, 3]  # the row that could not be read is held back
    hidden = openpyxl.Workbook()
    hidden.active.append(["Notes"])
    sheet = hidden.create_sheet("Return")
    sheet.sheet_state = "hidden"
    for row in [["Family Name", "First Name", "DOB", "Post Code"], ["A", "B", "01/01/2008", everyone[0].postcode]]:
        sheet.append(row)
    buffer = io.BytesIO()
    hidden.save(buffer)
    checked = validate(read_return(buffer.getvalue()), PROVIDER, today=TODAY)
    assert [(f.severity, f.row, f.rule) for f in checked.findings if f.rule == "File_03"] == [("W", None, "File_03")]


# -- notify first: a row naming a person and a notification is forwarded, with its notes ----------

def test_a_row_naming_no_one_is_held_back_and_one_name_is_enough(person):
    nobody = with_changes(person, family_name="", first_name=" ")
    family_only = with_changes(person, uln=valid_uln(7), first_name="")
    first_only = with_changes(person, uln=valid_uln(8), family_name="")
    table, checked = check(nobody, family_only, first_only)
    assert [(f.severity, f.rule) for f in checked.findings if f.row == FIRST_ROW] == [("E", "Name_01")]
    assert [(f.severity, f.rule) for f in checked.findings if f.row == FIRST_ROW + 1] == [("W", "FirstName_01")]
    assert [(f.severity, f.rule) for f in checked.findings if f.row == FIRST_ROW + 2] == [("W", "FamilyName_01")]
    assert [a.row.number for a in checked.accepted] == [FIRST_ROW + 1, FIRST_ROW + 2]


@pytest.mark.parametrize("ticks, reason", [
    (["X", "X", ""], "Leaver"),  # joined and left in the same month
    (["X", "", "X"], "At risk"),
    (["", "X", "X"], "Leaver"),
    (["X", "X", "X"], "Leaver"),
])
def test_several_reasons_go_as_the_most_urgent(person, ticks, reason):
    cells = person.cells()
    cells[8:11] = ticks
    table, checked = check(cells)
    [note] = checked.findings
    assert (note.severity, note.rule, note.column) == ("W", "Reason_02", "Joiner / Leaver / at risk of dropping out")
    assert "forwarded as the most urgent" in note.message
    assert [a.reason for a in checked.accepted] == [reason]
    assert reason_of(table, table.rows[0]) == (reason, "Reason_02")


def test_a_reason_word_and_a_different_tick_go_as_the_most_urgent():
    headings = ["ULN", "Family Name", "First Name", "DOB", "Address", "Post Code", "Joiner", "Reason"]
    table = read_return(xlsx([headings, [valid_uln(1), "Family", "First", date(2008, 5, 1), "1 High Street", "N1 1AA", "X", "at risk"]]))
    checked = validate(table, None, today=TODAY)
    assert [f.rule for f in checked.findings] == ["Reason_02"]
    assert "(Joiner and At risk)" in checked.findings[0].message
    assert [a.reason for a in checked.accepted] == ["At risk"]


@pytest.mark.parametrize("uln, rule", [("9276308687", "ULN_04"), ("1000000063", "ULN_04"), (1000000063, "ULN_04")])
def test_a_uln_failing_its_check_is_forwarded_without_it(person, uln, rule):
    table, checked = check(with_changes(person, uln=uln))
    [note] = checked.findings
    assert (note.severity, note.rule) == ("W", rule)
    assert note.value == str(uln)  # the provider's value, for a receipt encrypted to the provider only
    assert "you gave does not pass the checksum" in note.message and "forwarded with its ULN left out" in note.message
    [row] = checked.accepted
    assert row.row.get(table, "uln") is None
    assert row.row.get(table, "family_name") == person.family_name
    assert table.rows[0].get(table, "uln") not in (None, "")  # the table itself is untouched


@pytest.mark.parametrize("uln", ["", "9999999999", "0276308686", "92763086"])
def test_other_uln_notes_keep_the_cell_as_given(person, uln):
    table, checked = check(with_changes(person, uln=uln))
    assert [f.severity for f in checked.findings] == ["W"]
    assert checked.accepted[0].row == table.rows[0]


@pytest.mark.parametrize("dob, rule", [("", "DOB_01"), ("05/25/2008", "DOB_02"), ("not known", "DOB_02"),
                                       (TODAY + timedelta(days=30), "DOB_03")])
def test_a_wrong_date_of_birth_is_a_note(person, dob, rule):
    _, checked = check(with_changes(person, dob=dob))
    assert [(f.severity, f.rule) for f in checked.findings] == [("W", rule)]
    assert "The row was forwarded; please give the date of birth next time" in checked.findings[0].message
    assert len(checked.accepted) == 1


def test_a_note_on_a_row_held_back_does_not_say_it_was_forwarded(person):
    _, checked = check(with_changes(person, uln="9276308687", dob=born_aged(30)))
    found = {f.rule: f for f in checked.findings}
    assert (found["DOB_05"].severity, found["ULN_04"].severity) == ("E", "W")
    assert "forwarded" not in found["ULN_04"].message
    assert "Please correct the ULN" in found["ULN_04"].message
    assert checked.accepted == ()
