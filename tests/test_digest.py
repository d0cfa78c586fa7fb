"""Daily and weekly digests (issue 11, item 3) on real servers: Dovecot, aiosmtpd, gpg, SQLite; the clock
driven as in the month test (each job is called with its own `now`)."""

from __future__ import annotations

import csv
import io
import os
import re
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import gnupg
from helpers import ADMIN, PROVIDER_SENDER, attachments_of, provider_message, read_xlsx
from leaks import Scan
from test_rules import BOROUGHS, folder, line_of, only_problem

from gateway import rules
from gateway.admin.report import LOCAL, monthly_report
from gateway.admin.status import status_text
from gateway.cli import build, main
from gateway.delivery.digest import latest_due, next_due
from gateway.delivery.held import release_held
from gateway.delivery.pack import HEADINGS, LAYOUT_VERSION
from gateway.demo.sample import people, workbook
from gateway.scheduler import Daemon

HACKNEY, CAMDEN, ISLINGTON = "ldor@hackney.example", "ldor@camden.example", "ldor@islington.example"
SECOND = ("10002222", "Second Academy", "data@second-academy.example")
CRASHPOINT = os.path.join(os.path.dirname(__file__), "crashpoint.py")


# -- rules -----------------------------------------------------------------------------------------------
def test_delivery_is_read_from_boroughs_toml_and_a_bad_value_is_a_problem_with_a_suggestion(tmp_path):
    for sub in ("good", "typo", "number", "key"):
        (tmp_path / sub).mkdir()
    text = BOROUGHS.replace('format = "csv"', 'format = "csv"\ndelivery = "daily"')
    loaded = rules.load(folder(tmp_path / "good", boroughs=text))
    assert loaded.boroughs["E09000012"].delivery == "daily" and loaded.boroughs["E09000012"].digest
    assert loaded.boroughs["E09000019"].delivery == "each" and not loaded.boroughs["E09000019"].digest

    text = BOROUGHS.replace('format = "csv"', 'format = "csv"\ndelivery = "dialy"')
    problem = only_problem(folder(tmp_path / "typo", boroughs=text))
    assert problem.line == line_of(text, 'delivery = "dialy"')
    assert "delivery must be one of \"each\", \"daily\", \"weekly\", not 'dialy'" in problem.message
    assert 'did you mean "daily"' in problem.message

    text = BOROUGHS.replace('format = "csv"', 'format = "csv"\ndelivery = 7')
    assert "not 7" in only_problem(folder(tmp_path / "number", boroughs=text)).message
    text = BOROUGHS.replace('format = "csv"', 'format = "csv"\ndelivry = "weekly"')
    assert "did you mean 'delivery'" in only_problem(folder(tmp_path / "key", boroughs=text)).message


def test_a_daily_digest_is_due_each_day_at_the_hour_and_a_weekly_one_on_mondays():
    wednesday = datetime(2026, 11, 25, 10, 0, tzinfo=LOCAL)
    assert next_due("daily", wednesday, 7) == datetime(2026, 11, 26, 7, 0, tzinfo=LOCAL)
    assert next_due("daily", wednesday.replace(hour=6), 7) == datetime(2026, 11, 25, 7, 0, tzinfo=LOCAL)
    assert latest_due("daily", wednesday, 7) == datetime(2026, 11, 25, 7, 0, tzinfo=LOCAL)
    assert next_due("weekly", wednesday, 7) == datetime(2026, 11, 30, 7, 0, tzinfo=LOCAL)
    assert latest_due("weekly", wednesday, 7) == datetime(2026, 11, 23, 7, 0, tzinfo=LOCAL)
    monday_early = datetime(2026, 11, 30, 6, 59, tzinfo=LOCAL)
    assert latest_due("weekly", monday_early, 7) == datetime(2026, 11, 23, 7, 0, tzinfo=LOCAL)
    assert next_due("weekly", monday_early, 7) == datetime(2026, 11, 30, 7, 0, tzinfo=LOCAL)
    # London time across the clocks going back: 07:00 is 07:00 in London, 07:00 UTC in winter, 06:00 UTC in summer.
    assert next_due("daily", datetime(2026, 10, 23, 12, tzinfo=UTC), 7).astimezone(UTC).hour == 6
    assert next_due("daily", datetime(2026, 10, 24, 12, tzinfo=UTC), 7).astimezone(UTC).hour == 7


# -- the journey ------------------------------------------------------------------------------------------
def _digest_rules(deployment, hackney: str = "daily", camden: str | None = None) -> None:
    boroughs = deployment.root / "rules" / "boroughs.toml"
    text = boroughs.read_text().replace('recipients = ["ldor@hackney.example"]',
                                        f'recipients = ["ldor@hackney.example"]\ndelivery = "{hackney}"')
    if camden:
        text = text.replace('recipients = ["ldor@camden.example"]', f'recipients = ["ldor@camden.example"]\ndelivery = "{camden}"')
    boroughs.write_text(text)
    providers = deployment.root / "rules" / "providers.toml"
    ukprn, name, sender = SECOND
    providers.write_text(providers.read_text() + f'\n[{ukprn}]\nname = "{name}"\nsenders = ["{sender}"]\nhost_la = "E09000019"\n')


