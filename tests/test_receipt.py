"""Receipts: counts, errors before warnings, the findings CSV and the gateway key, and never a value from the return."""

from __future__ import annotations

import csv
import email
import email.policy
import io
import re
import zipfile
from dataclasses import replace
from datetime import UTC, date, datetime

import pytest

from gateway.delivery.receipt import (
    FileFacts,
    Letterhead,
    acknowledgement,
    findings_csv,
    rejection,
)
from gateway.demo.sample import people, with_changes, workbook
from gateway.returns.read import read_return
from gateway.returns.route import Routed, route
from gateway.returns.validate import Finding, validate
from gateway.rules import Borough, Provider, Rules

TODAY = date(2025, 11, 17)
PROVIDER = Provider("10001234", "Example College", ("mis@example-college.example",))
RULES = Rules(
    {"E09000019": Borough("E09000019", "Islington", ("ldor@islington.example",)),
     "E09000007": Borough("E09000007", "Camden", ("ldor@camden.example",))},
    {"10001234": PROVIDER},
)
FACTS = FileFacts("LDOR-20251117-ABCDEF0123", datetime(2025, 11, 17, 9, 30, tzinfo=UTC), 1, 1, 23456, "0123456789ab")
# A stand-in armoured key: its text is fixed, so nothing from a return can appear in it by chance.
HEAD = Letterhead("ldor@example.org", "0" * 40,
                  "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nstand-in key for tests\n-----END PGP PUBLIC KEY BLOCK-----\n")
TO = "mis@example-college.example"


@pytest.fixture(scope="module")
def sent(directory):
    """A return with clean rows, rejected rows and warned rows, taken through read, validate and route."""
    base = people(directory, {"E09000019": 4, "E09000007": 2}, today=TODAY)
    marked = [with_changes(p, family_name=f"Zedfam{i}x", first_name=f"Qyname{i}x", address=f"{i + 11} Wyvernwood Close")
              for i, p in enumerate(base)]
    rows = [
        marked[0],
        with_changes(marked[1], dob=date(1995, 3, 15)),  # E DOB_05: a value that must not be repeated
        with_changes(marked[2], postcode="QQ1 1QQ"),  # E Postcode_15 when routed
        with_changes(marked[3], address="", phone="07700-CALL-ME"),  # W Address_01, W Phone_01
        marked[4],
        with_changes(marked[5], family_name="", first_name=""),  # E Name_01
    ]
    table = read_return(workbook("Example College", "10001234", [p.cells() for p in rows]))
    checked = validate(table, PROVIDER, today=TODAY)
    routed = route(table, checked.accepted, RULES, directory)
    findings = checked.findings + routed.findings
    outgoing = acknowledgement(FACTS, PROVIDER, len(table.rows), findings, routed, directory.edition, TO, HEAD)
    return table, rows, findings, routed, outgoing


def parse(raw: bytes):
    return email.message_from_bytes(raw, policy=email.policy.default)


def body_of(raw: bytes) -> str:
    return parse(raw).get_body(preferencelist=("plain",)).get_content()


def attachments(raw: bytes) -> dict[str, bytes]:
    return {part.get_filename(): part.get_payload(decode=True) for part in parse(raw).iter_attachments()}


def test_acknowledgement_counts(sent, directory):
    _, _, _, routed, outgoing = sent
    assert routed.forwarded == 3
    body = body_of(outgoing.raw)
    assert "Rows read:       6" in body
    assert "Rows forwarded:  3" in body
    assert "Rows rejected (not forwarded): 3" in body
    assert "Warnings (on forwarded rows): 2" in body
    assert "Islington (E09000019): 2" in body and "Camden (E09000007): 1" in body
    assert f"Gateway reference: {FACTS.reference}" in body
    assert "UKPRN 10001234" in body
    assert directory.edition in body
    message = parse(outgoing.raw)
    assert message["To"] == TO
    assert message["From"] == HEAD.sender
    assert "3 of 6 rows forwarded" in message["Subject"]
    assert outgoing.kind == "receipt" and outgoing.recipient == TO


def finding_lines(body: str) -> list[list[str]]:
    return [line.split() for line in body.splitlines() if line.startswith("  ") and line.split()[0] in ("E", "W", "F")]


