"""Notify first (issue 10): a return of forty rows with one of each fault, through the real servers.

tests/data/one_of_each.xlsx (made by tests/data/make_golden.py, its findings reasoned by hand) is mailed
encrypted to a real Dovecot and handled by `gateway run --once`. Every row that names a person and a
notification and can be placed reaches an authority with its data quality notes; rows whose postcode
cannot be placed reach the college's own authority; the provider's receipt lists exactly the golden
findings; each borough's covering note counts the rows held back, and carries no personal data.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import gnupg
import openpyxl
from helpers import (
    BOROUGHS,
    PROVIDER_SENDER,
    attachments_of,
    provider_message,
    read_xlsx,
)

DATA = Path(__file__).resolve().parent / "data"
HOST = "E09000019"  # the college's host_la: Islington


def _golden_rows() -> dict[int, dict[str, object]]:
    sheet = openpyxl.load_workbook(DATA / "one_of_each.xlsx")["Return"]
    headings = [c.value for c in sheet[7]]
    return {r[0].row: dict(zip(headings, (c.value for c in r), strict=False)) for r in sheet.iter_rows(min_row=8) if any(c.value for c in r)}


def _decrypt(message, keys) -> tuple[str, bytes]:
    (name, data), = attachments_of(message).items()
    result = gnupg.GPG(gnupghome=str(keys.borough_homes[str(message["To"])])).decrypt(data)
    assert result.ok, result.status
    return name, result.data


def test_forty_rows_one_of_each_fault_every_placeable_row_reaches_an_authority(deployment, keys, directory):
    expected = json.loads((DATA / "one_of_each.expected.json").read_text())
    golden = _golden_rows()
    assert len(golden) == expected["rows_read"] == 40
    deployment.deliver(provider_message([("return.xlsx.gpg", keys.encrypt_for_gateway((DATA / "one_of_each.xlsx").read_bytes()))]))

    assert deployment.run_once() == 0

    captured = deployment.captured()
    [receipt] = [m for m in captured if str(m["To"]) == PROVIDER_SENDER]
    findings_file = next(data for name, data in attachments_of(receipt).items() if name.endswith("findings.csv"))
    found = [[r["Severity"], int(r["Row"]) if r["Row"] else None, r["Rule"]]
             for r in csv.DictReader(io.StringIO(findings_file.decode("utf-8-sig")))]
    assert found == expected["findings"]
    held = {row for severity, row, _ in expected["findings"] if severity == "E"}
    notes = {}
    for _, row, rule in expected["findings"]:
        notes.setdefault(row, []).append(rule)

    # Where each row should go: its postcode's borough, or the college's when the postcode cannot place it.
    def home(cells) -> str | None:
        return directory.authority(str(cells["Post Code"] or "").upper()) or HOST

    want: dict[str, set[int]] = {}
    for number, cells in golden.items():
        if number not in held:
            want.setdefault(home(cells), set()).add(number)
    assert sum(map(len, want.values())) == expected["forwarded"] == 34
    assert set(want) == set(BOROUGHS)

    body = receipt.get_body(("plain",)).get_content()
    assert re.search(r"Rows forwarded:\s+34\b", body) and re.search(r"Rows rejected \(not forwarded\): 6\b", body)
    # Issue 12 (5): notes on held-back rows are counted with them, not as warnings on forwarded rows.
    on_held = sum(1 for severity, row, _ in expected["findings"] if severity == "W" and row in held)
    on_forwarded = sum(1 for severity, row, _ in expected["findings"] if severity == "W" and row not in held)
    assert "Rows rejected (not forwarded): 6" + (f" (with {on_held} further notes on them)" if on_held else "") + "\r\n" in body
    assert f"Warnings (on forwarded rows): {on_forwarded}" in body
    assert "Manchester (E08000003)" in body and "Leeds (E08000035)" in body

    for code, (name, address, fmt) in BOROUGHS.items():
        [package] = [m for m in captured if str(m["To"]) == address]
        filename, plain = _decrypt(package, keys)
        rows = (list(csv.reader(io.StringIO(plain.decode("utf-8-sig")))) if fmt == "csv" else
                [["" if v is None else v for v in r] for r in read_xlsx(plain)])
        heading, body_rows = rows[0], rows[1:]
        column = {h: i for i, h in enumerate(heading)}
        by_row = {int(r[column["Source Row"]]): r for r in body_rows}
        assert set(by_row) == want[code], name
        print(f"\n{name} ({code}), {filename[-9:]}: {len(by_row)} rows")  # row numbers and rule names only
        for number in sorted(by_row):
            r = by_row[number]
            print(f"  row {number}: {r[column['Notification']]:<8} routed by {r[column['Routed By']]:<21} "
                  f"{r[column['Data Quality']] or '-'}")
        for number, r in by_row.items():
            quality = str(r[column["Data Quality"]])
            for rule in notes.get(number, []):
                assert rule in quality, (name, number, rule)
            if "ULN_04" in notes.get(number, []):
                assert r[column["ULN"]] in ("", None)  # it could match another young person: left out
            if set(notes.get(number, [])) & {"Postcode_01", "Postcode_02", "Postcode_15"}:
                assert "home postcode unknown: sent to the authority the provider is in" in quality
                assert r[column["Routed By"]] == "provider's authority"
        # The covering note counts what was held back from every authority, and names no one.
        note = package.get_body(("plain",)).get_content()
        flat = " ".join(note.split())
        assert "Rows of this return held back from every authority: 6 " in flat
        for count, why in (("2 rows", "no notification marked"), ("2 rows", "home authority not served by this gateway"),
                           ("1 row", "no name given"), ("1 row", "over 24, so not a young person")):
            assert f"{count}: {why}" in flat
        for cells in golden.values():
            for value in (cells["Family Name"], cells["Post Code"], cells["ULN"]):
                if value and len(str(value)) > 3:
                    assert str(value) not in note