def _two_returns(deployment, directory, keys, seeds=(300, 301)):
    """A return from each of two providers, each with rows for Islington, Camden and Hackney."""
    crowds = []
    for seed, (ukprn, name, sender) in zip(seeds, [("10001234", "Example College", PROVIDER_SENDER), SECOND], strict=False):
        crowd = people(directory, {"E09000019": 2, "E09000007": 1, "E09000012": 1}, seed=seed)
        data = workbook(name, ukprn, [p.cells() for p in crowd])
        deployment.deliver(provider_message([("r.xlsx.gpg", keys.encrypt_for_gateway(data))], sender=sender))
        crowds.append(crowd)
    return crowds


def _by_to(deployment) -> dict[str, list]:
    found: dict[str, list] = {}
    for message in deployment.captured():
        found.setdefault(str(message["To"]), []).append(message)
    return found


def _open(message, home: Path) -> tuple[str, list[list[str]]]:
    (name, data), = attachments_of(message).items()
    result = gnupg.GPG(gnupghome=str(home)).decrypt(data)
    assert result.ok, result.status
    if name.endswith(".xlsx.gpg"):
        return name, [["" if c is None else str(c) for c in row] for row in read_xlsx(result.data)]
    return name, list(csv.reader(io.StringIO(result.data.decode("utf-8-sig"))))


def _waiting_on_disk(deployment) -> list[Path]:
    return sorted((deployment.root / "outbox" / "waiting").iterdir())


def test_a_daily_digest_holds_both_providers_rows_after_the_hour_none_before_and_a_weekly_one_waits_for_monday(
        deployment, directory, keys):
    (deployment.root / "keys" / f"{CAMDEN}.asc").unlink()  # Camden's weekly digest finds no key: held, never in clear
    _digest_rules(deployment, camden="weekly")
    crowds = _two_returns(deployment, directory, keys)
    assert deployment.run_once() == 0
    mail = _by_to(deployment)
    assert len(mail[ISLINGTON]) == 2  # one package a return, as before
    assert HACKNEY not in mail and CAMDEN not in mail  # their rows wait for their digests

    # The receipts say when each borough's rows go.
    hour = build(deployment.config).config.schedule.hour
    now = datetime.now(UTC)
    daily, weekly = next_due("daily", now, hour), next_due("weekly", now, hour)
    receipts = [m.get_body(("plain",)).get_content() for to in (PROVIDER_SENDER, SECOND[2]) for m in mail[to]]
    for receipt in receipts:
        assert f"Hackney takes a daily digest: your 1 row goes at 07:00 on {daily:%A %d/%m/%Y} (London time)" in receipt
        assert f"Camden takes a weekly digest: your 1 row goes at 07:00 on Monday {weekly:%d/%m/%Y} (London time)" in receipt
        assert re.search(r"Rows forwarded:\s+4\b", receipt)
    deployment.smtp.clear()

    # Waiting rows: ciphertext only, two returns for each digest borough, none of their values in clear.
    files = _waiting_on_disk(deployment)
    assert len(files) == 8  # two returns x two boroughs, each a .gpg beside a .json of ids and counts
    for path in files:
        if path.suffix == ".gpg":
            assert path.read_bytes()[:1] in (b"\x84", b"\x85", b"\xc1")  # an OpenPGP encrypted session key packet
    values = {v for crowd in crowds for p in crowd for v in (p.uln, p.address, p.postcode, p.email, p.family_name)}
    scan = Scan({v for v in values if len(v) >= 5})
    scan.installation(deployment.root)
    for path in files:
        scan.look(str(path), path.read_bytes() if path.suffix == ".json" else b"")
    assert scan.looked and not scan.found, scan.found

    gateway = build(deployment.config)
    status = status_text(gateway)
    assert "Rows waiting for a digest: 4" in status
    assert re.search(r"Hackney \(E09000012\): 2 row\(s\) from 2 return\(s\); daily digest, goes at 07:00", status)
    assert re.search(r"Camden \(E09000007\): 2 row\(s\) from 2 return\(s\); weekly digest, goes at 07:00 on Mon", status)
    # Counted when received: the month's report has them before the digests go.
    report = monthly_report(gateway.ledger, gateway.rules, f"{datetime.now(LOCAL):%Y-%m}")
    line = {b.code: b for b in report.boroughs}
    assert (line["E09000012"].notifications, line["E09000012"].packages, line["E09000012"].sent) == (2, 2, 0)

    # Before the hour: nothing goes (the daemon's clock, as in the month test).
    daemon = Daemon(deployment.config, build, now=lambda: daily - timedelta(minutes=1))
    daemon._due.put("digests")
    daemon._run_due()
    assert HACKNEY not in _by_to(deployment)
    # At the hour: one package for Hackney holding both providers' rows, sent at once.
    daemon.now = lambda: daily
    daemon._due.put("digests")
    daemon._run_due()
    mail = _by_to(deployment)
    [digest] = mail[HACKNEY]
    name, rows = _open(digest, keys.borough_homes[HACKNEY])
    assert tuple(rows[0]) == HEADINGS and len(rows) == 3
    assert {r[HEADINGS.index("Provider UKPRN")] for r in rows[1:]} == {"10001234", SECOND[0]}
    assert {r[HEADINGS.index("Home Authority Code")] for r in rows[1:]} == {"E09000012"}
    references = {r[HEADINGS.index("Gateway Reference")] for r in rows[1:]}
    assert len(references) == 2 and all(r[HEADINGS.index("Source Row")] for r in rows[1:])
    note = digest.get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert "daily digest" in note and f"Layout: {LAYOUT_VERSION}" in note
    for reference in references:
        assert re.search(rf"{reference}  (Example College \(UKPRN 10001234\)|Second Academy \(UKPRN 10002222\)), "
                         r"received \d\d/\d\d/\d{4} \d\d:\d\d UTC: 1 row\n    Rows of this return held back from every "
                         r"authority: none", note), note
    assert "Notifications: 2 (" in note and "from 2 returns" in note
    assert (CAMDEN in mail) is (daily == weekly)  # the weekly digest goes only on Mondays
    assert not any(p.suffix == ".gpg" and "E09000012" in p.read_text(errors="ignore") for p in _waiting_on_disk(deployment))

    # Once only: the job again, and after a restart, sends nothing more.
    deployment.smtp.clear()
    daemon._due.put("digests")
    daemon._run_due()
    daemon = Daemon(deployment.config, build, now=lambda: daily + timedelta(hours=1))
    daemon._due.put("digests")
    daemon._run_due()
    assert HACKNEY not in _by_to(deployment)
    gateway = build(deployment.config)
    report = monthly_report(gateway.ledger, gateway.rules, f"{datetime.now(LOCAL):%Y-%m}")
    line = {b.code: b for b in report.boroughs}
    assert (line["E09000012"].notifications, line["E09000012"].sent) == (2, 2)
    assert line["E09000007"].notifications == 2 and line["E09000019"].notifications == 4

    # Monday: Camden's weekly digest has no key, so it is held (the administrator told), then sent once the key is back.
    deployment.smtp.clear()
    daemon.now = lambda: weekly
    daemon._due.put("digests")
    daemon._run_due()
    mail = _by_to(deployment)
    assert CAMDEN not in mail
    alert = mail[ADMIN][0].get_body(("plain",)).get_content()
    assert "Camden (E09000007)" in alert and "NOT been sent" in alert
    assert "Held packages (no usable key for the recipient): 1" in status_text(build(deployment.config))
    assert _waiting_on_disk(deployment) == []
    (deployment.root / "keys" / f"{CAMDEN}.asc").write_text(keys.borough_public[CAMDEN])
    gateway = build(deployment.config)
    assert release_held(gateway) == 1
    deployment.run_once()
    [camden] = _by_to(deployment)[CAMDEN]
    _, rows = _open(camden, keys.borough_homes[CAMDEN])
    assert len(rows) == 3 and "weekly digest" in camden.get_body(("plain",)).get_content()
    assert "Rows waiting for a digest: 0" in status_text(build(deployment.config))


