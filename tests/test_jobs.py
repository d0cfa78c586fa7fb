"""The dated jobs, each driven by its own clock on a ledger written by real runs (Dovecot, aiosmtpd, gpg,
SQLite), its mail read as the relay received it."""

from __future__ import annotations

import email
import email.policy
import io
import json
from datetime import UTC, datetime, timedelta

import openpyxl
import pytest
from helpers import ADMIN, PROVIDER_SENDER, PROVIDER_UKPRN, provider_message
from servers import export_public, gnupg_home, make_key

from gateway.admin.audit import audit_verify_text, verify
from gateway.admin.jobs import (
    already_done,
    email_monthly_report,
    key_expiry_warnings,
    purge_old_details,
    send_reminders,
)
from gateway.admin.report import LOCAL, monthly_report
from gateway.cli import build
from gateway.delivery.send import flush
from gateway.demo.sample import people, workbook

CAMDEN = "ldor@camden.example"


def _return(directory, keys, seed: int, sender: str = PROVIDER_SENDER, ukprn: str = PROVIDER_UKPRN, **where) -> bytes:
    rows = [p.cells() for p in people(directory, where or {"E09000019": 2}, seed=seed)]
    xlsx = workbook("Example College", ukprn, rows)
    return provider_message([("r.xlsx.gpg", keys.encrypt_for_gateway(xlsx))], sender=sender)


def _mail(deployment) -> list[email.message.EmailMessage]:
    return [email.message_from_bytes(m.data, policy=email.policy.default) for m in deployment.smtp.messages]


def _sent(deployment, gateway) -> list[tuple[str, str, email.message.EmailMessage]]:
    """Flush the outbox; each message the relay took since the last call: (to, body text, message). Then forget them."""
    flush(gateway.outbox, gateway.ledger, gateway.config.smtp)
    found = []
    for message in _mail(deployment):
        found.append((str(message["To"]), message.get_body(("plain",)).get_content(), message))
    deployment.smtp.clear()
    return found


def _at_work_since(gateway, moment: datetime) -> None:
    """The gateway has been running since `moment`: its first event is dated then (the ledger is younger)."""
    gateway.ledger.event("test", "installed")
    with gateway.ledger.db.conn:
        gateway.ledger.db.conn.execute("update events set at = ? where reference = 'test'",
                                       [moment.astimezone(UTC).isoformat(timespec="seconds")])


# -- key expiry ---------------------------------------------------------------------------------------
def test_a_key_about_to_expire_is_warned_of_at_30_14_and_1_days_and_once_expired(deployment, directory, keys, tmp_path):
    with gnupg_home(tmp_path / "camden-new") as home:
        fingerprint = make_key(home, "Camden officer", CAMDEN, expire="10d")
        (deployment.root / "keys" / f"{CAMDEN}.asc").write_text(export_public(home, fingerprint))
    deployment.deliver(_return(directory, keys, seed=3, E09000019=1, E09000007=2))
    assert deployment.run_once() == 0
    assert CAMDEN in {r for m in deployment.smtp.messages for r in m.rcpt_tos}  # the short-lived key works today
    deployment.smtp.clear()
    gateway = build(deployment.config)
    expires = next(k for k in gateway.keyring.public_keys() if k.fingerprint == fingerprint).expires_on
    today = datetime.now(UTC)

    assert key_expiry_warnings(gateway, today - timedelta(days=25)) == 0  # 35 days left: too early
    stages = []
    for moment in (today - timedelta(days=15), today, today + timedelta(days=9), today + timedelta(days=11)):
        assert key_expiry_warnings(gateway, moment) == 2  # the recipient and the administrator
        assert key_expiry_warnings(gateway, moment) == 0  # once per stage
        assert key_expiry_warnings(build(deployment.config), moment) == 0  # and after a restart
        mail = _sent(deployment, gateway)
        assert sorted(to for to, _, _ in mail) == sorted([CAMDEN, ADMIN])
        to_camden = next(body for to, body, _ in mail if to == CAMDEN)
        to_admin = next(body for to, body, _ in mail if to == ADMIN)
        for text in (to_camden, to_admin):
            assert fingerprint in text and "Camden (E09000007)" in text and f"{expires:%Y-%m-%d}" in text
            assert "What to do" in text
            assert "Islington" not in text and "Hackney" not in text
        assert ADMIN in to_camden  # where to send the renewed key
        stages.append(to_camden)
    assert f"(in {(expires - (today - timedelta(days=15)).date()).days} days)" in stages[0]
    assert "expires on" in stages[2] and ("tomorrow" in stages[2] or "today" in stages[2])
    assert "expired on" in stages[3] and "held" in stages[3]
    events = [e["reference"] for e in gateway.ledger.db.query("select reference from events where event = 'job-done'")]
    assert events == [f"key-expiry {fingerprint} {expires} {stage}" for stage in ("30d", "14d", "1d", "expired")]


