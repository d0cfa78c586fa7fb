"""The monthly report as an xlsx workbook: sheets Summary, Providers and Boroughs, with a bar chart of
notifications per borough and a pie of providers' returns; headings frozen, numbers stored as numbers.
The figures are report.py's; this file only lays them out."""

from __future__ import annotations

import io
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import openpyxl
from openpyxl.chart import BarChart, PieChart, Reference
from openpyxl.styles import Font
from openpyxl.utils import get_column_letter

from .report import MonthlyReport

if TYPE_CHECKING:
    from openpyxl.workbook.workbook import Workbook
    from openpyxl.worksheet.worksheet import Worksheet


def write_xlsx(report: MonthlyReport, path: Path) -> Path:
    """The workbook at `path`, written whole, then renamed into place."""
    path = Path(path)
    part = path.with_name(f".{path.name}.part")
    part.write_bytes(xlsx_bytes(report))
    part.replace(path)
    return path


def xlsx_bytes(report: MonthlyReport) -> bytes:
    """The workbook, made in memory (the report's email attaches it)."""
    book = openpyxl.Workbook()
    _summary(book, report)
    _providers(book, report)
    _boroughs(book, report)
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


def _summary(book: Workbook, report: MonthlyReport) -> None:
    summary = book.active
    summary.title = "Summary"
    rows_read = sum(p.rows for p in report.providers)
    reasons = report.reason_columns()
    figures: list[tuple[str, object, str | None]] = [
        ("Month", report.month, None),
        ("Returns due by day", report.due_day, "0"),
        ("Made at (UTC)", report.generated.replace(tzinfo=None), "yyyy-mm-dd hh:mm"),
        ("Known providers", report.known_providers, "0"),
        ("Providers that returned", report.returned, "0"),
        ("Share of known providers that returned", report.share_returned, "0%"),
        ("Returned on time", report.on_time, "0"),
        ("Returned late", report.late, "0"),
        ("Not returned", report.known_providers - report.returned, "0"),
        ("Returns received", sum(p.returns for p in report.providers), "0"),
        ("Returns refused as a whole", sum(p.rejected for p in report.providers), "0"),
        ("Messages received in all", report.messages, "0"),
        ("Messages quarantined", report.quarantined, "0"),
        ("Rows read", rows_read, "0"),
        ("Rows forwarded", sum(p.rows_forwarded for p in report.providers), "0"),
        ("Rows rejected", sum(p.rows_rejected for p in report.providers), "0"),
        ("Warnings", sum(p.warnings for p in report.providers), "0"),
        ("Notifications to London boroughs", report.london.notifications, "0"),
        *((f"  of which {column}", value, "0") for column, value in zip(reasons, report.london.values(reasons), strict=False)),
        ("Notifications to every recipient", report.total.notifications, "0"),
    ]
    _append(summary, ("Figure", "Value"), bold=Font(bold=True))
    for label, value, number_format in figures:
        _append(summary, (label, value), formats={1: number_format})
    _append_at(summary, summary.max_row + 2, ("Notes",), Font(bold=True))
    for note in report.notes:
        _append(summary, (note,))
    status_row = summary.max_row + 2
    _append_at(summary, status_row, ("Providers", "Count"), Font(bold=True))
    for offset, (label, count) in enumerate((("On time", report.on_time), ("Late", report.late),
                                             ("Not returned", report.known_providers - report.returned)), start=1):
        _append_at(summary, status_row + offset, (label, count))
    pie = PieChart()
    pie.title = "Known providers' returns"
    pie.add_data(Reference(summary, min_col=2, min_row=status_row, max_row=status_row + 3), titles_from_data=True)
    pie.set_categories(Reference(summary, min_col=1, min_row=status_row + 1, max_row=status_row + 3))
    summary.add_chart(pie, "D2")
    _finish(summary, widths={1: 42, 2: 18})