def test_errors_before_warnings_in_the_body(sent):
    body = body_of(sent[4].raw)
    lines = finding_lines(body)
    assert [(l[0], l[1]) for l in lines] == [("E", "10"), ("E", "11"), ("E", "14"), ("W", "12"), ("W", "12")]
    rules = [next(w for w in l if "_" in w) for l in lines]
    assert rules == ["DOB_05", "Postcode_15", "Name_01", "Address_01", "Phone_01"]


def test_findings_csv_is_attached(sent):
    files = attachments(sent[4].raw)
    data = files[f"{FACTS.reference}-findings.csv"]
    rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig"))))
    assert rows[0] == ["Severity", "Row", "Column", "Rule", "Message"]
    assert [(r[0], r[1], r[3]) for r in rows[1:]] == [
        ("E", "10", "DOB_05"), ("E", "11", "Postcode_15"), ("E", "14", "Name_01"), ("W", "12", "Address_01"),
        ("W", "12", "Phone_01")]
    assert rows[1][2] == "DOB"


def test_the_gateway_key_is_attached(sent):
    files = attachments(sent[4].raw)
    assert files["ldor-gateway-key.asc"] == HEAD.public_key.encode()
    assert HEAD.fingerprint in body_of(sent[4].raw)


def cell_texts(rows) -> set[str]:
    texts = set()
    for person in rows:
        for value in (person.uln, person.family_name, person.first_name, person.address, person.postcode,
                      person.email, person.phone):
            if value:
                texts.add(str(value))
        if isinstance(person.dob, date):
            texts |= {person.dob.strftime("%d/%m/%Y"), person.dob.isoformat()}
        else:
            texts.add(person.dob)
    return texts


def test_no_value_from_the_return_appears_in_the_receipt(sent):
    _, rows, _, _, outgoing = sent
    raw = outgoing.raw
    decoded = b"".join(attachments(raw).values()) + body_of(raw).encode()
    for text in cell_texts(rows):
        for form in {text, text.replace(" ", ""), text.upper()}:
            assert form.encode() not in raw, form
            assert form.encode() not in decoded, form


def test_a_clean_return(directory):
    rows = people(directory, {"E09000019": 2}, today=TODAY)
    table = read_return(workbook("Example College", "10001234", [p.cells() for p in rows]))
    checked = validate(table, PROVIDER, today=TODAY)
    routed = route(table, checked.accepted, RULES, directory)
    outgoing = acknowledgement(FACTS, PROVIDER, 2, checked.findings, routed, directory.edition, TO, HEAD)
    body = body_of(outgoing.raw)
    assert "No problems found" in body
    assert "Rows rejected (not forwarded): 0" in body
    assert list(attachments(outgoing.raw)) == ["ldor-gateway-key.asc"]  # no findings file when there are none


def test_findings_are_sorted_whatever_order_they_come_in():
    mixed = (
        Finding("W", 3, "Address", "Address_01", "Address is missing"),
        Finding("E", 9, "ULN", "ULN_04", "The Unique Learner Number does not pass the checksum calculation"),
        Finding("W", 1, "phone", "Phone_01", "Contact phone number looks invalid"),
        Finding("E", 2, "DOB", "DOB_02", "Date of birth is not a valid date"),
    )
    outgoing = acknowledgement(FACTS, PROVIDER, 10, mixed, Routed((), ()), "edition", TO, HEAD)
    lines = finding_lines(body_of(outgoing.raw))
    assert [(l[0], l[1]) for l in lines] == [("E", "2"), ("E", "9"), ("W", "1"), ("W", "3")]
    assert "Rows rejected (not forwarded): 2" in body_of(outgoing.raw)
    assert "Warnings (on forwarded rows): 2" in body_of(outgoing.raw)


def test_rejection():
    advice = "We could not find the table of young people in your file. Please use the template."
    outgoing = rejection(FACTS, PROVIDER, advice, TO, HEAD)
    message = parse(outgoing.raw)
    body = body_of(outgoing.raw)
    assert "NOT ACCEPTED" in body
    assert "Nothing from this file has been forwarded" in body
    assert " ".join(body.split()).count(advice) == 1
    assert FACTS.reference in message["Subject"]
    assert list(attachments(outgoing.raw)) == ["ldor-gateway-key.asc"]
    assert outgoing.recipient == TO


