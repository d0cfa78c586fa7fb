"""The whole journey on real servers: Dovecot -> gateway -> aiosmtpd, with real gpg keys."""

from __future__ import annotations

import csv
import io
import logging
import re
import sqlite3
import time
from datetime import date

import gnupg
import pytest
from helpers import (
    ADMIN,
    BOROUGHS,
    GATEWAY_ADDRESS,
    PROVIDER_SENDER,
    attachments_of,
    provider_message,
    read_xlsx,
)

from gateway.delivery.pack import HEADINGS
from gateway.demo.sample import people, valid_uln, with_changes, workbook

NOT_CONFIGURED = "E09000028"  # Southwark: residents there are not served by this deployment


def _absent_postcode(directory) -> str:
    """A postcode of the right shape that the ONS directory does not hold."""
    for candidate in ("N1 9ZZ", "E8 9ZZ", "NW1 9ZZ", "N7 9ZZ", "EC1V 9ZZ"):
        if directory.authority(candidate) is None:
            return candidate
    raise AssertionError("no absent postcode found")


@pytest.fixture
def messy_return(directory):
    """34 young people: residents of three served boroughs and one unserved, plus rows with mistakes."""
    crowd = people(directory, {"E09000019": 10, "E09000007": 9, "E09000012": 8, NOT_CONFIGURED: 3})
    bad = people(directory, {"E09000019": 4}, seed=99)
    bad = [
        with_changes(bad[0], postcode="N1 XYZ"),  # Postcode_02: to the college's own borough, Islington, with a note
        with_changes(bad[1], family_name=""),  # FamilyName_01: forwarded with a note
        with_changes(bad[2], uln="9276308687"),  # ULN_04: forwarded with a note, its ULN left out
        with_changes(bad[3], postcode=_absent_postcode(directory)),  # Postcode_15: to Islington, with a note
    ]
    rows = [p.cells() for p in crowd] + [p.cells() for p in bad]
    two_reasons = people(directory, {"E09000007": 1}, seed=5)[0]
    cells = two_reasons.cells()
    cells[8] = cells[9] = "X"  # Joiner and Leaver both ticked: Reason_02, forwarded as a Leaver
    rows.append(cells)
    everyone = crowd + bad + [two_reasons]
    return crowd + bad + [two_reasons], everyone, workbook("Example College", "10001234", rows)


def _personal_strings(everyone) -> list[str]:
    found = []
    for p in everyone:
        found += [p.uln, p.family_name, p.address, p.postcode, p.postcode.replace(" ", ""), p.email, p.phone]
    return [s for s in found if s and len(s) > 3]


def _package_rows(message, keys, address):
    (name, data), = attachments_of(message).items()
    gpg = gnupg.GPG(gnupghome=str(keys.borough_homes[address]))
    result = gpg.decrypt(data)
    assert result.ok, result.status
    if name.endswith(".csv.gpg"):
        rows = list(csv.reader(io.StringIO(result.data.decode("utf-8-sig"))))
    else:
        rows = read_xlsx(result.data)
    return name, data, rows


