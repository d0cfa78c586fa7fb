"""Golden workbooks: each odd layout in tests/data/ read, validated and routed gives the findings beside it."""

from __future__ import annotations

import importlib.util
import json
from datetime import date
from pathlib import Path

import pytest

from gateway.reference.postcodes import Directory
from gateway.returns.examine import examine
from gateway.returns.read import read_return
from gateway.rules import LONDON, Borough, Provider, Rules

DATA = Path(__file__).resolve().parent / "data"
GOLDEN = sorted(path.name[: -len(".expected.json")] for path in DATA.glob("*.expected.json"))
ORDER = "FEW"


def sort_key(finding: list) -> tuple:
    severity, row, rule = finding
    return ORDER.index(severity), row or 0, rule


def outcome(data: bytes, expected: dict, directory: Directory) -> dict:
    """What the gateway makes of a file: the examination the mailbox and `gateway validate` share, as plain values."""
    provider = Provider(expected["provider"], "Example College", ("mis@example-college.example",), host_la="E09000019")
    rules = Rules({code: Borough(code, name, (f"ldor@{code.lower()}.example",)) for code, name in LONDON.items()},
                  {provider.ukprn: provider})
    examined = examine(data, provider, rules, directory, today=date.fromisoformat(expected["today"]))
    table = examined.table
    assert table is not None
    return {
        "rows_read": examined.rows_read,
        "file_rejected": examined.refusal is not None,
        "forwarded": examined.routed.forwarded,
        "findings": [[f.severity, f.row, f.rule] for f in examined.findings],
        "order": [[f.severity, f.row, f.rule] for f in examined.findings],
    }


def test_there_are_golden_files():
    assert len(GOLDEN) >= 4
    for name in GOLDEN:
        assert (DATA / f"{name}.xlsx").is_file()


@pytest.mark.parametrize("name", GOLDEN)
def test_golden(name, directory):
    expected = json.loads((DATA / f"{name}.expected.json").read_text())
    got = outcome((DATA / f"{name}.xlsx").read_bytes(), expected, directory)
    assert sorted(got["findings"], key=sort_key) == expected["findings"]
    assert got["rows_read"] == expected["rows_read"]
    assert got["file_rejected"] == expected["file_rejected"]
    assert got["forwarded"] == expected["forwarded"]
    # The examination hands its findings over in receipt order: file, then errors, then warnings.
    assert got["order"] == sorted(got["order"], key=sort_key)


def load_script():
    spec = importlib.util.spec_from_file_location("make_golden", DATA / "make_golden.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_script_writes_the_files_that_are_committed(tmp_path):
    written = load_script().build(tmp_path)
    assert sorted(p.name[: -len(".xlsx")] for p in written) == GOLDEN
    for name in GOLDEN:
        assert (tmp_path / f"{name}.expected.json").read_text() == (DATA / f"{name}.expected.json").read_text()
        assert read_return((tmp_path / f"{name}.xlsx").read_bytes()) == read_return((DATA / f"{name}.xlsx").read_bytes())


def test_the_script_is_deterministic(tmp_path):
    script = load_script()
    first, second = tmp_path / "one", tmp_path / "two"
    first.mkdir()
    second.mkdir()
    script.build(first)
    script.build(second)
    for path in sorted(first.iterdir()):
        assert path.read_bytes() == (second / path.name).read_bytes(), path.name
