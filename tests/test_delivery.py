"""An outbox that never loses a package, on real Dovecot, aiosmtpd and gpg: packages held for want of a
key and released when it comes, bounces matched to what was sent, and a mailbox outage that does not
stop the outbox."""

from __future__ import annotations

import csv
import email
import email.policy
import io
import logging
from pathlib import Path

import gnupg
from helpers import ADMIN, attachments_of, provider_message, read_xlsx
from leakwatch import tree_values
from servers import export_public, gnupg_home, make_key
from test_bounce import dsn

from gateway import config as config_module
from gateway.delivery.outbox import Outbox
from gateway.delivery.pack import HEADINGS
from gateway.delivery.send import outbox_report
from gateway.demo.sample import people, workbook
from gateway.ledger import Ledger

HACKNEY = "ldor@hackney.example"


def _personal(crowd) -> list[str]:
    found = []
    for p in crowd:
        found += [p.uln, p.family_name, p.address, p.postcode, p.postcode.replace(" ", ""), p.email, p.phone]
    return [s for s in found if s and len(s) > 3]


def _nothing_in_clear(root: Path, personal: list[str]) -> None:
    """No file under the installation holds a name, ULN, postcode or address from the return."""
    # A file gone between listing and reading (SQLite's -shm as the ledger closes) held nothing to find.
    assert tree_values(root, [text.encode() for text in personal]) == {}


def _send_return(deployment, keys, crowd) -> None:
    rows = [p.cells() for p in crowd]
    xlsx = workbook("Example College", "10001234", rows)
    deployment.deliver(provider_message([("Leavers.xlsx.gpg", keys.encrypt_for_gateway(xlsx))]))


def _by_recipient(deployment) -> dict[str, list[email.message.EmailMessage]]:
    found: dict[str, list] = {}
    for message in deployment.captured():
        found.setdefault(str(message["To"]), []).append(message)
    return found


def _text(message) -> str:
    return message.get_body(("plain",)).get_content()


def _decrypt_package(message, home: Path) -> tuple[str, list[list]]:
    (name, data), = attachments_of(message).items()
    result = gnupg.GPG(gnupghome=str(home)).decrypt(data)
    assert result.ok, result.status
    if name.endswith(".csv.gpg"):
        return name, list(csv.reader(io.StringIO(result.data.decode("utf-8-sig"))))
    return name, read_xlsx(result.data)


def _ledger(deployment) -> Ledger:
    return Ledger(deployment.root / "var" / "gateway.db")


def test_a_package_without_a_key_is_held_encrypted_and_sent_when_the_key_arrives(deployment, directory, keys, caplog):
    caplog.set_level(logging.DEBUG)
    key_file = deployment.root / "keys" / f"{HACKNEY}.asc"
    key_file.unlink()
    crowd = people(directory, {"E09000012": 2, "E09000019": 1})
    hackney_people = crowd[:2] if directory.authority(crowd[0].postcode) == "E09000012" else crowd[1:]
    personal = _personal(crowd)
    _send_return(deployment, keys, crowd)

    assert deployment.run_once() == 0
    sent = _by_recipient(deployment)
    assert HACKNEY not in sent and "ldor@islington.example" in sent
    [held] = _ledger(deployment).outgoing_in("held")
    assert (held.borough, held.rows, held.recipient, held.kind) == ("E09000012", 2, HACKNEY, "package")
    outbox = Outbox(deployment.root / "outbox")
    assert outbox.held_ids() == [held.id]
    facts = outbox.held_facts(held.id)
    assert set(facts) == {"id", "reference", "borough", "recipient", "rows", "reasons", "why", "provider", "received", "held_at", "kind"}
    assert (facts["borough"], facts["rows"], sum(facts["reasons"].values())) == ("E09000012", 2, 2)
    # the held copy is ciphertext for the gateway's own key, not the borough's
    blob = outbox.held_ciphertext(held.id)
    assert gnupg.GPG(gnupghome=str(keys.borough_homes[HACKNEY])).decrypt(blob).ok is False
    assert gnupg.GPG(gnupghome=str(keys.gateway_home)).decrypt(blob).ok is True
    [alert] = sent[ADMIN]
    assert "Hackney (E09000012)" in _text(alert) and held.id in _text(alert) and "sent by itself" in _text(alert)
    assert "Rows accepted but not yet sent: 2" in _text(sent["mis@example-college.example"][0])
    _nothing_in_clear(deployment.root, personal)
    report = outbox_report(_ledger(deployment), outbox, config_module.load(deployment.config).smtp)
    assert held.id in report and "NO COPY KEPT" not in report

    # The borough's key arrives: the next run sends the package by itself, and nothing else.
    key_file.write_text(keys.borough_public[HACKNEY])
    deployment.smtp.clear()
    assert deployment.run_once() == 0
    [(to, [package])] = _by_recipient(deployment).items()
    assert to == HACKNEY and package["Message-ID"].startswith(f"<{held.id}@")
    name, rows = _decrypt_package(package, keys.borough_homes[HACKNEY])
    assert name.endswith("-E09000012.csv.gpg") and len(rows) == 3  # headings and two young people
    assert tuple(rows[0]) == HEADINGS  # released in the layout it would have had when sent at once
    found = [dict(zip(HEADINGS, row, strict=False)) for row in rows[1:]]
    assert sorted(r["Family Name"] for r in found) == sorted(p.family_name for p in hackney_people)
    assert sorted(r["ULN"] for r in found) == sorted(p.uln for p in hackney_people)
    assert {(r["Home Authority"], r["Routed By"], r["Gateway Reference"]) for r in found} == {
        ("Hackney", "postcode", held.reference)}
    assert "Notifications: 2" in _text(package)
    ledger = _ledger(deployment)
    assert ledger.outgoing(held.id).state == "sent" and ledger.outgoing_in("held") == []
    assert outbox.held_ids() == [] and list(outbox.held.iterdir()) == [] and outbox.pending() == []
    assert [e.event for e in ledger.events(held.reference)][-2:] == ["released", "sent"]
    _nothing_in_clear(deployment.root, personal)

    deployment.smtp.clear()
    assert deployment.run_once() == 0 and deployment.smtp.messages == []  # released once
    for record in caplog.records:
        line = f"{record.getMessage()} {record.args}"
        for text in personal:
            assert text not in line, f"personal data in a log record: {record.name}"