def test_a_return_reaches_each_home_borough_and_nothing_else(deployment, messy_return, keys, caplog):
    crowd, everyone, xlsx = messy_return
    caplog.set_level(logging.DEBUG)
    deployment.deliver(provider_message([("Leavers Nov - Aisha Adeyemi.xlsx.gpg", keys.encrypt_for_gateway(xlsx))],
                                        subject="Return incl. Aisha Adeyemi"))

    assert deployment.run_once() == 0
    records = list(caplog.records)  # the gateway's own records, before the test decrypts anything

    messages = deployment.captured()
    by_recipient = {}
    for message in messages:
        by_recipient.setdefault(str(message["To"]), []).append(message)
    recipients = {address for _, address, _ in BOROUGHS.values()}
    assert set(by_recipient) == recipients | {PROVIDER_SENDER}
    assert all(len(v) == 1 for v in by_recipient.values())

    # Each borough gets exactly its residents' rows, decryptable with its key and no other's.
    for code, (_name, address, fmt) in BOROUGHS.items():
        filename, ciphertext, rows = _package_rows(by_recipient[address][0], keys, address)
        assert filename.endswith(f"{code}.{fmt}.gpg")
        heading, body = rows[0], [dict(zip(rows[0], row, strict=False)) for row in rows[1:]]
        assert tuple(heading) == HEADINGS  # one layout for every package
        # A ULN failing its check (9276308687) is left out of the package: its cell is empty.
        expected = {("" if p.uln == "9276308687" else p.uln): p for p in crowd if deployment_code(p, code)}
        assert {str(r["ULN"] or "") for r in body} == set(expected)
        for row in body:
            person = expected[str(row["ULN"] or "")]
            assert (row["Family Name"] or "", row["First Name"], row["Post Code"]) == (person.family_name, person.first_name, person.postcode)
            assert str(row["Provider UKPRN"]) == "10001234"
        for other, home in keys.borough_homes.items():
            if other != address:
                assert not gnupg.GPG(gnupghome=str(home)).decrypt(ciphertext).ok

    # Nothing personal travels in clear: not in any message's clear parts, subject or attachment names.
    personal = _personal_strings(everyone) + ["Aisha Adeyemi", "Leavers Nov"]
    for captured in deployment.smtp.messages:
        for text in personal:
            assert text.encode() not in captured.data, f"personal data in clear mail to {captured.rcpt_tos}"

    # The receipt's counts are right.
    receipt = by_recipient[PROVIDER_SENDER][0]
    body = receipt.get_body(("plain",)).get_content()
    assert re.search(r"Rows read:\s+35\b", body)
    assert re.search(r"Rows forwarded:\s+32\b", body)
    assert re.search(r"Rows rejected \(not forwarded\): 3\b", body)
    for name in ("Islington (E09000019): 14", "Camden (E09000007): 10", "Hackney (E09000012): 8"):
        assert name in body
    for rule in ("Postcode_02", "FamilyName_01", "ULN_04", "Postcode_15", "Reason_02", "Route_01"):
        assert rule in body
    assert body.count("Route_01") == 3
    findings = attachments_of(receipt)
    assert any(n.endswith("findings.csv") for n in findings)
    assert "ldor-gateway-key.asc" in findings

    # The message has left INBOX for Processed; nothing stays queued; the ledger holds no personal data.
    assert deployment.imap.list_uids("INBOX") == []
    assert len(deployment.imap.list_uids("Processed")) == 1
    assert list((deployment.root / "outbox" / "new").iterdir()) == []
    database = (deployment.root / "var" / "gateway.db")
    dump = "\n".join(sqlite3.connect(database).iterdump())
    for text in personal:
        assert text not in dump
    assert records
    for record in records:
        line = record.getMessage()
        for text in personal:
            assert text not in line, f"personal data in a log record: {record.name}"

    # A second run sends nothing new.
    sent = len(deployment.smtp.messages)
    assert deployment.run_once() == 0
    assert len(deployment.smtp.messages) == sent


def deployment_code(person, code) -> bool:
    """Whether the row goes to `code`: its postcode's authority, or the college's (Islington) when it has none."""
    return (_DIRECTORY.authority(person.postcode) or "E09000019") == code


from gateway.reference.postcodes import Directory  # noqa: E402

_DIRECTORY = Directory()


def test_unknown_sender_is_quarantined_and_the_administrator_told(deployment, messy_return, keys):
    _, _, xlsx = messy_return
    deployment.deliver(provider_message([("Okafor-Femi-return.xlsx.gpg", keys.encrypt_for_gateway(xlsx))],
                                        sender="someone@elsewhere.example", subject="Leaver Femi Okafor"))

    assert deployment.run_once() == 0

    assert deployment.imap.list_uids("INBOX") == []
    assert len(deployment.imap.list_uids("Quarantine")) == 1
    (notice,) = deployment.captured()
    assert str(notice["To"]) == ADMIN
    text = notice.get_body(("plain",)).get_content()
    # Issue 12 (5): who sent it and why it was set aside; never the subject or a file's name (a young person's).
    assert "Sender's address: someone@elsewhere.example" in text and "sender not registered for any provider" in text
    assert "Okafor" not in text and "Femi" not in text and "Okafor" not in str(notice["Subject"])