def test_receipt_ids_are_stable_and_distinct():
    one = rejection(FACTS, PROVIDER, "advice", TO, HEAD)
    again = rejection(FACTS, PROVIDER, "advice", TO, HEAD)
    assert one.id == again.id

    ack = acknowledgement(FACTS, PROVIDER, 0, (), Routed((), ()), "edition", TO, HEAD)
    assert ack.id != one.id


def test_findings_csv_of_a_file_finding():
    data = findings_csv([Finding("F", None, "Provider Number", "Provider_02", "Provider number must be your 8-digit UKPRN")])
    assert data.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig"))))
    assert rows[1] == ["F", "", "Provider Number", "Provider_02", "Provider number must be your 8-digit UKPRN"]



# -- issue 9: one guard for what a provider wrote; receipts under a size -----------------------------
EVIL_HEADING = '=HYPERLINK("http://evil.example/x","Account locked")'


def formula_under_a_hostile_heading(directory) -> tuple:
    """A return as read: an extra column headed by a formula, and a formula typed under it (Formula_02)."""
    import openpyxl

    person = people(directory, {"E09000019": 1}, today=TODAY)[0]
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["ULN", "Family Name", "First Name", "DOB", "Address", "Post Code", "Reason", EVIL_HEADING])
    sheet.append([person.uln, person.family_name, person.first_name, person.dob, person.address, person.postcode,
                  person.reason, "=1+1"])
    sheet["H1"].data_type = "s"  # the heading typed with a leading apostrophe: text that reads as a formula
    buffer = io.BytesIO()
    book.save(buffer)
    table = read_return(buffer.getvalue())
    checked = validate(table, PROVIDER, today=TODAY)
    assert EVIL_HEADING in [f.column for f in checked.findings]
    return table, checked


def test_a_formula_heading_reaches_the_clear_receipt_inert(directory):
    table, checked = formula_under_a_hostile_heading(directory)
    routed = route(table, checked.accepted, RULES, directory)
    raw = acknowledgement(FACTS, PROVIDER, 1, checked.findings, routed, directory.edition, TO, HEAD).raw
    body = body_of(raw)
    assert EVIL_HEADING not in body and "http://" not in body
    line, = [line for line in body.splitlines() if "Formula_0" in line]
    assert "'=HYPERLINK(" in line and "evil.example" in line  # named, so the provider can find the column
    rows = list(csv.reader(io.StringIO(attachments(raw)[f"{FACTS.reference}-findings.csv"].decode("utf-8-sig"))))
    column, = [r[2] for r in rows[1:] if r[3].startswith("Formula_0")]
    assert column.startswith("'=") and "http://" not in column


@pytest.mark.parametrize("text, shown", [
    ("Post Code", "Post Code"),
    ("=1+1", "'=1+1"), ("+44", "'+44"), ("-3", "'-3"), ("@SUM(A1)", "'@SUM(A1)"), ("\uff1dcmd", "'\uff1dcmd"),
    ("Line\nbreak\tand\x00nul", "Line break and nul"),
    ("\u202eevil\u202c", "evil"),  # a right-to-left override would make the heading read backwards
    ("x" * 100, "x" * 59 + "\u2026"),
    ("see https://evil.example", "see https[:]//evil.example"),
])
def test_the_guard_for_a_line(text, shown):
    from gateway.delivery.guard import Medium, guard

    assert guard(text, Medium.LINE) == shown


def many_findings(count: int) -> list[Finding]:
    columns = ("ULN", "Post Code", "DOB", "Contact e-mail", "phone number")
    rules = ("ULN_04", "Postcode_01", "DOB_02", "Email_01", "Phone_01")
    return [Finding("E" if i % 3 else "W", i + 9, columns[i % 5], rules[i % 5], f"Message for rule {rules[i % 5]}",
                    f"value {i}") for i in range(count)]