def test_the_boroughs_other_recipients_are_told_of_a_held_copy(deployment, directory, keys, tmp_path):
    boroughs = deployment.root / "rules" / "boroughs.toml"
    boroughs.write_text(boroughs.read_text().replace(f'recipients = ["{HACKNEY}"]', f'recipients = ["{HACKNEY}", "team@hackney.example"]'))
    with gnupg_home(tmp_path / "team") as home:
        team_key = export_public(home, make_key(home, "Hackney team", "team@hackney.example"))
        (deployment.root / "keys" / "team@hackney.example.asc").write_text(team_key)
        (deployment.root / "keys" / f"{HACKNEY}.asc").unlink()
        crowd = people(directory, {"E09000012": 3})
        _send_return(deployment, keys, crowd)
        assert deployment.run_once() == 0
        sent = _by_recipient(deployment)
        assert HACKNEY not in sent
        package = next(m for m in sent["team@hackney.example"] if attachments_of(m))
        _, rows = _decrypt_package(package, home)
        assert len(rows) == 4
    notice = next(m for m in sent["team@hackney.example"] if not attachments_of(m))
    text = _text(notice)
    assert HACKNEY in text and "Hackney (E09000012)" in text and "3 notification(s)" in text
    assert "Your own copy has been sent to you separately" in text
    for person in _personal(crowd):
        assert person not in text and person not in str(notice["Subject"])
    assert len(sent[ADMIN]) == 1 and HACKNEY in _text(sent[ADMIN][0])
    assert len(sent["team@hackney.example"]) == 2
    assert [r.recipient for r in _ledger(deployment).outgoing_in("held")] == [HACKNEY]


def test_a_bounce_is_matched_to_its_package_and_never_taken_for_a_return(deployment, directory, keys):
    _send_return(deployment, keys, people(directory, {"E09000019": 1}))
    assert deployment.run_once() == 0
    [package] = [m for m in deployment.smtp.messages if m.rcpt_tos == ["ldor@islington.example"]]
    item_id = email.message_from_bytes(package.data, policy=email.policy.default)["Message-ID"].strip("<>").partition("@")[0]
    deployment.deliver(dsn(package.data))
    deployment.smtp.clear()

    assert deployment.run_once() == 0
    row = _ledger(deployment).outgoing(item_id)
    assert (row.state, row.status) == ("bounced", "5.1.1")
    [captured] = deployment.smtp.messages  # the alert, and no receipt to MAILER-DAEMON
    assert captured.rcpt_tos == [ADMIN]
    text = _text(email.message_from_bytes(captured.data, policy=email.policy.default))
    assert item_id in text and "5.1.1" in text and "E09000019" in text
    assert len(deployment.imap.list_uids("Processed")) == 2
    assert deployment.imap.list_uids("Quarantine") == [] and deployment.imap.list_uids("INBOX") == []
    report = outbox_report(_ledger(deployment), Outbox(deployment.root / "outbox"), config_module.load(deployment.config).smtp)
    assert "Bounced after sending: 1" in report and item_id in report


def test_with_verp_a_bounce_that_quotes_nothing_still_finds_its_message(deployment, directory, keys):
    config = deployment.config
    config.write_text(config.read_text().replace('from_address = "ldor@example.org"', 'from_address = "ldor@example.org"\nverp = true'))
    _send_return(deployment, keys, people(directory, {"E09000019": 1}))
    assert deployment.run_once() == 0
    [package] = [m for m in deployment.smtp.messages if m.rcpt_tos == ["ldor@islington.example"]]
    local, _, domain = package.mail_from.partition("@")
    item_id = local.partition("+")[2]
    assert local.startswith("ldor+") and domain == "example.org" and len(item_id) == 32
    deployment.deliver(dsn(None, to=package.mail_from, status="5.2.1"))
    deployment.smtp.clear()
    assert deployment.run_once() == 0
    assert _ledger(deployment).outgoing(item_id).status == "5.2.1"
    assert [m.rcpt_tos for m in deployment.smtp.messages] == [[ADMIN]]


def test_the_outbox_is_delivered_even_when_the_mailbox_is_down(deployment, directory, keys):
    _send_return(deployment, keys, people(directory, {"E09000019": 1}))
    deployment.smtp.fail_with = "451 4.3.0 Try again later"
    assert deployment.run_once() == 0 and deployment.smtp.messages == []
    deployment.smtp.fail_with = None
    deployment.imap.stop()
    assert deployment.run_once() == 2  # the mailbox cannot be reached ...
    assert sorted(m.rcpt_tos[0] for m in deployment.smtp.messages) == ["ldor@islington.example", "mis@example-college.example"]
    assert Outbox(deployment.root / "outbox").pending() == []  # ... but what was queued went out
    assert _ledger(deployment).outgoing_in("queued") == []
