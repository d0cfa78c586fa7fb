"""Routing with the real ONS directory and real rule files: reasons, sub-regional units, overrides,
unplaceable and outside rows; and `gateway route FILE`, the dry run, on real workbooks and keys."""

from __future__ import annotations

import json
import re
import textwrap
from datetime import date
from pathlib import Path

import pytest

from gateway import rules
from gateway.admin.offline import route_file
from gateway.delivery.pack import HEADINGS
from gateway.demo.sample import Person, people, with_changes, workbook
from gateway.returns.read import read_return
from gateway.returns.route import route
from gateway.returns.validate import validate

TODAY = date(2025, 11, 17)
FIRST_ROW = 9  # sample.workbook: headings on row 8
COLLEGE = "10001234"
PROVIDERS = textwrap.dedent("""\
    [10001234]
    name = "Example College"
    senders = ["mis@example-college.example"]
    host_la = "E09000019"

    [10005678]
    name = "Westminster Academy"
    senders = ["data@westminster-academy.example"]
    host_la = "E09000033"
    """)
BOROUGHS = textwrap.dedent("""\
    [E09000019]
    recipients = ["ldor@islington.example"]

    [E09000007]
    recipients = ["ldor@camden.example"]
    """)
ABSENT = "QQ1 1QQ"  # the right shape, but not in the directory
NO_AUTHORITY = "GIR 0AA"  # in the directory, with no local authority
MANCHESTER = "M1 1AE"  # E08000003: not served here


@pytest.fixture(scope="module")
def crowd(directory) -> dict[str, list[Person]]:
    """Invented young people by home borough; reasons run Leaver, Joiner, At risk, Leaver, ..."""
    everyone = people(directory, {"E09000019": 3, "E09000007": 3, "E09000012": 3}, today=TODAY)
    return {"islington": everyone[:3], "camden": everyone[3:6], "hackney": everyone[6:]}


def installed(folder: Path, boroughs: str = BOROUGHS, routing: str | None = None) -> rules.Rules:
    (folder / "boroughs.toml").write_text(boroughs)
    (folder / "providers.toml").write_text(PROVIDERS)
    if routing is not None:
        (folder / "routing.toml").write_text(textwrap.dedent(routing))
    return rules.load(folder)


def routed_rows(directory, loaded: rules.Rules, rows: list[Person], provider: str | None = COLLEGE):
    table = read_return(workbook("Example College", COLLEGE, [p.cells() for p in rows]))
    checked = validate(table, loaded.providers[COLLEGE], today=TODAY)
    assert len(checked.accepted) == len(rows)  # routing is what these tests are about
    return route(table, checked.accepted, loaded, directory, loaded.providers.get(provider or ""))


def placed(result) -> dict[str, list[int]]:
    return {batch.borough.code: [item.row.number for item in batch.rows] for batch in result.batches}


def found(result) -> list[tuple[str, int, str]]:
    return [(f.severity, f.row, f.rule) for f in result.findings]


def test_by_default_unserved_authorities_are_named_and_unplaceable_rows_go_to_the_providers_authority(directory, tmp_path, crowd):
    rows = [crowd["islington"][0], with_changes(crowd["islington"][1], postcode=MANCHESTER),
            with_changes(crowd["islington"][2], postcode=ABSENT), with_changes(crowd["camden"][0], postcode=NO_AUTHORITY),
            crowd["hackney"][0]]
    result = routed_rows(directory, installed(tmp_path), rows)
    assert placed(result) == {"E09000019": [FIRST_ROW, FIRST_ROW + 2, FIRST_ROW + 3]}  # the college is in Islington
    assert found(result) == [("E", FIRST_ROW + 1, "Route_01"), ("W", FIRST_ROW + 2, "Postcode_15"),
                             ("W", FIRST_ROW + 3, "Postcode_15"), ("E", FIRST_ROW + 4, "Route_01")]
    manchester, absent, _, hackney = result.findings
    assert "please notify that authority directly: Manchester (E08000003)" in manchester.message
    assert hackney.message.endswith(": Hackney (E09000012)")
    assert absent.message.startswith("Postcode not found") and absent.column == "Post Code"
    assert ("The young person's home authority could not be found from it, so the row was sent to the local "
            "authority your organisation is in") in absent.message
    assert result.forwarded == 3
    first, absent_row, no_authority = result.batches[0].rows
    assert (first.home, first.routed_by) == ("E09000019", "postcode")
    assert (absent_row.home, absent_row.routed_by, absent_row.notes) == (None, "provider's authority", (("Postcode_15", ""),))
    assert no_authority.routed_by == "provider's authority"