def test_a_receipt_for_very_many_findings_stays_under_the_limit():
    """100,000 findings made a 14.5 MB receipt; the body now lists the first few and counts all by rule,
    and the whole list is attached zipped."""
    from gateway.delivery import receipt

    findings = many_findings(100_000)
    raw = acknowledgement(FACTS, PROVIDER, 100_000, findings, Routed((), ()), "edition", TO, HEAD).raw
    assert len(raw) <= receipt.RECEIPT_LIMIT
    body = body_of(raw)
    assert "100,000 in all" in body
    assert len(finding_lines(body)) == receipt.LISTED
    by_rule = [line.split() for line in body.splitlines() if line.startswith("  ULN_04 ")]
    assert [(line[1], line[2]) for line in by_rule] == [("E", "13,333"), ("W", "6,667")]
    files = attachments(raw)
    archive = zipfile.ZipFile(io.BytesIO(files[f"{FACTS.reference}-findings.zip"]))
    rows = list(csv.reader(io.StringIO(archive.read(f"{FACTS.reference}-findings.csv").decode("utf-8-sig"))))
    assert len(rows) == 1 + 100_000
    assert "value 1" not in archive.read(f"{FACTS.reference}-findings.csv").decode()  # values only when sealed
    # Built again after a crash, it carries the same file.
    again = acknowledgement(FACTS, PROVIDER, 100_000, findings, Routed((), ()), "edition", TO, HEAD).raw
    assert attachments(again) == files


def test_when_even_the_zip_is_too_big_the_first_findings_are_attached(monkeypatch):
    from gateway.delivery import receipt

    monkeypatch.setattr(receipt, "RECEIPT_LIMIT", 200_000)
    findings = many_findings(100_000)
    raw = acknowledgement(FACTS, PROVIDER, 100_000, findings, Routed((), ()), "edition", TO, HEAD).raw
    assert len(raw) <= 200_000
    body = " ".join(body_of(raw).split())
    archive = zipfile.ZipFile(io.BytesIO(attachments(raw)[f"{FACTS.reference}-findings.zip"]))
    rows = list(csv.reader(io.StringIO(archive.read(f"{FACTS.reference}-findings.csv").decode("utf-8-sig"))))
    kept = len(rows) - 1
    assert 10_000 < kept < 100_000
    assert f"holds the first {kept:,} of the 100,000 findings" in body
    assert "send the return again" in body


def test_a_sealed_receipt_for_very_many_findings_stays_under_the_limit(ring):
    """Sealed to the provider's key, the zipped list travels inside the encryption, values and all."""
    from gateway.delivery import receipt

    fingerprint = ring.own_fingerprint()
    seal = lambda data: ring.encrypt(data, fingerprint, armour=True)  # noqa: E731
    findings = many_findings(150_000)
    raw = acknowledgement(FACTS, PROVIDER, 150_000, findings, Routed((), ()), "edition", TO, replace(HEAD, seal=seal)).raw
    assert len(raw) <= receipt.RECEIPT_LIMIT
    message = parse(raw)
    assert message.get_content_type() == "multipart/encrypted"
    assert b"value 1" not in raw
    part, = [p for p in message.iter_parts() if p.get_content_type() == "application/octet-stream"]
    inner = parse(ring.decrypt(part.get_payload(decode=True)).data)
    zipped, = [p.get_payload(decode=True) for p in inner.iter_attachments() if p.get_filename().endswith(".zip")]
    table = zipfile.ZipFile(io.BytesIO(zipped)).read(f"{FACTS.reference}-findings.csv").decode("utf-8-sig")
    assert table.count("\r\n") == 1 + 150_000 and "value 149999" in table


def test_a_nil_return_is_called_one_and_never_thanked_for_forwarding_every_row(directory):
    table = read_return(workbook("Example College", "10001234", []))
    assert table.rows == ()
    checked = validate(table, PROVIDER, today=TODAY)
    routed = route(table, checked.accepted, RULES, directory)
    outgoing = acknowledgement(FACTS, PROVIDER, 0, checked.findings, routed, directory.edition, TO, HEAD)
    body = body_of(outgoing.raw)
    assert "nil return" in parse(outgoing.raw)["Subject"]
    flat = " ".join(body.split())
    assert "Nil return" in flat
    assert "You told us of no young people this month; if that is wrong, send the return again with the rows." in flat
    assert "every row was forwarded" not in flat and "Thank you" not in flat
    assert "Rows read: 0" in flat and "Rows forwarded: 0" in flat


def test_a_nil_return_with_a_note_still_says_it_is_one(directory):
    table = read_return(workbook("Example College", "10001234", []))
    routed = route(table, (), RULES, directory)
    note = Finding("W", None, "", "File_02", "The file's encryption is weak")
    body = " ".join(body_of(acknowledgement(FACTS, PROVIDER, 0, (note,), routed, directory.edition, TO, HEAD).raw).split())
    assert "File_02" in body and "Nil return" in body and "every row was forwarded" not in body


