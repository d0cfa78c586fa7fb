"""`gateway template`: the blank return, read back as the gateway reads returns."""

from __future__ import annotations

import openpyxl

from gateway.cli import main
from gateway.read import HEADINGS, read_return
from gateway.template import HEADING_ROW, write_template
from gateway.validate import RULES, validate


def test_the_template_is_a_return_the_gateway_reads(tmp_path):
    path = tmp_path / "return.xlsx"
    write_template(path)
    table = read_return(path.read_bytes())
    assert table.sheet == "Return" and table.heading_row == HEADING_ROW
    assert set(table.header) == {"provider_name", "provider_number", "contact_name", "contact_tel", "contact_email"}
    assert set(table.columns) == set(HEADINGS) - {"reason"}
    assert table.rows == ()
    # Sent back empty, it is refused for its empty header block, not misread.
    assert {f.rule for f in validate(table, None).fatal} == {"Provider_01", "Provider_02"}


def test_the_template_guides_the_person_filling_it(tmp_path):
    path = tmp_path / "return.xlsx"
    assert main(["template", str(path)]) == 0
    book = openpyxl.load_workbook(path)
    sheet = book["Return"]
    assert sheet.freeze_panes == f"A{HEADING_ROW + 1}"
    assert sheet[f"D{HEADING_ROW + 1}"].number_format == "DD/MM/YYYY"
    lists = {str(v.sqref): v.formula1 for v in sheet.data_validations.dataValidation if v.type == "list"}
    assert lists[f"I{HEADING_ROW + 1}:K{HEADING_ROW + 1000}"] == '"X"'
    assert "540" in lists[f"L{HEADING_ROW + 1}:L{HEADING_ROW + 1000}"]
    listed = {row[0] for row in book["Instructions"].iter_rows(values_only=True)}
    assert set(RULES) <= listed