# -- reminders --------------------------------------------------------------------------------------------
QUIET = ("10005555", "Quiet School", "data@quiet-school.example")  # sends nothing
REFUSED = ("10006666", "Refused Academy", "mis@refused-academy.example")  # sends a file that is not a return
FORWARDING = ("10007777", "Forwarding College", "@forwarding.example", "office@forwarding.example")  # receipts_to
DOMAIN_ONLY = ("10008888", "Domain College", "@domain-college.example")  # no address to write to


@pytest.fixture
def providers(deployment):
    path = deployment.root / "rules" / "providers.toml"
    text = path.read_text()
    for ukprn, name, sender, *to in (QUIET, REFUSED, FORWARDING, DOMAIN_ONLY):
        text += f'\n[{ukprn}]\nname = "{name}"\nsenders = ["{sender}"]\nhost_la = "E09000019"\n'
        text += f'receipts_to = "{to[0]}"\n' if to else ""
    path.write_text(text)


def test_reminders_go_once_a_month_to_providers_without_an_accepted_return(deployment, directory, keys, providers):
    deployment.deliver(_return(directory, keys, seed=4))
    deployment.deliver(provider_message([("r.gpg", keys.encrypt_for_gateway(b"minutes of a meeting"))], sender=REFUSED[2]))
    assert deployment.run_once() == 0
    deployment.smtp.clear()
    gateway = build(deployment.config)
    this_month = datetime.now(LOCAL)
    _at_work_since(gateway, this_month.replace(day=1, hour=0, minute=0, second=0, microsecond=0))
    day_before = this_month.replace(day=4, hour=9, minute=0)
    reminder_day = this_month.replace(day=5, hour=7, minute=0)

    assert send_reminders(gateway, day_before) == 0
    assert send_reminders(gateway, reminder_day) == 4  # Quiet, Refused, Forwarding, and the administrator about Domain
    assert send_reminders(gateway, reminder_day + timedelta(days=3)) == 0
    assert send_reminders(build(deployment.config), reminder_day) == 0  # not again after a restart
    mail = _sent(deployment, gateway)
    assert sorted(to for to, _, _ in mail) == sorted([QUIET[2], REFUSED[2], FORWARDING[3], ADMIN])
    quiet = next(body for to, body, _ in mail if to == QUIET[2])
    assert f"UKPRN {QUIET[0]}" in quiet and f"Due by:   10 {this_month:%B %Y}" in quiet
    subject = next(str(m["Subject"]) for to, _, m in mail if to == QUIET[2])
    assert subject == f"LDOR return for {this_month:%B %Y}: reminder (UKPRN {QUIET[0]})"
    refused = next(body for to, body, _ in mail if to == REFUSED[2])
    assert "NOT ACCEPTED" in refused  # its return was refused, so it has not returned
    alert = next(body for to, body, _ in mail if to == ADMIN)
    assert DOMAIN_ONLY[0] in alert and "could not be reminded" in alert and QUIET[0] not in alert
    assert already_done(gateway.ledger, f"reminder {this_month:%Y-%m} {QUIET[0]}")
    assert not already_done(gateway.ledger, f"reminder {this_month:%Y-%m} {PROVIDER_UKPRN}")

    # Next month nobody has returned yet, Example College included; after the due day they are overdue.
    next_month = (this_month.replace(day=28) + timedelta(days=5)).replace(day=12, hour=7, minute=0)
    assert send_reminders(gateway, next_month) == 5
    mail = _sent(deployment, gateway)
    assert PROVIDER_SENDER in {to for to, _, _ in mail}
    late = next(body for to, body, _ in mail if to == PROVIDER_SENDER)
    assert "it was due by 10" in late and f"{next_month:%B %Y}" in late