def test_a_file_the_gateway_cannot_decrypt_gets_a_rejection_receipt(deployment, keys):
    foreign = gnupg.GPG(gnupghome=str(keys.borough_homes["ldor@camden.example"]))
    result = foreign.encrypt(b"not for the gateway", ["ldor@camden.example"], always_trust=True, armor=False)
    deployment.deliver(provider_message([("return.xlsx.gpg", result.data)]))

    assert deployment.run_once() == 0

    (receipt,) = deployment.captured()
    assert str(receipt["To"]) == PROVIDER_SENDER
    text = receipt.get_body(("plain",)).get_content()
    assert "NOT ACCEPTED" in text
    assert "not the gateway's" in text and keys.gateway_fpr in text
    assert len(deployment.imap.list_uids("Processed")) == 1


def test_a_message_seen_again_under_a_new_uidvalidity_is_recognised_by_its_hash(deployment, directory, keys):
    rows = [p.cells() for p in people(directory, {"E09000019": 2})]
    raw = provider_message([("r.xlsx.gpg", keys.encrypt_for_gateway(workbook("Example College", "10001234", rows)))])
    deployment.deliver(raw)
    assert deployment.run_once() == 0
    sent = len(deployment.smtp.messages)
    before = _uidvalidity(deployment.imap)
    # Rebuild INBOX's index as a server restored from backup would: Dovecot gives it a new UIDVALIDITY.
    deployment.imap.stop()
    maildir = deployment.imap.home / "Maildir"
    for index in list(maildir.glob("dovecot-uidlist*")) + list(maildir.glob("dovecot.index*")):
        index.unlink()
    time.sleep(1.1)  # UIDVALIDITY comes from the clock
    deployment.imap.start()
    assert _uidvalidity(deployment.imap) != before
    deployment.deliver(raw)
    assert deployment.run_once() == 0
    assert len(deployment.smtp.messages) == sent
    assert deployment.imap.list_uids("INBOX") == [] and len(deployment.imap.list_uids("Processed")) == 2


def _uidvalidity(imap) -> int:
    with imap.client() as client:
        status = client.status("INBOX", "(UIDVALIDITY)")[1][0].decode()
    return int(re.search(r"UIDVALIDITY (\d+)", status).group(1))


def test_unknown_senders_get_a_reply_only_when_the_configuration_asks(deployment, messy_return, keys):
    _, _, xlsx = messy_return
    config = deployment.config.read_text()
    deployment.config.write_text(config.replace("[admin]\n", "[admin]\nreply_to_unknown_senders = true\n"))
    deployment.deliver(provider_message([("return.xlsx.gpg", keys.encrypt_for_gateway(xlsx))], sender="new@college.example"))
    assert deployment.run_once() == 0
    sent = {str(m["To"]): m for m in deployment.captured()}
    assert set(sent) == {ADMIN, "new@college.example"}
    reply = sent["new@college.example"].get_body(("plain",)).get_content()
    assert "not registered" in reply and ADMIN in reply


def test_an_inline_pgp_note_with_no_return_from_a_registered_provider_is_answered(deployment, keys):
    """Thunderbird's "encrypted-inline": the body is an armoured PGP message and nothing is attached.
    Every message from a registered sender gets an answer: here, "no return attached"."""
    from email.message import EmailMessage

    note = keys.gpg(keys.provider_home).encrypt("Please find our return attached.\n", [keys.gateway_fpr],
                                                always_trust=True, armor=True)
    assert note.ok, note.status
    message = EmailMessage()
    message["From"] = f"College MIS <{PROVIDER_SENDER}>"
    message["To"] = GATEWAY_ADDRESS
    message["Subject"] = "LDOR return"
    message.set_content(str(note))
    deployment.deliver(message.as_bytes())
    assert deployment.run_once() == 0
    [answer] = deployment.captured()
    assert str(answer["To"]) == PROVIDER_SENDER
    assert str(answer["Subject"]).startswith("LDOR return not accepted")
    assert "no return attached" in answer.get_body(("plain",)).get_content()
    assert len(deployment.imap.list_uids("Processed")) == 1


