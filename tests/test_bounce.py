"""Delivery status notifications: RFC 3464 reports in the shapes relays send them, matched to the gateway's
message by the Message-ID they quote or the VERP address they come back to; anything else is not a bounce."""

from __future__ import annotations

from email.message import EmailMessage, Message
from email.mime.base import MIMEBase
from email.mime.message import MIMEMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText

import pytest
from helpers import provider_message

from gateway.config import Admin, Config, Gnupg, Mailbox, Paths, Smtp
from gateway.delivery.bounce import Bounce, parse_bounce, record_bounce
from gateway.ledger import Ledger
from gateway.mail import compose, outgoing_id

ITEM = outgoing_id("LDOR-20250101-ABCDEF0123", "package", "E09000019", "ldor@islington.example")


def original(item_id: str = ITEM) -> bytes:
    return compose(item_id=item_id, sender="ldor@example.org", to="ldor@islington.example",
                   subject="LDOR notifications for Islington", body="covering note\n",
                   attachments=(("p.xlsx.gpg", "application/octet-stream", b"\x85\x02ciphertext"),))


def dsn(returned: bytes | None = None, *, action: str = "failed", status: str = "5.1.1",
        recipients: tuple[tuple[str, str, str], ...] | None = None, whole: bool = False,
        to: str = "ldor@example.org", headers: dict[str, str] | None = None) -> bytes:
    """A delivery status notification as Postfix (returned headers) or Exchange (whole message) writes it."""
    report = MIMEMultipart("report", report_type="delivery-status")
    report["From"] = "MAILER-DAEMON@mx.islington.example (Mail Delivery System)"
    report["To"] = to
    report["Subject"] = "Undelivered Mail Returned to Sender"
    report["Auto-Submitted"] = "auto-replied"
    for name, value in (headers or {}).items():
        report[name] = value
    report.attach(MIMEText("I'm sorry to have to inform you that your message could not be delivered.\n"))
    status_part = MIMEBase("message", "delivery-status")
    fields = [[("Reporting-MTA", "dns; mx.islington.example"), ("Arrival-Date", "Mon, 6 Jan 2025 10:00:00 +0000")]]
    for rcpt, act, code in recipients or (("ldor@islington.example", action, status),):
        fields.append([("Final-Recipient", f"rfc822; {rcpt}"), ("Original-Recipient", f"rfc822;{rcpt}"), ("Action", act),
                       ("Status", code), ("Diagnostic-Code", f"smtp; {code[0]}50 {code} <{rcpt}>: Recipient address rejected")])
    blocks = []
    for block in fields:
        part = Message()
        for name, value in block:
            part[name] = value
        blocks.append(part)
    status_part.set_payload(blocks)  # one header block per part, as RFC 3464 lays them out
    report.attach(status_part)
    if returned is not None:
        if whole:
            from email import message_from_bytes
            report.attach(MIMEMessage(message_from_bytes(returned)))
        else:
            head = returned.split(b"\r\n\r\n", 1)[0].decode() + "\r\n"
            report.attach(MIMEText(head, "rfc822-headers"))
    return report.as_bytes()


def test_a_postfix_bounce_quoting_the_headers():
    bounce = parse_bounce(dsn(original()))
    assert bounce == Bounce(f"{ITEM}@example.org", "5.1.1", "failed", "ldor@islington.example")
    assert bounce.item_ids == (ITEM,) and bounce.failed


def test_a_bounce_returning_the_whole_message():
    bounce = parse_bounce(dsn(original(), whole=True, status="5.2.2"))
    assert (bounce.original_message_id, bounce.status, bounce.action) == (f"{ITEM}@example.org", "5.2.2", "failed")


def test_a_delay_notice_is_a_report_but_not_a_failure():
    bounce = parse_bounce(dsn(original(), action="delayed", status="4.4.7"))
    assert (bounce.action, bounce.status, bounce.failed) == ("delayed", "4.4.7", False)


def test_the_failed_recipient_is_chosen_among_several():
    bounce = parse_bounce(dsn(original(), recipients=(("a@x.example", "delivered", "2.0.0"), ("B@x.example", "failed", "5.7.1"))))
    assert (bounce.recipient, bounce.status, bounce.action) == ("b@x.example", "5.7.1", "failed")


def test_a_bounce_quoting_nothing_is_matched_by_an_original_message_id_header():
    bounce = parse_bounce(dsn(None, headers={"X-Original-Message-ID": f"<{ITEM}@example.org>"}))
    assert bounce.item_ids == (ITEM,)
    bounce = parse_bounce(dsn(None, headers={"Original-Message-ID": f"<{ITEM}@example.org>"}))
    assert bounce.item_ids == (ITEM,)


def test_a_bounce_to_a_verp_address_names_the_message():
    other = outgoing_id("LDOR-20250101-ABCDEF0123", "receipt", "mis@college.example")
    bounce = parse_bounce(dsn(None, to=f"ldor+{ITEM}@example.org"))
    assert bounce.verp_id == ITEM and bounce.original_message_id == "" and bounce.item_ids == (ITEM,)
    both = parse_bounce(dsn(original(other), to=f"ldor+{ITEM}@example.org"))
    assert both.item_ids == (ITEM, other)  # the envelope is surer than a quoted header