def test_a_gateway_installed_after_the_reminder_day_reminds_no_one_that_month(deployment, directory, keys, providers):
    deployment.deliver(_return(directory, keys, seed=5))
    assert deployment.run_once() == 0
    gateway = build(deployment.config)
    month = datetime.now(LOCAL).replace(hour=12, minute=0, second=0, microsecond=0)
    with gateway.ledger.db.conn:  # installed on the 10th
        gateway.ledger.db.conn.execute("update events set at = ?", [month.replace(day=10).astimezone(UTC).isoformat()])
    assert send_reminders(gateway, month.replace(day=20)) == 0
    _at_work_since(gateway, month.replace(day=4))  # had it been at work on the 4th, the reminders would have gone
    assert send_reminders(gateway, month.replace(day=20)) == 4


# -- retention ----------------------------------------------------------------------------------------------
LONG_AGO = timedelta(days=500)


def _make_old(ledger, before: str, back: timedelta) -> None:
    """Move every time the ledger holds from before `before` back by `back` (as if written then)."""
    def older(column: str, table: str) -> str:
        return (f"update {table} set {column} = strftime('%Y-%m-%dT%H:%M:%S+00:00', {column}, '-{back.days} days') "
                f"where {column} is not null and {column} < '{before}'")

    with ledger.db.conn:
        for table, columns in (("messages", ("first_seen", "updated")), ("outgoing", ("queued_at", "sent_at")),
                               ("events", ("at",)), ("files", ("first_seen",))):
            for column in columns:
                ledger.db.conn.execute(older(column, table))


def test_retention_purges_old_details_keeps_counts_the_report_and_a_verifiable_trail(deployment, directory, keys):
    deployment.deliver(_return(directory, keys, seed=6, E09000019=2, E09000012=1))
    assert deployment.run_once() == 0
    gateway = build(deployment.config)
    # An alert the relay refused, set aside in outbox/bad/.
    deployment.smtp.fail_with, deployment.smtp.fail_on = "550 5.1.1 no such mailbox", "rcpt"
    from gateway.delivery.alerts import notify_admin

    notify_admin(gateway.config, gateway.ledger, gateway.outbox, "daemon", "test alert", "A test.")
    flush(gateway.outbox, gateway.ledger, gateway.config.smtp)
    deployment.smtp.fail_with = None
    assert len(gateway.outbox.set_aside_ids()) == 1
    old = gateway.ledger.db.query("select reference from messages").__next__()["reference"]
    _make_old(gateway.ledger, "9999", LONG_AGO)  # all of it, 500 days ago
    old_month = f"{(datetime.now(LOCAL) - LONG_AGO):%Y-%m}"
    moment = datetime.now(UTC)
    before = monthly_report(gateway.ledger, gateway.rules, old_month, now=moment)
    assert before.total.notifications == 3

    deployment.deliver(_return(directory, keys, seed=7))  # and one return today
    assert deployment.run_once() == 0
    gateway = build(deployment.config)
    ledger = gateway.ledger
    new = next(r["reference"] for r in ledger.db.query("select reference from messages where reference != ?", [old]))

    assert purge_old_details(gateway, datetime.now(UTC)) == 0
    # The old message keeps its counts, not its hash or mailbox place; the new one is whole.
    message = ledger.message(old)
    assert message.sha256 == f"purged-{old}" and message.uid is None and message.mailbox is None
    assert (message.provider, message.rows_read, message.rows_forwarded, message.outcome) == (PROVIDER_UKPRN, 3, 3, "accepted")
    assert len(ledger.message(new).sha256) == 64 and ledger.message(new).uid is not None
    # Its packages keep borough, recipient, rows and state; receipts and alerts about it are gone.
    kept = list(ledger.db.query("select * from outgoing where reference = ?", [old]))
    assert sorted((r["kind"], r["borough"], r["rows"], r["state"], r["sha256"]) for r in kept) == [
        ("package", "E09000012", 1, "sent", ""), ("package", "E09000019", 2, "sent", "")]
    assert list(ledger.db.query("select * from outgoing where reference = 'daemon'")) == []
    assert gateway.outbox.set_aside_ids() == []  # the refused alert's copy went with its row
    assert {r["kind"] for r in ledger.db.query("select kind from outgoing where reference = ?", [new])} == {"package", "receipt"}
    # Events and file hashes of the old message are gone, the new message's stay.
    assert ledger.events(old) == [] and ledger.events(new) != []
    assert [r["reference"] for r in ledger.db.query("select reference from files")] == [new]
    # The month of the old message reports as before.
    after = monthly_report(ledger, gateway.rules, old_month, now=moment)
    assert after.text() == before.text()
    # The audit trail verifies from its checkpoint, through the purge it records.
    assert verify(ledger) == []
    code, text = audit_verify_text(ledger)
    assert code == 0 and "purged by retention" in text
    first_new = min(e.id for e in ledger.events(new))
    assert list(ledger.db.query("select through from audit_checkpoint"))[0]["through"] == first_new - 1

    # Once a day: again today does nothing; tomorrow finds nothing more to purge.
    assert purge_old_details(build(deployment.config), datetime.now(UTC)) == 0
    assert len(list(ledger.db.query("select * from events where event = 'purged'"))) == 1
    purge_old_details(gateway, datetime.now(UTC) + timedelta(days=1))
    done = [json.loads(e["detail"]) for e in ledger.db.query("select detail from events where event = 'job-done' order by id")]
    assert done[-1] == {"events": 0, "files": 0, "messages": 0, "outgoing": 0, "packages": 0, "set_aside": 0}
    assert (done[0]["messages"], done[0]["packages"], done[0]["outgoing"], done[0]["set_aside"]) == (1, 2, 2, 1)  # outgoing: the receipt, the alert
    assert verify(ledger) == []