def test_flush_digests_sends_every_waiting_digest_now_and_exactly_once_after_kill_minus_nine(deployment, directory, keys):
    _digest_rules(deployment, hackney="weekly")
    _two_returns(deployment, directory, keys, seeds=(302, 4242))
    assert deployment.run_once() == 0
    assert HACKNEY not in _by_to(deployment)
    deployment.smtp.clear()
    env = {**os.environ, "TEST_IMAP_PASSWORD": deployment.imap.password}
    command = [sys.executable, CRASHPOINT, "--config", str(deployment.config), "outbox", "--flush-digests"]
    # Killed once the digest is in the outbox but before the ledger knows it, then once it is built and
    # queued in the ledger but not yet sent.
    for point in ("gateway.delivery.outbox:Outbox.put@1:after", "gateway.ledger:Ledger.queue_digest@1:after"):
        done = subprocess.run(command, env={**env, "CRASH_AT": point}, capture_output=True, timeout=120)
        assert done.returncode == -signal.SIGKILL, (point, done.stderr[-2000:])
    done = subprocess.run(command, env=env, capture_output=True, timeout=120, text=True)
    assert done.returncode == 0, done.stderr
    assert "1 digest message(s) queued or held" not in done.stdout  # the killed run had queued it already
    assert len([m for m in deployment.smtp.messages if HACKNEY in m.rcpt_tos]) == 1
    _, rows = _open(_by_to(deployment)[HACKNEY][0], keys.borough_homes[HACKNEY])
    assert len(rows) == 3
    assert _waiting_on_disk(deployment) == []
    # Nothing waits now; flushing again sends nothing.
    deployment.smtp.clear()
    assert main(["--config", str(deployment.config), "outbox", "--flush-digests"]) == 0
    assert deployment.smtp.messages == []
    assert len(list((deployment.root / "outbox" / "bad").iterdir())) == 0