def test_reject_holds_back_rows_whose_postcode_cannot_be_placed(directory, tmp_path, crowd):
    loaded = installed(tmp_path, routing='unplaceable = "reject"\n')
    rows = [with_changes(crowd["camden"][0], postcode=ABSENT), crowd["camden"][1]]
    result = routed_rows(directory, loaded, rows)
    assert placed(result) == {"E09000007": [FIRST_ROW + 1]}
    assert found(result) == [("E", FIRST_ROW, "Postcode_15")]
    assert result.findings[0].message.endswith("there is no other authority to send the row to, so it was not "
                                               "forwarded; please correct the postcode and send the row again")


MAIDSTONE, CHELMSFORD, LEEDS, CARLISLE, TAUNTON = "ME14 1XQ", "CM1 1JE", "LS1 4DY", "CA3 8JH", "TA1 1DA"


def test_a_districts_residents_go_to_its_county(directory, tmp_path, crowd):
    """Maidstone (E07000110 in the directory) is in Kent: a configured Kent (E10000016) takes its rows;
    Chelmsford's are named by their county, Essex, not by the district; the 2023 unitaries are reached
    (the directory answers with their codes); a Leeds resident is named with the code."""
    boroughs = BOROUGHS + '\n[E10000016]\nrecipients = ["ldor@kent.example"]\n\n[E06000063]\nrecipients = ["ldor@cumberland.example"]\n'
    assert [directory.authority(p) for p in (MAIDSTONE, CHELMSFORD, CARLISLE, TAUNTON)] == ["E07000110", "E07000070", "E06000063", "E06000066"]
    young = crowd["islington"]
    rows = [with_changes(young[0], postcode=MAIDSTONE), with_changes(young[1], postcode=CHELMSFORD),
            with_changes(young[2], postcode=LEEDS), with_changes(crowd["camden"][0], postcode=CARLISLE),
            with_changes(crowd["camden"][1], postcode=TAUNTON)]
    loaded = installed(tmp_path, boroughs)
    assert loaded.boroughs["E10000016"].name == "Kent"
    result = routed_rows(directory, loaded, rows)
    assert placed(result) == {"E06000063": [FIRST_ROW + 3], "E10000016": [FIRST_ROW]}
    assert found(result) == [("E", FIRST_ROW + 1, "Route_01"), ("E", FIRST_ROW + 2, "Route_01"), ("E", FIRST_ROW + 4, "Route_01")]
    essex, leeds, somerset = (f.message for f in result.findings)
    assert essex.endswith("please notify that authority directly: Essex (E10000012)")
    assert leeds.endswith("please notify that authority directly: Leeds (E08000035)")
    assert somerset.endswith(": Somerset (E06000066)")


def test_an_override_to_a_district_and_a_host_la_that_is_a_district_reach_the_county(directory, tmp_path, crowd):
    boroughs = BOROUGHS + '\n[E10000012]\nrecipients = ["ldor@essex.example"]\n'
    (tmp_path / "boroughs.toml").write_text(boroughs)
    (tmp_path / "providers.toml").write_text(PROVIDERS.replace('host_la = "E09000019"', 'host_la = "E07000070"'))
    (tmp_path / "routing.toml").write_text('unplaceable = "host_borough"\n[overrides]\n"N1C 4AA" = "E07000070"\n')
    loaded = rules.load(tmp_path)
    rows = [with_changes(crowd["islington"][0], postcode="N1C 4AA"), with_changes(crowd["islington"][1], postcode=ABSENT)]
    result = routed_rows(directory, loaded, rows)
    assert placed(result) == {"E10000012": [FIRST_ROW, FIRST_ROW + 1]}
    assert found(result) == [("W", FIRST_ROW + 1, "Postcode_15")]


def test_a_borough_takes_only_the_reasons_it_asked_for(directory, tmp_path, crowd):
    boroughs = BOROUGHS.replace('["ldor@camden.example"]', '["ldor@camden.example"]\nreasons = ["Leaver"]')
    camden = crowd["camden"]  # Leaver, Joiner, At risk
    result = routed_rows(directory, installed(tmp_path, boroughs), [*camden, crowd["islington"][1]])
    assert [p.reason for p in camden] == ["Leaver", "Joiner", "At risk"]
    assert placed(result) == {"E09000007": [FIRST_ROW], "E09000019": [FIRST_ROW + 3]}
    assert found(result) == [("E", FIRST_ROW + 1, "Route_02"), ("E", FIRST_ROW + 2, "Route_02")]
    joiner, at_risk = result.findings
    assert "does not take this kind of notification" in joiner.message
    assert "(Camden takes Leaver notifications only)" in joiner.message
    assert "unless Camden has asked you for Joiner notifications: then send them to Camden directly" in joiner.message
    assert "asked you for At risk notifications" in at_risk.message
    assert "Leaver" in joiner.column  # the provider's own reason columns