# -- the monthly report -----------------------------------------------------------------------------------
def test_the_monthly_report_goes_to_the_administrator_once_for_the_month_before(deployment, directory, keys):
    deployment.deliver(_return(directory, keys, seed=8, E09000019=1, E09000007=1))
    assert deployment.run_once() == 0
    deployment.smtp.clear()
    gateway = build(deployment.config)
    this_month = datetime.now(LOCAL)
    next_month = (this_month.replace(day=28) + timedelta(days=5)).replace(day=1, hour=7, minute=0)

    assert email_monthly_report(gateway, this_month) == 0  # the gateway was not at work the month before
    assert email_monthly_report(gateway, next_month) == 1
    assert email_monthly_report(gateway, next_month + timedelta(days=2)) == 0
    assert email_monthly_report(build(deployment.config), next_month) == 0
    (to, body, message), = _sent(deployment, gateway)
    assert to == ADMIN
    assert str(message["Subject"]).startswith(f"LDOR monitoring report for {this_month:%Y-%m}")
    assert f"LDOR monitoring report for {this_month:%Y-%m}" in body
    assert "Example College" in body and "Intact" in body and "Head: entry" in body
    (attachment,) = list(message.iter_attachments())
    assert attachment.get_filename() == f"ldor-report-{this_month:%Y-%m}.xlsx"
    book = openpyxl.load_workbook(io.BytesIO(attachment.get_payload(decode=True)), read_only=True)
    assert book.sheetnames == ["Summary", "Providers", "Boroughs"]
    cells = {str(v) for sheet in book.worksheets for row in sheet.iter_rows(values_only=True) for v in row if v is not None}
    assert "Example College" in cells
    for person in people(directory, {"E09000019": 1, "E09000007": 1}, seed=8):  # no one's details
        assert not {person.family_name, person.first_name, person.postcode, person.uln} & cells


# -- [schedule] ---------------------------------------------------------------------------------------------
def test_the_schedule_section_is_optional_and_checked(deployment):
    from gateway import config

    assert config.load(deployment.config).schedule == config.Schedule()
    good = deployment.config.read_text()
    deployment.config.write_text(good + "\n[schedule]\nreminder_day = 3\nretention_days = 730\n")
    loaded = config.load(deployment.config).schedule
    assert (loaded.reminder_day, loaded.retention_days, loaded.due_day, loaded.hour) == (3, 730, 10, 7)
    deployment.config.write_text(good + "\n[schedule]\nreminder_dya = 3\nreport_day = 31\nretention_days = 30\nhour = 24\n")
    _, problems = config.check(deployment.config)
    lines = len(good.splitlines())
    assert [(p.line, p.message) for p in problems] == [
        (lines + 3, "unknown key 'reminder_dya' in [schedule]; did you mean 'reminder_day'?"),
        (lines + 6, "hour must be an hour of the day, 0 to 23 (London time)"),
        (lines + 4, "report_day must be a day of the month, 1 to 28"),
        (lines + 5, "retention_days must be a number of days, at least 90"),
    ]