def _providers(book: Workbook, report: MonthlyReport) -> None:
    providers = book.create_sheet("Providers")
    _append(providers, ("UKPRN", "Provider", "In providers.toml", "Returned", "On time", "First accepted return",
                        "Returns", "Refused as a whole", "Rows", "Rows forwarded", "Rows rejected", "Warnings"),
            bold=Font(bold=True))
    for p in report.providers:
        _append(providers, (
            int(p.ukprn) if p.ukprn.isdigit() else p.ukprn, p.name, "yes" if p.known else "no",
            "yes" if p.returned else "no", p.status if p.returned else "",
            p.first_return.replace(tzinfo=None) if p.first_return else None,
            p.returns, p.rejected, p.rows, p.rows_forwarded, p.rows_rejected, p.warnings,
        ), formats={0: "0", 5: "dd/mm/yyyy hh:mm"})
    _finish(providers)


def _boroughs(book: Workbook, report: MonthlyReport) -> None:
    reasons = report.reason_columns()
    boroughs = book.create_sheet("Boroughs")
    _append(boroughs, ("Code", "Borough", "Notifications", *reasons, "Providers", "Packages", "Packages sent"),
            bold=Font(bold=True))
    for b in report.boroughs:
        _append(boroughs, (b.code, b.name, b.notifications, *b.values(reasons), b.providers, b.packages, b.sent))
    last = boroughs.max_row
    for b in report.totals():
        _append(boroughs, ("", b.name, b.notifications, *b.values(reasons), b.providers, b.packages, b.sent),
                bold=Font(bold=True))
    chart = BarChart()
    chart.type = "bar"  # horizontal: 33 borough names stay readable
    chart.title = f"Notifications per borough, {report.month}"
    chart.y_axis.title = "Notifications"
    chart.x_axis.delete = chart.y_axis.delete = False  # openpyxl 3.1 leaves this out, and Excel then hides the axes
    chart.height, chart.width = max(8.0, 0.5 * (last - 1)), 18.0
    if reasons:  # one bar segment per reason
        chart.grouping, chart.overlap = "stacked", 100
        chart.add_data(Reference(boroughs, min_col=4, max_col=3 + len(reasons), min_row=1, max_row=last), titles_from_data=True)
    else:
        chart.add_data(Reference(boroughs, min_col=3, min_row=1, max_row=last), titles_from_data=True)
    chart.set_categories(Reference(boroughs, min_col=2, min_row=2, max_row=last))
    boroughs.add_chart(chart, f"{get_column_letter(len(reasons) + 8)}2")
    _finish(boroughs)


def _append(sheet: Worksheet, values: tuple[object, ...], bold: Font | None = None,
            formats: dict[int, str | None] | None = None) -> None:
    _append_at(sheet, sheet.max_row + 1 if sheet.max_row > 1 or sheet["A1"].value is not None else 1, values, bold, formats)


def _append_at(sheet: Worksheet, row: int, values: tuple[object, ...], bold: Font | None = None,
               formats: dict[int, str | None] | None = None) -> None:
    for column, value in enumerate(values, start=1):
        cell = sheet.cell(row=row, column=column, value=value)
        if isinstance(value, str):
            cell.data_type = "s"  # a provider's name starting with "=" stays text, never a formula
        number_format = (formats or {}).get(column - 1)
        if number_format:
            cell.number_format = number_format
        if bold is not None:
            cell.font = bold


def _finish(sheet: Worksheet, widths: dict[int, int] | None = None) -> None:
    """Headings frozen; each column as wide as its widest cell (within reason)."""
    sheet.freeze_panes = "A2"
    for cells in sheet.iter_cols(min_row=1, max_row=sheet.max_row):
        column = cells[0].column
        if widths and column in widths:
            width = widths[column]
        else:
            width = min(60, max((len(_shown(c.value)) for c in cells), default=8) + 2)
        sheet.column_dimensions[get_column_letter(column)].width = width


def _shown(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return "00/00/0000 00:00"
    if isinstance(value, float):
        return "100%"
    return str(value)