def test_a_sub_regional_unit_gets_one_batch_per_borough_it_serves(directory, tmp_path, crowd):
    boroughs = BOROUGHS.replace('["ldor@camden.example"]', '["unit@north-london.example"]') + (
        '\n[E09000012]\nrecipients = ["ldor@hackney.example", "unit@north-london.example"]\n')
    loaded = installed(tmp_path, boroughs)
    rows = [crowd["camden"][0], crowd["hackney"][0], crowd["camden"][1], crowd["hackney"][1], crowd["hackney"][2]]
    result = routed_rows(directory, loaded, rows)
    assert placed(result) == {"E09000007": [FIRST_ROW, FIRST_ROW + 2], "E09000012": [FIRST_ROW + 1, FIRST_ROW + 3, FIRST_ROW + 4]}
    unit_batches = [b.borough.code for b in result.batches if "unit@north-london.example" in b.borough.recipients]
    assert unit_batches == ["E09000007", "E09000012"]
    assert result.findings == ()


def test_overrides_by_full_postcode_and_by_district_win_over_the_directory(directory, tmp_path, crowd):
    assert directory.authority("N1C 4AA") == directory.authority("N1C 4AB") == "E09000007"  # Camden, says the directory
    loaded = installed(tmp_path, routing="""\
        [overrides]
        N1C = "E09000019"
        N1C4AA = "E09000007"
        "QQ1 1QQ" = "E09000007"
        """)
    person = crowd["islington"]
    rows = [with_changes(person[0], postcode="N1C 4AB"), with_changes(person[1], postcode="n1c4aa"),
            with_changes(person[2], postcode=ABSENT)]
    result = routed_rows(directory, loaded, rows)
    assert placed(result) == {"E09000019": [FIRST_ROW], "E09000007": [FIRST_ROW + 1, FIRST_ROW + 2]}
    assert result.findings == ()


def test_unplaceable_rows_go_to_the_providers_host_borough_with_a_note(directory, tmp_path, crowd):
    loaded = installed(tmp_path, routing='unplaceable = "host_borough"\n')
    rows = [with_changes(crowd["camden"][0], postcode=ABSENT), with_changes(crowd["camden"][1], postcode=NO_AUTHORITY),
            crowd["camden"][2]]
    result = routed_rows(directory, loaded, rows)
    assert placed(result) == {"E09000007": [FIRST_ROW + 2], "E09000019": [FIRST_ROW, FIRST_ROW + 1]}
    assert found(result) == [("W", FIRST_ROW, "Postcode_15"), ("W", FIRST_ROW + 1, "Postcode_15")]
    assert result.findings[0].message.endswith("please tell that authority the young person's home postcode, "
                                               "and give it in your return next time")
    assert result.forwarded == 3


@pytest.mark.parametrize("provider", [None, "10005678"])  # not told the provider; its host_la has no table here
def test_unplaceable_rows_without_a_host_borough_here_are_rejected(directory, tmp_path, crowd, provider):
    loaded = installed(tmp_path, routing='unplaceable = "host_borough"\n')
    result = routed_rows(directory, loaded, [with_changes(crowd["camden"][0], postcode=ABSENT)], provider)
    assert placed(result) == {}
    assert found(result) == [("E", FIRST_ROW, "Postcode_15")]


def test_rows_from_outside_go_to_the_named_recipient_as_a_borough_of_their_own(directory, tmp_path, crowd):
    loaded = installed(tmp_path, routing="""\
        unplaceable = "reject"
        outside = "recipient"
        outside_recipient = "ldor-unit@london.example"
        outside_format = "csv"
        """)
    rows = [with_changes(crowd["islington"][0], postcode=MANCHESTER), crowd["hackney"][0], crowd["islington"][1],
            with_changes(crowd["islington"][2], postcode=ABSENT)]
    result = routed_rows(directory, loaded, rows)
    assert placed(result) == {"E09000019": [FIRST_ROW + 2], rules.OUTSIDE: [FIRST_ROW, FIRST_ROW + 1]}
    outside = next(b.borough for b in result.batches if b.borough.code == rules.OUTSIDE)
    assert (outside.name, outside.recipients, outside.format) == ("Other local authorities", ("ldor-unit@london.example",), "csv")
    assert found(result) == [("W", FIRST_ROW, "Route_03"), ("W", FIRST_ROW + 1, "Route_03"), ("E", FIRST_ROW + 3, "Postcode_15")]
    assert result.findings[0].message.endswith("; home authority Manchester (E08000003), sent to ldor-unit@london.example")
    assert "home authority Hackney (E09000012)," in result.findings[1].message
    assert result.forwarded == 3


