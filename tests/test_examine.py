"""One examination core (issue 10 item 6): `gateway validate` and the mailbox reach the same verdict.

Every golden file under tests/data/ (the odd layouts, the read-limit files, the plain containers) goes
through both: `gateway validate --json` on the file, then the file encrypted and mailed to a real
Dovecot, handled by `gateway run --once`, its receipt caught by the relay. The findings (severity, row,
rule), the rows forwarded and a refusal's advice must be the same; afterwards `gateway validate` says
what the mailbox would now say of it: a duplicate.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest
from helpers import PROVIDER_SENDER, PROVIDER_UKPRN, attachments_of, provider_message

from gateway.cli import main

DATA = Path(__file__).resolve().parent / "data"
PLAIN_CONTAINERS = ("return.csv", "return.xlsx", "plain.zip", "old.xls", "web_page.xls", "word97.doc")
GOLDEN = sorted(DATA.glob("*.xlsx")) + sorted(p for p in (DATA / "read").iterdir() if p.suffix in (".xlsx", ".csv")) + [
    DATA / "containers" / name for name in PLAIN_CONTAINERS]


def _validate(deployment, path: Path, capsys) -> dict:
    capsys.readouterr()  # what came before
    main(["--config", str(deployment.config), "validate", str(path), "--provider", PROVIDER_UKPRN, "--json"])
    return json.loads(capsys.readouterr().out)


def _by_mail(deployment, keys, path: Path) -> tuple[str, list[tuple[str, int | None, str]], int | None]:
    """The file mailed as a provider sends it: the receipt's body, its findings and the rows it says were forwarded."""
    already = len(deployment.smtp.messages)
    deployment.deliver(provider_message([(path.name + ".gpg", keys.encrypt_for_gateway(path.read_bytes()))]))
    assert deployment.run_once() == 0
    receipts = [m for m in deployment.captured()[already:] if str(m["To"]) == PROVIDER_SENDER]
    assert len(receipts) == 1
    receipt = receipts[0]
    body = receipt.get_body(("plain",)).get_content()
    found = []
    for name, data in attachments_of(receipt).items():
        if name.endswith("findings.csv"):
            found = [(r["Severity"], int(r["Row"]) if r["Row"] else None, r["Rule"])
                     for r in csv.DictReader(io.StringIO(data.decode("utf-8-sig")))]
    forwarded = re.search(r"Rows forwarded:\s+([\d,]+)", body)
    return body, found, int(forwarded.group(1).replace(",", "")) if forwarded else None


def _flat(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("path", GOLDEN, ids=[str(p.relative_to(DATA)) for p in GOLDEN])
def test_validate_and_the_mailbox_agree(deployment, keys, capsys, path):
    offline = _validate(deployment, path, capsys)
    body, by_mail, forwarded = _by_mail(deployment, keys, path)
    refusals = [f for f in offline["findings"] if f["severity"] == "F"]
    if refusals:
        # Refused whole: the rejection receipt gives the same reasons the command prints.
        assert forwarded is None and offline["rows_forwarded"] == 0
        for refusal in refusals:
            assert _flat(refusal["message"]).split(" (")[0] in _flat(body)
        return
    assert [(f["severity"], f["row"], f["rule"]) for f in offline["findings"]] == by_mail
    assert offline["rows_forwarded"] == forwarded

    again = _validate(deployment, path, capsys)  # the ledger now holds the file: the mailbox would not forward it again
    assert [f["rule"] for f in again["findings"] if f["severity"] == "F"] == ["File_04"]
    assert again["rows_forwarded"] == 0


def test_the_golden_files_cover_findings_of_every_severity(deployment, capsys):
    """The comparison above means something only if the files between them give F, E and W findings."""
    severities = set()
    for path in GOLDEN:
        severities |= {f["severity"] for f in _validate(deployment, path, capsys)["findings"]}
    assert severities == {"F", "E", "W"}


def test_a_note_on_a_row_routing_held_back_does_not_say_the_row_was_forwarded(directory):
    """A Manchester resident with no ULN: validation notes the ULN (the row could go), routing then holds
    the row back (Manchester has no table): the ULN note must not tell the provider it was forwarded."""
    from gateway.demo.sample import people, with_changes, workbook
    from gateway.returns.examine import examine
    from gateway.rules import Borough, Provider, Rules

    college = Provider(PROVIDER_UKPRN, "Example College", (PROVIDER_SENDER,), host_la="E09000019")
    rules = Rules({"E09000019": Borough("E09000019", "Islington", ("ldor@islington.example",))}, {college.ukprn: college})
    islington, elsewhere = people(directory, {"E09000019": 2}, seed=7)
    rows = [with_changes(islington, uln=""), with_changes(elsewhere, uln="", postcode="M1 1AE")]
    examined = examine(workbook("Example College", PROVIDER_UKPRN, [p.cells() for p in rows]), college, rules, directory)
    (held,), (sent, unsent) = [[f for f in examined.findings if f.severity == s] for s in ("E", "W")]
    assert (held.rule, held.row, sent.row, unsent.row) == ("Route_01", 10, 9, 10)
    assert sent.message == ("The Unique Learner Number is blank. The row was forwarded; please give the young "
                            "person's ULN next time if they have one")
    assert unsent.message == "The Unique Learner Number is blank. Please give the young person's ULN next time if they have one"
    assert examined.routed.forwarded == 1 and examined.held_back() == (("home authority not served by this gateway (the provider is asked to notify it)", 1),)


def test_with_reject_a_blank_postcode_is_one_error_not_a_note_and_an_error(directory):
    """unplaceable = "reject": validation's note on the blank postcode gives way to routing's E of the same rule."""
    from dataclasses import replace

    from gateway.demo.sample import people, with_changes, workbook
    from gateway.returns.examine import examine
    from gateway.rules import Borough, Provider, Routing, Rules

    college = Provider(PROVIDER_UKPRN, "Example College", (PROVIDER_SENDER,), host_la="E09000019")
    rules = Rules({"E09000019": Borough("E09000019", "Islington", ("ldor@islington.example",))}, {college.ukprn: college})
    young = people(directory, {"E09000019": 2}, seed=8)
    data = workbook("Example College", PROVIDER_UKPRN, [with_changes(young[0], postcode="").cells(), young[1].cells()])
    sent = examine(data, college, rules, directory)
    assert [(f.severity, f.row, f.rule) for f in sent.findings] == [("W", 9, "Postcode_01")] and sent.routed.forwarded == 2
    held = examine(data, college, replace(rules, routing=Routing(unplaceable="reject")), directory)
    assert [(f.severity, f.row, f.rule) for f in held.findings] == [("E", 9, "Postcode_01")] and held.routed.forwarded == 1
    assert held.findings[0].message.startswith("The home postcode is blank. The young person's home authority could not be found")
    assert held.held_back() == (("no postcode, and no authority to send it to instead", 1),)