# -- issue 11: the provider's own columns are not forwarded, and the receipt says so once ------------
OWN_HEADINGS = ("Tutor Group", "Keyworker Ms Okonjo")  # a heading is the provider's own text: it may name someone


def routed_with_own_columns(directory, extra: bool = False) -> tuple:
    person = people(directory, {"E09000019": 1}, today=TODAY)[0]
    text = (f"ULN,Surname,Forename,Date of Birth,Address,Postcode,Reason,{','.join(OWN_HEADINGS)}\r\n"
            f"{person.uln},{person.family_name},{person.first_name},{person.dob:%d/%m/%Y},{person.address},"
            f"{person.postcode},{person.reason},7B,call after 6pm\r\n")
    table = read_return(text.encode())
    islington = Borough("E09000019", "Islington", ("ldor@islington.example",), extra_columns=extra)
    checked = validate(table, PROVIDER, today=TODAY)
    routed = route(table, checked.accepted, Rules({"E09000019": islington}, {"10001234": PROVIDER}), directory)
    return table, checked, routed


def test_a_clear_receipt_counts_the_columns_left_out_and_never_names_them(directory):
    table, checked, routed = routed_with_own_columns(directory)
    assert table.other_headings() == OWN_HEADINGS
    raw = acknowledgement(FACTS, PROVIDER, 1, checked.findings, routed, directory.edition, TO, HEAD,
                          left_out=table.other_headings()).raw
    body = " ".join(body_of(raw).split())
    assert body.count("2 columns of your file that are not part of the return (such as tutors' notes) were not "
                      "forwarded to any authority.") == 1
    for heading in OWN_HEADINGS:
        assert heading.encode() not in raw


def test_a_receipt_says_which_authorities_asked_for_the_columns(directory):
    table, checked, routed = routed_with_own_columns(directory, extra=True)
    body = " ".join(body_of(acknowledgement(FACTS, PROVIDER, 1, checked.findings, routed, directory.edition, TO, HEAD,
                                            left_out=table.other_headings()).raw).split())
    assert "were forwarded only to Islington (E09000019), which asked for them." in body


def test_a_sealed_receipt_names_the_columns_left_out(directory, ring):
    table, checked, routed = routed_with_own_columns(directory)
    fingerprint = ring.own_fingerprint()
    head = replace(HEAD, seal=lambda data: ring.encrypt(data, fingerprint, armour=True))
    raw = acknowledgement(FACTS, PROVIDER, 1, checked.findings, routed, directory.edition, TO, head,
                          left_out=table.other_headings()).raw
    assert b"Tutor Group" not in raw
    part, = [p for p in parse(raw).iter_parts() if p.get_content_type() == "application/octet-stream"]
    inner = parse(ring.decrypt(part.get_payload(decode=True)).data)
    text = " ".join(inner.get_body(("plain",)).get_content().split())
    assert "were not forwarded to any authority: Tutor Group, Keyworker Ms Okonjo." in text


def test_a_file_with_only_the_returns_columns_gets_no_such_note(sent):
    _, _, _, _, outgoing = sent
    assert "not part of the return" not in body_of(outgoing.raw)


def test_notes_on_a_held_back_row_are_counted_with_it_not_as_warnings():
    # Issue 12 (5): a W note on a row that was not forwarded is not a warning about a forwarded row.
    findings = (
        Finding("E", 2, "Family Name", "Name_01", "The learner's family name and given name must be returned"),
        Finding("W", 2, "DOB", "DOB_02", "Date of birth is not a valid date"),
        Finding("W", 2, "ULN", "ULN_04", "The Unique Learner Number does not pass the checksum calculation"),
        Finding("W", 3, "Address", "Address_01", "Address is missing"),
    )
    body = body_of(acknowledgement(FACTS, PROVIDER, 5, findings, Routed((), ()), "edition", TO, HEAD).raw)
    assert "Rows rejected (not forwarded): 1 (with 2 further notes on them)" in body
    assert "Warnings (on forwarded rows): 1" in body
    assert re.search(r"Rows rejected \(not forwarded\): 1\b", body)