def test_a_row_placed_by_routing_still_needs_a_borough_that_takes_its_reason(directory, tmp_path, crowd):
    boroughs = BOROUGHS.replace('["ldor@islington.example"]', '["ldor@islington.example"]\nreasons = ["At risk"]')
    loaded = installed(tmp_path, boroughs, routing='unplaceable = "host_borough"\n')
    leaver = with_changes(crowd["camden"][0], postcode=ABSENT)
    result = routed_rows(directory, loaded, [leaver])
    assert placed(result) == {}
    assert found(result) == [("E", FIRST_ROW, "Route_02")]  # one finding: the row is not forwarded, and why


# -- gateway route FILE ---------------------------------------------------------------------------------

@pytest.fixture
def mixed_return(directory, crowd) -> tuple[list[Person], bytes]:
    """Islington 3 (Leaver, Joiner, At risk), Camden 2 (Leaver, Joiner), a bad postcode, a Manchester resident."""
    rows = [*crowd["islington"], *crowd["camden"][:2], with_changes(crowd["hackney"][0], postcode="NOT A PC"),
            with_changes(crowd["hackney"][1], postcode=MANCHESTER)]
    return rows, workbook("Example College", COLLEGE, [p.cells() for p in rows])


def test_route_file_says_where_each_row_of_a_workbook_would_go(deployment, mixed_return, tmp_path):
    rows, data = mixed_return
    path = tmp_path / "return.xlsx"
    path.write_bytes(data)
    report = route_file(path, deployment.config)
    facts = report.as_dict()
    assert (facts["rows_read"], facts["rows_forwarded"], facts["rows_not_forwarded"]) == (7, 6, 1)
    assert list(facts["recipients"]) == ["ldor@camden.example", "ldor@islington.example"]
    islington = facts["recipients"]["ldor@islington.example"]
    assert islington["reasons"] == {"Leaver": 2, "Joiner": 1, "At risk": 1}  # the college's own borough: and the bad postcode
    [package] = islington["packages"]
    assert (package["borough"], package["rows"], package["held"]) == ("E09000019", 4, None)
    assert package["row_numbers"] == [FIRST_ROW, FIRST_ROW + 1, FIRST_ROW + 2, FIRST_ROW + 5]
    assert re.fullmatch(r"[0-9A-F]{40}", package["key"])
    assert [(f["row"], f["rule"]) for f in facts["not_forwarded"]] == [(FIRST_ROW + 6, "Route_01")]
    assert [(f["row"], f["rule"]) for f in facts["notes"]] == [(FIRST_ROW + 5, "Postcode_02")]  # sent to Islington
    assert report.complete is False
    text = report.text()
    assert "nothing has been sent" in text
    assert "ldor@islington.example: 4 rows (Leaver 2, Joiner 1, At risk 1)" in text
    assert (f"Islington (E09000019): 4 rows (Leaver 2, Joiner 1, At risk 1), encrypted to key {package['key']}\n"
            f"          rows {FIRST_ROW}-{FIRST_ROW + 2}, {FIRST_ROW + 5}\n") in text
    assert re.search(rf"row {FIRST_ROW + 5}\s+Postcode_02\s+The postcode is not in the correct format", text)
    assert "Camden (E09000007): 2 rows (Leaver 1, Joiner 1)" in text
    assert re.search(rf"row {FIRST_ROW + 6}\s+Route_01\s+The young person lives in a local authority", text)
    for person in rows:  # row numbers only: no names, no postcodes
        assert person.family_name not in text and person.postcode not in text
    assert deployment.smtp.messages == []
    json.dumps(facts)


