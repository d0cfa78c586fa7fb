"""`gateway status` on installations that real runs left behind (Dovecot, aiosmtpd, gpg, SQLite)."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta

from helpers import provider_message
from servers import export_public, gnupg_home, make_key

from gateway.admin.status import status_text
from gateway.cli import build
from gateway.demo.sample import people, workbook

HACKNEY = "ldor@hackney.example"


def _send(deployment, directory, keys, per_borough: dict[str, int]) -> list:
    crowd = people(directory, per_borough)
    xlsx = workbook("Example College", "10001234", [p.cells() for p in crowd])
    deployment.deliver(provider_message([("Leavers.xlsx.gpg", keys.encrypt_for_gateway(xlsx))]))
    return crowd


def test_a_fresh_installation_knows_of_no_mailbox_check(deployment):
    text = status_text(build(deployment.config))
    assert "Last successful mailbox check: unknown" in text
    assert "Outbox: 0 queued, 0 held, 0 failed, 0 bounced." in text
    assert "Held packages (no usable key for the recipient): 0" in text
    assert "Keys expiring within 30 days: 0" in text


def test_held_packages_show_with_their_borough_and_why(deployment, directory, keys):
    (deployment.root / "keys" / f"{HACKNEY}.asc").unlink()
    crowd = _send(deployment, directory, keys, {"E09000012": 2, "E09000019": 1})
    assert deployment.run_once() == 0
    gateway = build(deployment.config)
    [held] = gateway.ledger.outgoing_in("held")
    text = status_text(gateway)

    assert "Outbox: 0 queued, 1 held, 0 failed, 0 bounced." in text
    assert "Held packages (no usable key for the recipient): 1" in text
    [line] = [line for line in text.splitlines() if held.id in line]
    assert "Hackney (E09000012)" in line and f"to {HACKNEY}" in line and "2 row(s)" in line
    assert f"ref {held.reference}" in line and f"no public key in keys/ has a user ID with {HACKNEY}" in line
    assert "keys/" in text.split(line)[1]  # what to do comes after the list
    today = datetime.now(UTC)
    # `run --once` records its successful look at the mailbox.
    assert re.search(rf"Last successful mailbox check: {today:%Y-%m-%d} \d\d:\d\d UTC \((just now|\d+ minute\(s\) ago)\)\.", text)
    for p in crowd:
        for value in (p.uln, p.family_name, p.postcode, p.address):
            assert value not in text


def test_mail_the_relay_refused_is_counted_as_queued(deployment, directory, keys):
    (deployment.root / "keys" / f"{HACKNEY}.asc").unlink()
    _send(deployment, directory, keys, {"E09000012": 1, "E09000019": 1})
    deployment.smtp.fail_with = "451 4.3.0 Try again later"
    assert deployment.run_once() == 0
    # Islington's package, the receipt and the administrator's alert about the held one wait; Hackney's is held.
    assert "Outbox: 3 queued, 1 held, 0 failed, 0 bounced." in status_text(build(deployment.config))


def test_a_recorded_mailbox_check_is_the_last_check(deployment):
    gateway = build(deployment.config)
    gateway.ledger.event("daemon", "mailbox-checked")
    later = datetime.now(UTC) + timedelta(minutes=5)
    text = status_text(gateway, now=later)
    assert re.search(r"Last successful mailbox check: \d{4}-\d\d-\d\d \d\d:\d\d UTC \([45] minute\(s\) ago\)\.\n", text)
    assert "when the last message arrived" not in text


def test_keys_expiring_soon_and_expired_keys_are_named(deployment, tmp_path):
    with gnupg_home(tmp_path / "camden") as home:
        fingerprint = make_key(home, "LDOR officer Camden", "ldor@camden.example", expire="10d")
        (deployment.root / "keys" / "ldor@camden.example.asc").write_text(export_public(home, fingerprint))
    with gnupg_home(tmp_path / "old") as home:
        dead = make_key(home, "Old key", "old@islington.example", expire="seconds=1")
        (deployment.root / "keys" / "old.asc").write_text(export_public(home, dead))
    time.sleep(2)
    gateway = build(deployment.config)
    text = status_text(gateway)

    assert "Keys expiring within 30 days: 1" in text
    [line] = [line for line in text.splitlines() if fingerprint in line]
    expires = (datetime.now(UTC) + timedelta(days=10)).date()
    assert "ldor@camden.example" in line and f"expires on {expires:%Y-%m-%d}" in line
    assert re.search(r"\(in (9|10) day\(s\)\)", line)
    assert "Keys in keys/ that cannot be used: 1" in text
    assert re.search(rf"old@islington\.example  {dead}: expired on \d{{4}}-\d\d-\d\d", text)
    assert "Keys expiring within 5 days: 0" in status_text(gateway, within_days=5)
