"""The monthly report, computed from a ledger written by real runs (Dovecot, aiosmtpd, gpg, SQLite)."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from datetime import datetime

import openpyxl
import pytest
from helpers import PROVIDER_UKPRN, provider_message

from gateway import rules as rules_module
from gateway.admin.report import LOCAL, ReportError, monthly_report
from gateway.admin.report_book import write_xlsx
from gateway.demo.sample import Person, people, with_changes, workbook
from gateway.ledger import Ledger
from gateway.rules import Borough, Provider, Rules

SILENT = ("10009999", "Silent College", "mis@silent-college.example")  # known, sends nothing
FAILING = ("10008888", "Failing Academy", "data@failing-academy.example")  # sends only a file that is no return


@dataclass
class Month:
    ledger: Ledger
    rules: Rules
    month: str
    today: int  # day of the month, London time
    crowd: list[Person]


@pytest.fixture
def month(deployment, directory, keys) -> Month:
    """Example College sends two returns (one row naming no one, one without a ULN), Failing Academy a
    file that is not a return, a stranger a message; Silent College sends nothing. One `run --once`."""
    providers = deployment.root / "rules" / "providers.toml"
    providers.write_text(providers.read_text() + "".join(
        f'\n[{ukprn}]\nname = "{name}"\nsenders = ["{sender}"]\nhost_la = "E09000019"\n' for ukprn, name, sender in (SILENT, FAILING)))
    # Reasons go Leaver, Joiner, At risk in turn: Islington L J A, Camden L J.
    first = people(directory, {"E09000019": 3, "E09000007": 2})
    # Hackney L J and a third (At risk) that names no one, so held back; Islington L, without a ULN (a warning).
    second = people(directory, {"E09000012": 3, "E09000019": 1}, seed=11)
    second[2] = with_changes(second[2], family_name="", first_name="")
    second[3] = with_changes(second[3], uln="")
    for crowd in (first, second):
        xlsx = workbook("Example College", PROVIDER_UKPRN, [p.cells() for p in crowd])
        deployment.deliver(provider_message([("Leavers.xlsx.gpg", keys.encrypt_for_gateway(xlsx))]))
    deployment.deliver(provider_message([("return.gpg", keys.encrypt_for_gateway(b"our notes, not a return"))], sender=FAILING[2]))
    deployment.deliver(provider_message([("r.xlsx", b"hello")], sender="someone@stranger.example"))
    assert deployment.run_once() == 0
    now = datetime.now(LOCAL)
    return Month(Ledger(deployment.root / "var" / "gateway.db"), rules_module.load(deployment.root / "rules"),
                 f"{now:%Y-%m}", now.day, first + second)


def test_each_known_provider_is_listed_returned_or_not(month):
    report = monthly_report(month.ledger, month.rules, month.month, due_day=month.today)
    by_ukprn = {p.ukprn: p for p in report.providers}
    assert set(by_ukprn) == {PROVIDER_UKPRN, SILENT[0], FAILING[0]}

    college = by_ukprn[PROVIDER_UKPRN]
    assert college.returned and college.status == "on time"
    assert (college.returns, college.rejected, college.rows, college.rows_forwarded, college.rows_rejected, college.warnings) == (2, 0, 9, 8, 1, 1)
    silent = by_ukprn[SILENT[0]]
    assert (silent.returned, silent.on_time, silent.returns, silent.rows, silent.status) == (False, None, 0, 0, "not returned")
    failing = by_ukprn[FAILING[0]]  # it sent something, but nothing was accepted
    assert (failing.returned, failing.returns, failing.rejected, failing.status) == (False, 1, 1, "not returned")

    assert (report.known_providers, report.returned, report.on_time, report.late) == (3, 1, 1, 0)
    assert report.share_returned == pytest.approx(1 / 3)
    assert (report.messages, report.quarantined) == (4, 1)


def test_a_return_after_the_due_day_is_late(month):
    if month.today == 1:
        pytest.skip("on the 1st no due day comes before today")
    report = monthly_report(month.ledger, month.rules, month.month, due_day=month.today - 1)
    college = next(p for p in report.providers if p.ukprn == PROVIDER_UKPRN)
    assert college.returned and college.on_time is False and college.status == "late"
    assert (report.returned, report.on_time, report.late) == (1, 0, 1)
    assert "late" in report.text()


def test_notifications_per_borough_and_the_london_total(month):
    report = monthly_report(month.ledger, month.rules, month.month)
    boroughs = {b.code: b for b in report.boroughs}
    assert set(boroughs) == set(month.rules.boroughs)  # every borough in the rules, whether it received or not
    assert {code: (b.notifications, b.providers, b.packages, b.sent) for code, b in boroughs.items()} == {
        "E09000019": (4, 1, 2, 2), "E09000007": (2, 1, 1, 1), "E09000012": (2, 1, 1, 1)}
    assert report.london.notifications == report.total.notifications == 8
    assert report.london.providers == 1 and report.london.sent == 4


def test_reasons_per_borough_when_the_ledger_records_them(month):
    if "reasons" not in month.ledger.db["outgoing"].columns_dict:
        pytest.skip("the pipeline does not yet record reasons on package rows (see gateway/admin/report.py)")
    report = monthly_report(month.ledger, month.rules, month.month)
    boroughs = {b.code: b for b in report.boroughs}
    assert dict(boroughs["E09000019"].reasons) == {"Joiner": 1, "Leaver": 2, "At risk": 1}
    assert dict(boroughs["E09000007"].reasons) == {"Joiner": 1, "Leaver": 1, "At risk": 0}
    assert dict(boroughs["E09000012"].reasons) == {"Joiner": 1, "Leaver": 1, "At risk": 0}
    assert dict(report.london.reasons) == {"Joiner": 3, "Leaver": 4, "At risk": 1}
    assert report.london.not_recorded == 0 and "reason not recorded" not in report.text().lower()
    assert "Notifications to London boroughs: 8 (Joiner 3, Leaver 4, At risk 1)." in report.text()

    # A ledger that began before reasons were recorded: those packages count in the totals only.
    month.ledger.db.execute("update outgoing set reasons = null where kind = 'package' and borough = 'E09000007'")
    month.ledger.db.conn.commit()
    report = monthly_report(month.ledger, month.rules, month.month)
    camden = next(b for b in report.boroughs if b.code == "E09000007")
    assert (camden.notifications, camden.not_recorded, camden.count("Leaver")) == (2, 2, 0)
    assert (report.london.notifications, report.london.not_recorded, report.london.count("Leaver")) == (8, 2, 3)
    assert "Reason not recorded" in report.text()


def test_without_reasons_in_the_ledger_the_totals_stand_alone(month):
    with month.ledger.db.conn:  # a ledger from before reasons were recorded: migrated, its packages have none
        month.ledger.db.conn.execute("update outgoing set reasons = null")
    report = monthly_report(month.ledger, month.rules, month.month)
    islington = next(b for b in report.boroughs if b.code == "E09000019")
    assert (islington.notifications, islington.not_recorded, islington.count("Leaver")) == (4, 4, 0)
    assert (report.london.notifications, report.london.not_recorded) == (8, 8)
    assert any(note.startswith("8 notification(s) were routed before the gateway recorded reasons") for note in report.notes)
    text = report.text()
    assert "Notifications to London boroughs: 8." in text and "Leaver" not in text  # no column of zeros by reason


def test_the_text_names_every_provider_and_borough_and_holds_no_personal_data(month):
    text = monthly_report(month.ledger, month.rules, month.month, due_day=month.today).text()
    for name in ("Example College", SILENT[1], FAILING[1], "Islington", "Camden", "Hackney", "London total"):
        assert name in text
    assert "NOT RETURNED" in text and "3 known, 1 returned (33%): 1 on time, 0 late; 2 not returned" in text
    assert "Rows: 9 read, 8 forwarded, 1 rejected; 1 warning(s)." in text
    for value in _personal(month.crowd):
        assert value not in text


def test_the_workbook_has_its_sheets_a_chart_numbers_and_no_personal_data(month, tmp_path):
    report = monthly_report(month.ledger, month.rules, month.month, due_day=month.today)
    path = write_xlsx(report, tmp_path / "report.xlsx")
    book = openpyxl.load_workbook(path)
    assert book.sheetnames == ["Summary", "Providers", "Boroughs"]
    assert len(book["Boroughs"]._charts) == 1 and len(book["Summary"]._charts) == 1
    for sheet in book.worksheets:
        assert sheet.freeze_panes == "A2"
        assert sheet.column_dimensions["B"].width > 10

    providers = {row[1]: row for row in book["Providers"].iter_rows(min_row=2, values_only=True)}
    assert set(providers) == {"Example College", SILENT[1], FAILING[1]}
    college = providers["Example College"]
    assert college[0] == int(PROVIDER_UKPRN) and college[3:5] == ("yes", "on time") and isinstance(college[5], datetime)
    assert college[6:] == (2, 0, 9, 8, 1, 1)
    assert providers[SILENT[1]][3] == "no"

    boroughs = {row[1]: row for row in book["Boroughs"].iter_rows(min_row=2, values_only=True)}
    assert boroughs["Islington"][2] == 4 and boroughs["London total"][2] == 8
    summary = {row[0]: row[1] for row in book["Summary"].iter_rows(min_row=2, max_col=2, values_only=True) if row[0]}
    assert summary["Share of known providers that returned"] == pytest.approx(1 / 3)
    assert summary["Known providers"] == 3 and summary["Rows forwarded"] == 8

    cells = " ".join(str(c) for s in book.worksheets for row in s.iter_rows(values_only=True) for c in row if c is not None)
    for value in _personal(month.crowd):
        assert value not in cells
    with zipfile.ZipFile(path) as parts:  # nor in any other part of the file (chart caches, shared strings)
        raw = b"".join(parts.read(name) for name in parts.namelist())
    assert b"Islington" in raw and not any(v.encode() in raw for v in _personal(month.crowd))


def test_another_month_has_nothing_returned(month):
    report = monthly_report(month.ledger, month.rules, "2001-01")
    assert (report.returned, report.messages, report.london.notifications) == (0, 0, 0)
    assert all(p.status == "not returned" for p in report.providers) and len(report.providers) == 3
    assert not report.in_progress


def test_a_month_is_london_time_and_a_bad_month_or_day_is_refused(tmp_path):
    ledger = Ledger(tmp_path / "gateway.db")
    rules = Rules(boroughs={"E09000019": Borough("E09000019", "Islington", ("ldor@islington.example",))},
                  providers={PROVIDER_UKPRN: Provider(PROVIDER_UKPRN, "Example College", ("mis@example-college.example",))})
    # Received at 23:30 UTC on 31 July: 00:30 on 1 August in London (summer time), so August's, and on time.
    ledger.db["messages"].insert({"sha256": "a" * 64, "reference": "LDOR-20250731-AAAAAAAAAA", "first_seen": "2025-07-31T23:30:00+00:00",
                                  "state": "done", "outcome": "accepted", "provider": PROVIDER_UKPRN, "rows_read": 1,
                                  "rows_forwarded": 1, "rows_rejected": 0, "warnings": 0})
    july, august = (monthly_report(ledger, rules, m, due_day=1) for m in ("2025-07", "2025-08"))
    assert (july.returned, august.returned, august.on_time) == (0, 1, 1)
    for bad in ("2025-13", "2025-7", "July", ""):
        with pytest.raises(ReportError, match="YYYY-MM"):
            monthly_report(ledger, rules, bad)
    with pytest.raises(ReportError, match="due day"):
        monthly_report(ledger, rules, "2025-08", due_day=0)


def _personal(crowd: list[Person]) -> list[str]:
    found = []
    for p in crowd:
        found += [p.uln, p.family_name, p.address, p.postcode, p.postcode.replace(" ", ""), p.email, p.phone]
    return [s for s in found if s and len(s) > 3]


def test_a_held_package_counts_for_its_borough_but_not_as_sent(deployment, directory, keys):
    (deployment.root / "keys" / "ldor@hackney.example.asc").unlink()
    crowd = people(directory, {"E09000012": 2, "E09000019": 1})
    xlsx = workbook("Example College", PROVIDER_UKPRN, [p.cells() for p in crowd])
    deployment.deliver(provider_message([("Leavers.xlsx.gpg", keys.encrypt_for_gateway(xlsx))]))
    assert deployment.run_once() == 0
    ledger, rules = Ledger(deployment.root / "var" / "gateway.db"), rules_module.load(deployment.root / "rules")
    report = monthly_report(ledger, rules, f"{datetime.now(LOCAL):%Y-%m}")
    hackney = next(b for b in report.boroughs if b.code == "E09000012")
    assert (hackney.notifications, hackney.packages, hackney.sent) == (2, 1, 0)
    if "reasons" in ledger.db["outgoing"].columns_dict:  # once the pipeline records them, held packages carry them too
        assert (hackney.count("Leaver"), hackney.count("Joiner"), hackney.not_recorded) == (1, 1, 0)
    assert (report.london.notifications, report.london.sent) == (3, 1)
    college = next(p for p in report.providers if p.ukprn == PROVIDER_UKPRN)
    assert (college.rows, college.rows_forwarded) == (3, 1)  # the receipt's count: held rows are not yet forwarded


def test_a_nil_return_counts_as_a_return_received(deployment, directory, keys):
    """Headings and no rows: the provider told us of no one this month, which is a return, on time."""
    xlsx = workbook("Example College", PROVIDER_UKPRN, [])
    deployment.deliver(provider_message([("Leavers.xlsx.gpg", keys.encrypt_for_gateway(xlsx))]))
    assert deployment.run_once() == 0
    [receipt] = deployment.captured()
    assert "nil return" in str(receipt["Subject"])
    ledger, rules = Ledger(deployment.root / "var" / "gateway.db"), rules_module.load(deployment.root / "rules")
    report = monthly_report(ledger, rules, f"{datetime.now(LOCAL):%Y-%m}", due_day=31)
    college = next(p for p in report.providers if p.ukprn == PROVIDER_UKPRN)
    assert (college.returned, college.status, college.returns, college.rejected) == (True, "on time", 1, 0)
    assert (college.rows, college.rows_forwarded, college.rows_rejected) == (0, 0, 0)
    assert report.returned == 1 and report.total.notifications == 0
    assert "on time" in report.text()