# -- notify first (issue 10, item 1): a row naming a person and a notification reaches its borough ----
def _faulty_return(directory):
    """One row per clerical fault, each still naming a person and a notification; and the three faults
    that hold a row back. Each row is told apart by its address ("N Notify Close")."""
    base = people(directory, {"E09000019": 7, "E09000007": 4, "E09000012": 3}, seed=31)
    tag = [with_changes(p, address=f"{i + 1} Notify Close") for i, p in enumerate(base)]
    faults = [  # (person, ticks (Joiner, Leaver, At risk) or None for the person's own, rule, severity)
        (tag[0], None, None, None),
        (with_changes(tag[1], uln=""), None, "ULN_01", "W"),
        (with_changes(tag[2], uln="9999999999"), None, "ULN_02", "W"),
        (with_changes(tag[3], uln="12345"), None, "ULN_03", "W"),
        (with_changes(tag[4], uln="9276308687"), None, "ULN_04", "W"),
        (tag[7], ["X", "X", ""], "Reason_02", "W"),  # joined and left in the same month: a Leaver
        (tag[8], ["X", "", "X"], "Reason_02", "W"),  # At risk over Joiner
        (with_changes(tag[9], dob=""), None, "DOB_01", "W"),
        (with_changes(tag[11], dob="31/02/2008"), None, "DOB_02", "W"),
        (with_changes(tag[12], dob="not known"), None, "DOB_02", "W"),
        (with_changes(tag[13], dob=date(2030, 1, 1)), None, "DOB_03", "W"),
        (with_changes(tag[10], family_name=""), None, "FamilyName_01", "W"),
        (with_changes(tag[5], family_name="", first_name=""), None, "Name_01", "E"),
        (tag[6], ["", "", ""], "Reason_01", "E"),
        (with_changes(tag[6], address="99 Notify Close", uln=valid_uln(7), dob=date(1990, 3, 1)), None, "DOB_05", "E"),
    ]
    rows = []
    for person, ticks, _, _ in faults:
        cells = person.cells()
        if ticks is not None:
            cells[8:11] = ticks
        rows.append(cells)
    return faults, workbook("Example College", "10001234", rows)


def test_each_clerical_fault_is_forwarded_with_a_note_and_only_the_three_faults_hold_a_row_back(deployment, directory, keys):
    faults, xlsx = _faulty_return(directory)
    deployment.deliver(provider_message([("return.xlsx.gpg", keys.encrypt_for_gateway(xlsx))]))
    assert deployment.run_once() == 0
    by_recipient = {str(m["To"]): m for m in deployment.captured()}

    # Every borough's package, decrypted by the borough: its rows by address.
    received = {}
    for code, (_, address, _) in BOROUGHS.items():
        _, _, rows = _package_rows(by_recipient[address], keys, address)
        heading = rows[0]
        for row in rows[1:]:
            cells = dict(zip(heading, row, strict=False))
            received[cells["Address"]] = (code, cells)

    first_row = 9  # sample.workbook: headings on row 8
    for person, ticks, rule, severity in faults:
        if severity == "E":
            assert person.address not in received, rule
            continue
        code, cells = received[person.address]
        assert code == directory.authority(person.postcode), rule  # its home borough, no other
        assert (cells["First Name"], cells["Post Code"]) == (person.first_name, person.postcode)
        if rule == "ULN_04":
            assert cells["ULN"] in (None, ""), "a ULN failing its check must not reach the borough"
        elif rule in ("ULN_03", "ULN_02"):
            assert str(cells["ULN"]) == person.uln
        if ticks == ["X", "X", ""]:
            assert cells["Notification"] == "Leaver"
        elif ticks == ["X", "", "X"]:
            assert cells["Notification"] == "At risk"
    assert len(received) == 12
    for message in deployment.smtp.messages:  # the failed ULN is in no mail, even encrypted packages carry none
        assert b"9276308687" not in message.data

    # The receipt lists each note against its row, says the row was forwarded, and what to correct.
    body = by_recipient[PROVIDER_SENDER].get_body(("plain",)).get_content()
    assert re.search(r"Rows read:\s+15\b", body)
    assert re.search(r"Rows forwarded:\s+12\b", body)
    assert re.search(r"Rows rejected \(not forwarded\): 3\b", body)
    lines = {(l.split()[0], l.split()[1], next(w for w in l.split() if "_0" in w)): l
             for l in body.splitlines() if l.startswith("  ") and l.split() and l.split()[0] in ("E", "W")}
    for number, (_, _, rule, severity) in enumerate(faults, start=first_row):
        if rule is None:
            continue
        line = lines[(severity, str(number), rule)]
        if severity == "W":
            assert "forwarded" in line and "next time" in line, line
    assert "forwarded with its ULN left out" in lines[("W", str(first_row + 4), "ULN_04")]
