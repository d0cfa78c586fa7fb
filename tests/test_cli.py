"""The `gateway` command as administrators use it: check, validate, run --once, demo."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import resource
import subprocess
import sys
from pathlib import Path

import openpyxl
import pytest
from helpers import BOROUGHS, provider_message

from gateway.cli import main
from gateway.delivery.pack import HEADINGS
from gateway.demo.sample import people, with_changes, workbook


def test_check_passes_on_a_complete_installation(deployment, capsys):
    assert main(["--config", str(deployment.config), "check"]) == 0
    assert "no problems found" in capsys.readouterr().out


def test_check_names_each_problem_with_its_file_and_line(deployment, capsys):
    (deployment.root / "keys" / "ldor@camden.example.asc").unlink()
    boroughs = deployment.root / "rules" / "boroughs.toml"
    boroughs.write_text(boroughs.read_text() + '\n[E09000099]\nname = "Nowhere"\nrecipients = ["x@nowhere.example"]\n')
    providers = deployment.root / "rules" / "providers.toml"
    providers.write_text(providers.read_text() + '\n[10009999]\nname = "Silent College"\nsenders = []\n')

    assert main(["--config", str(deployment.config), "check"]) == 1
    out = capsys.readouterr().out.splitlines()
    text = "\n".join(out)
    camden = [line for line in out if "ldor@camden.example" in line]
    assert len(camden) == 1 and re.match(r".*boroughs\.toml:\d+: \[E09000007\] Camden: no public key", camden[0])
    assert re.search(r"boroughs\.toml:\d+: \[E09000099\] is not a known local authority code", text)
    assert re.search(r"providers\.toml:\d+: provider 10009999 has no senders", text)
    assert re.search(r"providers\.toml:\d+: warning: provider 10009999 \(Silent College\) has no host_la", text)
    assert out[-1] == "3 problem(s) found, and 1 warning(s)."


def test_check_reports_an_unreadable_rule_file(deployment, capsys):
    (deployment.root / "rules" / "providers.toml").write_text("[10001234\nname = ")
    assert main(["--config", str(deployment.config), "check"]) == 1
    assert re.search(r"providers\.toml:1: not valid TOML", capsys.readouterr().out)


def test_validate_prints_the_receipt_a_provider_would_get(deployment, directory, keys, tmp_path, capsys):
    crowd = people(directory, {"E09000019": 3, "E09000007": 2})
    crowd[1] = with_changes(crowd[1], postcode="NOT A PC")  # forwarded to the college's borough, with a note
    crowd[3] = with_changes(crowd[3], family_name="", first_name="")  # names no one: held back
    path = tmp_path / "return.xlsx.gpg"
    path.write_bytes(keys.encrypt_for_gateway(workbook("Example College", "10001234", [p.cells() for p in crowd])))

    assert main(["--config", str(deployment.config), "validate", str(path)]) == 1
    out = capsys.readouterr().out
    assert re.search(r"Rows read:\s+5", out) and re.search(r"Rows forwarded:\s+4", out)
    assert "Postcode_02" in out and "Name_01" in out and crowd[1].family_name not in out

    assert main(["--config", str(deployment.config), "validate", str(path), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["rows_forwarded"] == 4
    assert [(f["severity"], f["row"], f["rule"]) for f in report["findings"]] == [("E", 12, "Name_01"), ("W", 10, "Postcode_02")]


def test_validate_exits_0_for_a_clean_file(deployment, directory, tmp_path, capsys):
    path = tmp_path / "return.xlsx"
    path.write_bytes(workbook("Example College", "10001234", [p.cells() for p in people(directory, {"E09000012": 3})]))
    assert main(["--config", str(deployment.config), "validate", str(path)]) == 0
    assert "No problems found" in capsys.readouterr().out


def test_validate_asks_for_the_password_of_a_protected_workbook(deployment, directory, tmp_path, capsys, monkeypatch):
    import msoffcrypto.format.ooxml as ooxml

    plain = tmp_path / "plain.xlsx"
    plain.write_bytes(workbook("Example College", "10001234", [p.cells() for p in people(directory, {"E09000019": 2})]))
    protected = tmp_path / "protected.xlsx"
    with open(plain, "rb") as source, open(protected, "wb") as target:
        ooxml.OOXMLFile(source).encrypt("Secret-1", target)
    monkeypatch.setattr("gateway.cli._terminal", lambda: True)
    monkeypatch.setattr("getpass.getpass", lambda prompt: "Secret-1")
    assert main(["--config", str(deployment.config), "validate", str(protected)]) == 0
    assert re.search(r"Rows forwarded:\s+2", capsys.readouterr().out)
    monkeypatch.setattr("getpass.getpass", lambda prompt: "wrong")
    assert main(["--config", str(deployment.config), "validate", str(protected)]) == 1
    out = capsys.readouterr().out
    assert out.startswith("F ") and "password" in out and "wrong" not in out


def test_validate_refuses_a_file_that_is_not_a_return(deployment, tmp_path, capsys):
    path = tmp_path / "notes.csv"
    path.write_text("just,some\nnotes,here\n")
    assert main(["--config", str(deployment.config), "validate", str(path), "--json"]) == 1
    [finding] = json.loads(capsys.readouterr().out)["findings"]
    assert (finding["severity"], finding["rule"]) == ("F", "File_01") and "heading row" in finding["message"]


def test_run_once_again_after_a_relay_outage_delivers_what_was_queued(deployment, directory, keys, capsys):
    rows = [p.cells() for p in people(directory, {"E09000019": 2})]
    deployment.deliver(provider_message([("r.xlsx.gpg", keys.encrypt_for_gateway(workbook("Example College", "10001234", rows)))]))
    deployment.smtp.fail_with = "451 4.3.0 Try again later"
    assert deployment.run_once() == 0
    assert deployment.smtp.messages == [] and len(deployment.imap.list_uids("Processed")) == 1
    assert "2 deferred" in capsys.readouterr().out
    deployment.smtp.fail_with = None
    assert deployment.run_once() == 0
    assert sorted(str(m["To"]) for m in deployment.captured()) == ["ldor@islington.example", "mis@example-college.example"]


def test_a_missing_key_holds_the_package_and_alerts_the_administrator(deployment, directory, keys):
    (deployment.root / "keys" / "ldor@hackney.example.asc").unlink()
    rows = [p.cells() for p in people(directory, {"E09000012": 2, "E09000019": 1})]
    deployment.deliver(provider_message([("r.xlsx.gpg", keys.encrypt_for_gateway(workbook("Example College", "10001234", rows)))]))
    assert deployment.run_once() == 0
    sent = {str(m["To"]): m for m in deployment.captured()}
    assert "ldor@hackney.example" not in sent
    alert = sent["admin@example.org"].get_body(("plain",)).get_content()
    assert "Hackney (E09000012)" in alert and "NOT been sent" in alert
    receipt = sent["mis@example-college.example"].get_body(("plain",)).get_content()
    assert re.search(r"Rows forwarded:\s+1\b", receipt)
    assert "Rows accepted but not yet sent: 2" in receipt
    assert re.search(r"Hackney \(E09000012\): 2 \(the borough's encryption key needs renewing", receipt)
    assert "Hackney (E09000012): 2\n" not in receipt


def test_demo_runs_the_whole_journey(tmp_path, capsys):
    folder = tmp_path / "demo"
    assert main(["demo", "--dir", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "4 messages: 3 processed, 1 quarantined" in out
    assert "INBOX 0, Processed 3, Quarantine 1" in out
    opened = sorted((folder / "opened").rglob("*.*"))
    assert {p.parent.name for p in opened} == {name.lower() for name, _, _ in BOROUGHS.values()}
    # Both kinds of delivery: a package per return for Islington, one daily digest for Hackney holding every
    # provider's rows, each row with its own return's reference.
    assert len(list((folder / "opened" / "islington").iterdir())) == 3
    [digest] = (folder / "opened" / "hackney").iterdir()
    rows = list(csv.reader(io.StringIO(digest.read_text(encoding="utf-8-sig"))))
    assert len({row[HEADINGS.index("Provider UKPRN")] for row in rows[1:]}) == 3
    assert len({row[HEADINGS.index("Gateway Reference")] for row in rows[1:]}) == 3
    assert "Hackney takes a daily digest" in out and "1 digest built" in out
    personal = set()
    for path in opened:
        if path.suffix == ".csv":
            rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8-sig"))))[1:]
        else:
            rows = [list(r) for r in openpyxl.load_workbook(path).active.iter_rows(min_row=2, values_only=True)]
        assert rows
        uln, family = HEADINGS.index("ULN"), HEADINGS.index("Family Name")
        personal |= {str(r[uln]) for r in rows} | {str(r[family]) for r in rows}
    for mail in (folder / "relay").glob("*.eml"):
        data = mail.read_bytes()
        assert not any(p.encode() in data for p in personal if len(p) > 3), mail.name
    # A second demo run starts afresh in the same folder.
    assert main(["demo", "--dir", str(folder)]) == 0


def test_demo_refuses_a_folder_it_did_not_make(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(SystemExit):
        main(["demo", "--dir", str(tmp_path)])
    assert (tmp_path / "mine.txt").exists()


def test_validate_shows_progress_on_a_large_file(deployment, directory, tmp_path, capsys):
    crowd = people(directory, {"E09000019": 40})
    rows = [p.cells() for p in crowd] * 80  # 3,200 rows
    path = tmp_path / "big.xlsx"
    path.write_bytes(workbook("Example College", "10001234", rows))
    main(["--config", str(deployment.config), "validate", str(path), "--json"])
    captured = capsys.readouterr()
    assert json.loads(captured.out)["rows_read"] == 3200
    assert "checked 1,000 of 3,200 rows" in captured.err and "checked 3,000 of 3,200 rows" in captured.err


def test_receipts_go_to_the_providers_receipts_address_when_it_has_one(deployment, directory, keys):
    providers = deployment.root / "rules" / "providers.toml"
    providers.write_text(providers.read_text() + 'receipts_to = "data-team@example-college.example"\n')
    rows = [p.cells() for p in people(directory, {"E09000019": 1})]
    deployment.deliver(provider_message([("r.xlsx.gpg", keys.encrypt_for_gateway(workbook("Example College", "10001234", rows)))]))
    assert deployment.run_once() == 0
    assert sorted(str(m["To"]) for m in deployment.captured()) == ["data-team@example-college.example", "ldor@islington.example"]


def test_route_shows_where_rows_would_go_without_sending(deployment, directory, tmp_path, capsys):
    path = tmp_path / "return.xlsx"
    path.write_bytes(workbook("Example College", "10001234", [p.cells() for p in people(directory, {"E09000019": 2, "E09000028": 1})]))
    assert main(["--config", str(deployment.config), "route", str(path)]) == 1
    out = capsys.readouterr().out
    assert "ldor@islington.example" in out and "Route_01" in out
    assert deployment.smtp.messages == []


def test_outbox_lists_what_is_waiting(deployment, directory, keys, capsys):
    rows = [p.cells() for p in people(directory, {"E09000019": 1})]
    deployment.deliver(provider_message([("r.xlsx.gpg", keys.encrypt_for_gateway(workbook("Example College", "10001234", rows)))]))
    deployment.smtp.fail_with = "451 4.3.0 Try again later"
    deployment.run_once()
    capsys.readouterr()
    assert main(["--config", str(deployment.config), "outbox"]) == 0
    out = capsys.readouterr().out
    assert "Queued: 2" in out and "package E09000019" in out and "SMTP 451" in out


def _protected(directory, tmp_path) -> Path:
    import msoffcrypto.format.ooxml as ooxml

    plain = tmp_path / "plain.xlsx"
    plain.write_bytes(workbook("Example College", "10001234", [p.cells() for p in people(directory, {"E09000019": 2})]))
    protected = tmp_path / "protected.xlsx"
    with open(plain, "rb") as source, open(protected, "wb") as target:
        ooxml.OOXMLFile(source).encrypt("Secret-1", target)
    return protected


@pytest.mark.parametrize("command", ["validate", "route"])
def test_a_password_without_a_terminal_says_how_to_give_it(deployment, directory, tmp_path, capsys, monkeypatch, command):
    protected = _protected(directory, tmp_path)
    monkeypatch.delenv("GATEWAY_FILE_PASSWORD", raising=False)
    monkeypatch.setattr("getpass.getpass", lambda prompt: pytest.fail("asked without a terminal"))
    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # not a terminal, as under cron or in a pipe
    assert main(["--config", str(deployment.config), command, str(protected)]) == 2
    captured = capsys.readouterr()
    [line] = captured.err.strip().splitlines()
    assert "GATEWAY_FILE_PASSWORD" in line and "Traceback" not in captured.err
    monkeypatch.setenv("GATEWAY_FILE_PASSWORD", "Secret-1")
    assert main(["--config", str(deployment.config), command, str(protected)]) == 0
    assert "2" in capsys.readouterr().out


def test_the_password_variable_is_in_the_help(capsys):
    for command in ("validate", "route"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert "GATEWAY_FILE_PASSWORD" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("command", ["validate", "route"])
def test_a_folder_or_a_missing_file_is_one_line_not_a_traceback(deployment, tmp_path, capsys, command):
    for path, words in ((tmp_path, "folder"), (tmp_path / "absent.xlsx", "no such file")):
        assert main(["--config", str(deployment.config), command, str(path)]) == 2
        captured = capsys.readouterr()
        [line] = captured.err.strip().splitlines()
        assert words in line and "Traceback" not in captured.err


def test_a_file_over_the_size_limit_is_refused_before_it_is_read(deployment, tmp_path, capsys):
    big = tmp_path / "big.csv"
    with open(big, "wb") as out:
        out.truncate(50 * 1024 * 1024 + 1)  # sparse: no disk used
    assert main(["--config", str(deployment.config), "validate", str(big)]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "50 MB" in line and "split" in line


def _limited() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))


def test_validate_refuses_dev_zero_at_once(deployment):
    # Before, it read /dev/zero until 7.5 GB; run as a child with a 1 GiB cap so the old way fails, not the machine.
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-m", "gateway", "--config", str(deployment.config), "validate", "/dev/zero"],
                          cwd=root, capture_output=True, text=True, timeout=120, preexec_fn=_limited,
                          env={**os.environ, "PYTHONPATH": str(root)})
    assert done.returncode == 2, done.stderr[-500:]
    assert done.stderr.strip() == "gateway: /dev/zero is not a regular file: give the path of a return (.xlsx, .csv, ...)"