def test_route_file_decrypts_and_shows_held_packages_and_routing_notes(deployment, keys, crowd, tmp_path):
    (deployment.root / "keys" / "ldor@camden.example.asc").unlink()
    (deployment.root / "rules" / "routing.toml").write_text(
        'outside = "recipient"\noutside_recipient = "ldor@hackney.example"\n')
    rows = [crowd["camden"][0], with_changes(crowd["islington"][0], postcode=MANCHESTER), crowd["camden"][1]]
    path = tmp_path / "return.xlsx.gpg"
    path.write_bytes(keys.encrypt_for_gateway(workbook("Example College", COLLEGE, [p.cells() for p in rows])))
    report = route_file(path, deployment.config)
    packages = {(p.recipient, p.borough.code): p for p in report.packages}
    camden = packages[("ldor@camden.example", "E09000007")]
    assert camden.key is None and "no public key in keys/ has a user ID with ldor@camden.example" in camden.held
    hackney_unit = packages[("ldor@hackney.example", rules.OUTSIDE)]
    assert hackney_unit.key and hackney_unit.held is None
    assert [(f.row, f.rule) for f in report.notes] == [(FIRST_ROW + 1, "Route_03")]
    assert report.not_forwarded == () and report.complete is False  # Camden's package would be held
    assert (report.rows_forwarded, report.rows_held) == (3, 2)
    text = report.text()
    assert "Rows that would be forwarded:     3 (2 of them held until a recipient's key is put right)" in text
    assert "Camden (E09000007): 2 rows (Leaver 1, Joiner 1), HELD, not sent: no public key" in text
    assert f"          rows {FIRST_ROW}, {FIRST_ROW + 2}\n" in text
    assert "Other local authorities (OUTSIDE): 1 row" in text
    assert "Rows that would go somewhere other than their home borough" in text


def test_route_file_honours_the_provider_given_for_a_csv_without_header(deployment, directory, crowd, tmp_path):
    from gateway.demo.sample import reason_csv

    (deployment.root / "rules" / "routing.toml").write_text('unplaceable = "host_borough"\n')
    path = tmp_path / "export.csv"
    path.write_bytes(reason_csv([with_changes(crowd["camden"][0], postcode=ABSENT)]))
    assert route_file(path, deployment.config).not_forwarded[0].rule == "Postcode_15"  # no provider: no host borough
    report = route_file(path, deployment.config, provider=COLLEGE)
    assert [(p.borough.code, p.rows) for p in report.packages] == [("E09000019", 1)]
    assert [f.rule for f in report.notes] == ["Postcode_15"] and report.complete


def test_route_file_of_a_file_that_is_not_a_return(deployment, tmp_path):
    path = tmp_path / "notes.csv"
    path.write_text("just,some\nnotes,here\n")
    report = route_file(path, deployment.config)
    assert report.packages == () and not report.complete
    assert "This file would be refused, so nothing in it would be forwarded" in report.text()


def test_route_file_needs_good_rules(deployment, tmp_path, mixed_return):
    from gateway.errors import RulesError

    (deployment.root / "rules" / "routing.toml").write_text('outside = "somewhere"\n')
    path = tmp_path / "return.xlsx"
    path.write_bytes(mixed_return[1])
    with pytest.raises(RulesError, match="outside must be"):
        route_file(path, deployment.config)


def test_a_maidstone_resident_reaches_kent_and_a_leeds_resident_is_named_in_the_receipt(deployment, directory, keys):
    """The whole journey: Kent (E10000016) configured beside the London boroughs (its packages to the Camden
    officer, as a data unit serving both); a Maidstone postcode (district E07000110) reaches it, a Leeds one is
    named in the receipt by name and code."""
    import gnupg
    from helpers import PROVIDER_SENDER, attachments_of, provider_message, read_xlsx

    boroughs = deployment.root / "rules" / "boroughs.toml"
    boroughs.write_text(boroughs.read_text() + '\n[E10000016]\nrecipients = ["ldor@camden.example"]\n')
    crowd = people(directory, {"E09000019": 3})
    rows = [crowd[0], with_changes(crowd[1], postcode=MAIDSTONE), with_changes(crowd[2], postcode=LEEDS)]
    xlsx = workbook("Example College", COLLEGE, [p.cells() for p in rows])
    deployment.deliver(provider_message([("return.xlsx.gpg", keys.encrypt_for_gateway(xlsx))]))
    assert deployment.run_once() == 0

    sent: dict[str, list] = {}
    for message in deployment.captured():
        sent.setdefault(str(message["To"]), []).append(message)
    (name, data), = [item for m in sent["ldor@camden.example"] for item in attachments_of(m).items()]
    assert name.endswith("E10000016.xlsx.gpg")
    package = gnupg.GPG(gnupghome=str(keys.borough_homes["ldor@camden.example"])).decrypt(data)
    assert package.ok, package.status
    body_rows = read_xlsx(package.data)[1:]
    assert [str(row[HEADINGS.index("ULN")]) for row in body_rows] == [crowd[1].uln]

    receipt, = sent[PROVIDER_SENDER]
    text = receipt.get_body(("plain",)).get_content()
    assert "Leeds (E08000035)" in text
    assert "Kent (E10000016): 1" in text and "Islington (E09000019): 1" in text