def test_an_old_style_text_bounce_to_a_verp_address_is_a_bounce():
    message = EmailMessage()
    message["From"] = "MAILER-DAEMON@mx.example"
    message["To"] = f"ldor+{ITEM}@example.org"
    message["Subject"] = "failure notice"
    message.set_content("Hi. This is the qmail-send program.\n<ldor@islington.example>:\n550 5.1.1 mailbox unavailable\n")
    bounce = parse_bounce(message.as_bytes())
    assert (bounce.verp_id, bounce.status, bounce.action) == (ITEM, "5.1.1", "failed")


def test_an_out_of_office_reply_to_a_verp_address_is_not_a_bounce():
    message = EmailMessage()
    message["From"] = "Officer <ldor@islington.example>"
    message["To"] = f"ldor+{ITEM}@example.org"
    message["Subject"] = "Out of office"
    message.set_content("I am away until Monday (5.1.1 is my room number).\n")
    assert parse_bounce(message.as_bytes()) is None


@pytest.mark.parametrize("raw", [
    provider_message([("r.xlsx.gpg", b"\x85\x01ciphertext")]),
    b"",
    b"\x00\xff not mail at all",
    b"Content-Type: multipart/report; report-type=delivery-status; boundary=\"x\"\r\n\r\n--x\r\n",
])
def test_other_mail_is_not_a_bounce(raw):
    assert parse_bounce(raw) is None


def test_a_read_receipt_is_not_a_bounce():
    mdn = MIMEMultipart("report", report_type="disposition-notification")
    mdn["From"] = "ldor@islington.example"
    mdn.attach(MIMEText("Your message was displayed.\n"))
    notification = MIMEBase("message", "disposition-notification")
    notification.set_payload(f"Original-Message-ID: <{ITEM}@example.org>\nDisposition: manual-action/MDN-sent-manually; displayed\n")
    mdn.attach(notification)
    assert parse_bounce(mdn.as_bytes()) is None


# -- recording it ---------------------------------------------------------------------------------
@pytest.fixture
def config(tmp_path) -> Config:
    return Config(tmp_path / "config.toml", Mailbox("imap.example.org"), Smtp("smtp.example.org", from_address="ldor@example.org"),
                  Gnupg(tmp_path / "gnupg"), Paths(tmp_path, tmp_path, tmp_path, tmp_path / "gateway.db"), Admin("admin@example.org"))


def _ledger(tmp_path, kind: str = "package", item_id: str = ITEM) -> Ledger:
    ledger = Ledger(tmp_path / "gateway.db")
    record = ledger.receive("INBOX", 1, 1, "ab" * 32)
    ledger.record_outcome(record, {"state": "queued"}, [{"id": item_id, "kind": kind, "recipient": "ldor@islington.example",
                                                        "borough": "E09000019" if kind == "package" else "", "rows": 3,
                                                        "sha256": "00"}])
    ledger.mark_sent(item_id)
    return ledger


def _body(message) -> str:
    from email import message_from_bytes, policy

    return message_from_bytes(message.raw, policy=policy.default).get_body(("plain",)).get_content()


def test_a_failed_package_is_marked_bounced_and_the_administrator_told(tmp_path, config):
    ledger = _ledger(tmp_path)
    [notice] = record_bounce(ledger, config, "LDOR-BOUNCE", parse_bounce(dsn(original())))
    row = ledger.outgoing(ITEM)
    assert (row.state, row.status) == ("bounced", "5.1.1")
    assert notice.kind == "alert" and notice.recipient == "admin@example.org"
    text = _body(notice)
    assert ITEM in text and "5.1.1" in text and "E09000019" in text and "NOT reached the borough" in text
    assert "Recipient address rejected" not in text  # the relay's own words stay out
    assert [e.event for e in ledger.events("LDOR-BOUNCE")] == ["bounce"]


def test_a_delay_notice_changes_nothing_and_alerts_no_one(tmp_path, config):
    ledger = _ledger(tmp_path)
    assert record_bounce(ledger, config, "LDOR-BOUNCE", parse_bounce(dsn(original(), action="delayed", status="4.4.7"))) == []
    assert ledger.outgoing(ITEM).state == "sent"


def test_a_bounced_alert_is_recorded_but_never_alerted_about(tmp_path, config):
    alert_id = outgoing_id("LDOR-1", "alert", "x")
    ledger = _ledger(tmp_path, kind="alert", item_id=alert_id)
    assert record_bounce(ledger, config, "LDOR-BOUNCE", parse_bounce(dsn(original(alert_id)))) == []
    assert ledger.outgoing(alert_id).state == "bounced"


def test_a_bounce_about_a_message_the_gateway_never_sent_is_only_noted(tmp_path, config):
    ledger = _ledger(tmp_path)
    stranger = outgoing_id("someone else's message")
    assert record_bounce(ledger, config, "LDOR-BOUNCE", parse_bounce(dsn(original(stranger)))) == []
    assert ledger.outgoing(ITEM).state == "sent"
    assert [e.event for e in ledger.events("LDOR-BOUNCE")] == ["bounce-unmatched"]
