"""Sample returns in the layout providers use: for the demo, the examples and the tests.

The people are invented; their postcodes are real ones from the ONS directory, so routing is real.
"""

from __future__ import annotations

import csv
import io
import random
from dataclasses import dataclass, replace
from datetime import date
from typing import Any

import openpyxl  # openpyxl ships no type information

from ..reference.postcodes import Directory

TABLE_HEADINGS = (
    "ULN", "Family Name", "First Name", "DOB", "Address", "Post Code", "Contact e-mail", "phone number",
    "Joiner", "Leaver", "at risk of dropping out", "Destination if known",
)
_FAMILY = ("Adeyemi", "Brennan", "Chowdhury", "Dimitrova", "Evans", "Fernandes", "Gallagher", "Hussain",
           "Ivanova", "Johnson", "Kowalski", "Lindqvist", "Mensah", "Nowak", "Okafor", "Patel", "Quinn",
           "Rahman", "Silva", "Thompson", "Usman", "Varga", "Williams", "Xu", "Yilmaz", "Zielinski")
_FIRST = ("Aisha", "Ben", "Chloe", "Dev", "Ella", "Femi", "Grace", "Harry", "Isla", "Jamal", "Kacper",
          "Leah", "Mo", "Nia", "Oscar", "Priya", "Rory", "Sana", "Tom", "Uma", "Vik", "Wren", "Yusuf", "Zara")
_STREETS = ("High Street", "Church Road", "Station Road", "Park Avenue", "Victoria Road", "Green Lanes")


@dataclass(frozen=True)
class Person:
    uln: str
    family_name: str
    first_name: str
    dob: date
    address: str
    postcode: str
    email: str
    phone: str
    reason: str  # Joiner | Leaver | At risk
    destination: str = ""

    def cells(self) -> list[object]:
        ticks = ["X" if self.reason == r else "" for r in ("Joiner", "Leaver", "At risk")]
        return [self.uln, self.family_name, self.first_name, self.dob, self.address, self.postcode,
                self.email, self.phone, *ticks, self.destination]


def valid_uln(number: int) -> str:
    """A ULN that passes the ULN_04 check digit, built from a 9-digit stem."""
    stem = str(100000000 + number % 900000000)
    remainder = sum(w * int(d) for w, d in zip(range(10, 1, -1), stem, strict=False)) % 11
    if remainder == 0:  # no check digit makes this stem valid
        return valid_uln(number + 1)
    return stem + str(10 - remainder)


def people(directory: Directory, per_authority: dict[str, int], seed: int = 7, today: date | None = None) -> list[Person]:
    """Invented young people aged 16-18 living at real postcodes of the given authorities."""
    today = today or date.today()
    chooser = random.Random(seed)
    found: list[Person] = []
    for code, count in per_authority.items():
        postcodes = directory.examples(code, count * 3)
        if len(postcodes) < count:
            raise ValueError(f"the postcode directory has too few postcodes for {code}")
        for postcode in chooser.sample(postcodes, count):
            n = len(found)
            family, first = _FAMILY[n % len(_FAMILY)], _FIRST[(n * 7) % len(_FIRST)]
            born = date(today.year - 17 - chooser.randint(0, 1), chooser.randint(1, 12), chooser.randint(1, 28))
            found.append(Person(
                uln=valid_uln(123456789 + seed * 1_000_003 + n * 7919),
                family_name=family if n < len(_FAMILY) else f"{family}-{_FAMILY[(n * 3) % len(_FAMILY)]}",
                first_name=first,
                dob=born,
                address=f"{chooser.randint(1, 250)} {_STREETS[n % len(_STREETS)]}",
                postcode=postcode,
                email=f"{first.lower()}.{family.lower()}{n}@example.net",
                phone=f"07700 9{n:05d}",
                reason=("Leaver", "Joiner", "At risk")[n % 3],
                destination="540" if n % 3 == 0 else "",
            ))
    return found


def workbook(provider_name: str, ukprn: str, rows: list[list[object]], instructions: bool = True) -> bytes:
    """An xlsx laid out as providers fill it: header block, blank rows, the table; an instructions sheet first."""
    book = openpyxl.Workbook()
    first = book.active
    if instructions:
        first.title = "Instructions"
        first["A1"] = "Complete the Return sheet. One row per young person. Tick one reason per row."
        sheet = book.create_sheet("Return")
    else:
        sheet = first
        sheet.title = "Return"
    for label, value in (("Provider Name", provider_name), ("Provider Number", ukprn), ("Contact Name", "MIS Team"),
                         ("Tel", "020 7946 0000"), ("e-mail", "mis@example-college.example")):
        sheet.append([label, value])
    sheet.append([])
    sheet.append([])
    sheet.append(list(TABLE_HEADINGS))
    for row in rows:
        sheet.append(row)
    for cell in sheet["D"][8:]:
        cell.number_format = "DD/MM/YYYY"
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


def reason_csv(rows: list[Person]) -> bytes:
    """A csv export as some MIS systems make it: no header block, one Reason column, dates as text."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(["ULN", "Surname", "Forename", "Date of Birth", "Address", "Postcode", "Reason"])
    for p in rows:
        writer.writerow([p.uln, p.family_name, p.first_name, p.dob.strftime("%d/%m/%Y"), p.address,
                         p.postcode.replace(" ", ""), p.reason])
    return buffer.getvalue().encode("utf-8")


def with_changes(person: Person, **changes: Any) -> Person:  # any of Person's fields, each of its own type
    return replace(person, **changes)
