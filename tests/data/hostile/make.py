"""Build the hostile corpus: files and messages an attacker or a careless exporter sends, each with its answer.

    python tests/data/hostile/make.py

Writes files/<case>.<ext> (the plain file, byte-for-byte the same on every run: fixed people, fixed zip
times) and expected.json (what issue 9 says must happen to each case). The messages themselves are
built at test time by `message(case, encrypt)` below, because ciphertext is random and some messages
(10,000 parts, an attachment over 50 MB) would be too big to keep in the repository. The one exception
is the gpg compression bomb, files/gpg_bomb.gpg: 1 GB of zeros compressed and encrypted to the golden
gateway key in tests/data/messages/keys (a couple of kB), made once because making it takes seconds.

Outcomes, as the test reads them:
- "accepted": the provider gets an acknowledgement (possibly with findings); rows_read / rows_forwarded
  when given must match.
- "rejected": the provider gets one rejection receipt whose advice holds one of `phrases`.
- "quarantined": the message goes to Quarantine and the administrator is alerted; `provider_told`
  true means the registered provider must be told too (a file over a limit), null means either.
A list of outcomes means any of them is a clear answer (the issue names no single one); what never is:
the message left in INBOX, the gateway dead, nobody answered, or a row lost silently.
`validate` gives the exit codes `gateway validate` may end with on the plain file (0 clean, 1 findings
that block, 2 an error it explains) — never a traceback. `needs` names the issue 9 fix a case relies on.
"""

from __future__ import annotations

import csv
import io
import json
import random
import subprocess
import sys
import tempfile
import zipfile
import zlib
from datetime import date
from email.message import EmailMessage
from pathlib import Path
from xml.sax.saxutils import escape

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
FILES = HERE / "files"
GOLDEN_KEYS = REPO / "tests" / "data" / "messages" / "keys"
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from gateway.demo.sample import TABLE_HEADINGS, Person, people  # noqa: E402
from gateway.reference.postcodes import Directory  # noqa: E402

TODAY = date(2026, 11, 20)
ZIP_TIME = (2026, 11, 20, 9, 0, 0)
COLLEGE = "mis@example-college.example"
STRANGER = "someone@elsewhere.example"
GATEWAY = "ldor@example.org"
UKPRN, PROVIDER = "10001234", "Example College"
PASSWORD = "Ldor-Test-Password-1"
AUTHORITIES = {"E09000019": 2, "E09000007": 2, "E09000012": 1}  # Islington, Camden, Hackney: 5 rows

_SPREADSHEET = ("application", "octet-stream")
_NS = 'xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"'
_R = 'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"'


# -- people ----------------------------------------------------------------------------------------------
_DIRECTORY: Directory | None = None


def crowd(seed: int, per: dict[str, int] | None = None) -> list[Person]:
    global _DIRECTORY
    _DIRECTORY = _DIRECTORY or Directory()
    return people(_DIRECTORY, per or AUTHORITIES, seed=seed, today=TODAY)


def content_types(doctype: str, entity: str) -> str:
    """A [Content_Types].xml whose DOCTYPE declares `entity`, used as a content type."""
    return ('<?xml version="1.0"?>\n' + doctype + '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
            f'<Default Extension="rels" ContentType="&{entity};"/><Default Extension="xml" ContentType="application/xml"/>'
            '<Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
            "</Types>")


def only_in(stale, real) -> list[str]:
    """Values of the stale sheet's people that the real sheet does not also hold (the sample reuses names)."""
    return sorted(set(personal(stale)) - set(personal(real)))


def personal(persons: list[Person]) -> list[str]:
    values = set()
    for p in persons:
        values |= {p.uln, p.family_name, p.address, p.postcode, p.postcode.replace(" ", ""), p.dob.strftime("%d/%m/%Y"),
                   p.email, p.phone}
    return sorted(values)


def table_cells(persons: list[Person]) -> list[list[object]]:
    return [[p.uln, p.family_name, p.first_name, p.dob.strftime("%d/%m/%Y"), p.address, p.postcode, p.email, p.phone,
             *["X" if p.reason == r else "" for r in ("Joiner", "Leaver", "At risk")], p.destination] for p in persons]


def header_block() -> list[list[object]]:
    return [["Provider Name", PROVIDER], ["Provider Number", UKPRN], ["Contact Name", "MIS Team"],
            ["Tel", "020 7946 0000"], ["e-mail", COLLEGE], [], []]


# -- a hand-written xlsx, so every byte of its XML can be chosen --------------------------------------------
def column(index: int) -> str:
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(65 + rest) + letters
    return letters


def row_xml(number: int, values: list[object], first: int = 0) -> str:
    cells = "".join(
        f'<c r="{column(first + i)}{number}" t="inlineStr"><is><t>{escape(str(v))}</t></is></c>'
        for i, v in enumerate(values) if v not in (None, ""))
    return f'<row r="{number}">{cells}</row>'


def sheet_xml(rows: list[list[object]], dimension: str | None = None, tail: str = "", doctype: str = "") -> str:
    body = "".join(row_xml(n, r) for n, r in enumerate(rows, 1) if r)
    dim = f'<dimension ref="{dimension}"/>' if dimension else ""
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n{doctype}<worksheet {_NS} {_R}>{dim}<sheetData>{body}{tail}'
            "</sheetData></worksheet>")


def return_rows(persons: list[Person], headings: list[str] | None = None) -> list[list[object]]:
    return header_block() + [headings or list(TABLE_HEADINGS)] + table_cells(persons)


def book(sheets: list[tuple[str, str, str]], extra: dict[str, bytes | str] | None = None,
         content_types: str | None = None, workbook_extra: str = "", rels_extra: str = "", workbook_doctype: str = "",
         main_type: str = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml") -> bytes:
    """sheets: (name, sheet XML, state); state '' visible, 'hidden' or 'veryHidden'."""
    entries = "".join(
        f'<sheet name="{escape(name, {chr(34): "&quot;"})}" sheetId="{i}" r:id="rId{i}"'
        f'{f" state={chr(34)}{state}{chr(34)}" if state else ""}/>' for i, (name, _, state) in enumerate(sheets, 1))
    workbook = f'<?xml version="1.0" encoding="UTF-8"?>\n{workbook_doctype}<workbook {_NS} {_R}><sheets>{entries}</sheets>{workbook_extra}</workbook>'
    relations = "".join(
        f'<Relationship Id="rId{i}" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" '
        f'Target="worksheets/sheet{i}.xml"/>' for i in range(1, len(sheets) + 1))
    types = content_types or (
        '<?xml version="1.0" encoding="UTF-8"?>\n<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
        '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
        '<Default Extension="xml" ContentType="application/xml"/>'
        f'<Override PartName="/xl/workbook.xml" ContentType="{main_type}"/>'
        + "".join(f'<Override PartName="/xl/worksheets/sheet{i}.xml" '
                  'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>'
                  for i in range(1, len(sheets) + 1)) + "</Types>")
    parts: dict[str, bytes | str] = {
        "[Content_Types].xml": types,
        "_rels/.rels": ('<?xml version="1.0" encoding="UTF-8"?>\n<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
                        '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" '
                        'Target="xl/workbook.xml"/></Relationships>'),
        "xl/workbook.xml": workbook,
        "xl/_rels/workbook.xml.rels": ('<?xml version="1.0" encoding="UTF-8"?>\n<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
                                       f"{relations}{rels_extra}</Relationships>"),
    }
    for i, (_, xml, _) in enumerate(sheets, 1):
        parts[f"xl/worksheets/sheet{i}.xml"] = xml
    parts.update(extra or {})
    return zipped(parts)


def zipped(parts: dict[str, bytes | str], level: int = 9, method: int = zipfile.ZIP_DEFLATED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", method, compresslevel=level if method == zipfile.ZIP_DEFLATED else None) as archive:
        for name, content in parts.items():
            archive.writestr(zipfile.ZipInfo(name, ZIP_TIME), content, method)
    return out.getvalue()


def good_xlsx(persons: list[Person], **kw) -> bytes:
    return book([("Return", sheet_xml(return_rows(persons)), "")], **kw)


def csv_text(persons: list[Person], delimiter: str = ",") -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n", delimiter=delimiter)
    writer.writerow(["ULN", "Surname", "Forename", "Date of Birth", "Address", "Postcode", "Reason"])
    for p in persons:
        writer.writerow([p.uln, p.family_name, p.first_name, p.dob.strftime("%d/%m/%Y"), p.address, p.postcode, p.reason])
    return out.getvalue()


# -- zips built to harm ------------------------------------------------------------------------------------
def overlapping_zip() -> bytes:
    """Many central-directory entries pointing at one local file whose data they all share (Fifield's
    overlapping-file bomb, simplified): each entry claims the whole 10 MB of zeros."""
    data = zipped({"xl/worksheets/sheet1.xml": b"\0" * 10_000_000})
    central = data.index(b"PK\x01\x02")
    end = data.index(b"PK\x05\x06")
    entry = data[central:end]
    name_length = int.from_bytes(entry[28:30], "little")
    entries = b""
    for i in range(200):
        name = f"xl/worksheets/sheet{i + 1:03d}.xml".encode()
        renamed = entry[:28] + len(name).to_bytes(2, "little") + entry[30:46] + name + entry[46 + name_length:]
        entries += renamed
    tail = bytearray(data[end:])
    tail[8:10] = (200).to_bytes(2, "little")
    tail[10:12] = (200).to_bytes(2, "little")
    tail[12:16] = len(entries).to_bytes(4, "little")
    tail[16:20] = central.to_bytes(4, "little")
    return data[:central] + entries + bytes(tail)


def lying_size_zip(persons: list[Person]) -> bytes:
    """A workbook whose sheet entry declares 100 bytes uncompressed but inflates to 60 MB of spaces."""
    big = sheet_xml(return_rows(persons)).replace("<sheetData>", "<sheetData>" + " " * 60_000_000, 1)
    data = bytearray(book([("Return", big, "")]))
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        start = 0
        while (at := data.find(signature, start)) >= 0:
            name_at = at + (30 if signature == b"PK\x03\x04" else 46)
            length = int.from_bytes(data[at + (26 if signature == b"PK\x03\x04" else 28):][:2], "little")
            if data[name_at:name_at + length] == b"xl/worksheets/sheet1.xml":
                data[at + offset:at + offset + 4] = (100).to_bytes(4, "little")
            start = at + 4
    return bytes(data)


def nested_zip() -> bytes:
    """Zips in zips, three copies at each of four levels: 81 times a 1 MB csv if opened all the way."""
    inner = zipped({"return.csv": b"0" * 1_000_000})
    for level in range(4):
        inner = zipped({f"level{level}-{i}.zip": inner for i in range(3)})
    return inner


# -- the cases ----------------------------------------------------------------------------------------------
class Corpus:
    def __init__(self) -> None:
        self.cases: dict[str, dict] = {}
        self.files: dict[str, bytes] = {}

    def add(self, case: str, about: str, outcome: str | list[str], data: bytes | None = None, ext: str = "xlsx",
            send: str = "gpg", name: str | None = None, phrases: list[str] | None = None, rows_read: int | None = None,
            rows_forwarded: int | None = None, validate: list[int] | None = None, persons: list[Person] = (),
            needs: str | None = None, provider_told: bool | None = None, sender: str = "college",
            batch: str = "main", **extra) -> None:
        assert case not in self.cases, case
        file = None
        if data is not None:
            file = f"{case}.{ext}"
            assert len(data) < 100_000, f"{case} is {len(data)} bytes: keep the corpus small"
            self.files[file] = data
        self.cases[case] = {
            "about": about, "file": file, "send": send, "name": name or (f"return.{ext}.gpg" if send.startswith("gpg") else f"return.{ext}"),
            "sender": sender, "outcome": outcome, "phrases": phrases or [], "rows_read": rows_read,
            "rows_forwarded": rows_forwarded, "validate": validate, "personal": personal(list(persons)), "needs": needs,
            "provider_told": provider_told, "batch": batch, **extra,
        }


def build() -> Corpus:
    c = Corpus()
    seed = iter(range(9000, 9999))

    def people5() -> list[Person]:
        return crowd(next(seed))

    # Controls: a good workbook and a good csv pass untouched.
    p = people5()
    c.add("good_xlsx", "a good return (control)", "accepted", good_xlsx(p), rows_read=5, rows_forwarded=5, validate=[0], persons=p)
    p = people5()
    c.add("good_csv", "a good csv export (control)", "accepted", csv_text(p).encode(), "csv", rows_read=5, rows_forwarded=5,
          validate=[0], persons=p)

    # 1. Sheet dimensions and far cells: checked before any dense read.
    limit_words = ["limit", "too many", "too large", "too wide", "too big", "columns", "rows"]
    p = people5()
    far = row_xml(1048576, ["x"], first=16383)
    c.add("far_cell_xfd1048576", "a valid return plus one cell at XFD1048576 (calamine aborted sizing a dense range)",
          ["accepted", "rejected"], book([("Return", sheet_xml(return_rows(p), tail=far), "")]), phrases=limit_words,
          validate=[0, 1], persons=p, needs="read", batch="alone")
    p = people5()
    c.add("far_cell_xfd12000", "a valid return plus one cell at XFD12000 (7.5 GB dense read)", ["accepted", "rejected"],
          book([("Return", sheet_xml(return_rows(p), tail=row_xml(12000, ["x"], first=16383)), "")]), phrases=limit_words,
          validate=[0, 1], persons=p, needs="read", batch="alone")
    p = people5()
    c.add("dimension_claims_whole_sheet", "<dimension ref='A1:XFD1048576'/> on a small table", ["accepted", "rejected"],
          book([("Return", sheet_xml(return_rows(p), dimension="A1:XFD1048576"), "")]), phrases=limit_words,
          validate=[0, 1], persons=p, needs="read", batch="alone")
    p = people5()
    c.add("row_past_excel", "a cell in row 1048577, past Excel's last row", ["accepted", "rejected"],
          book([("Return", sheet_xml(return_rows(p), tail=row_xml(1048577, ["x"])), "")]), phrases=limit_words + ["damaged", "read"],
          validate=[0, 1], persons=p, needs="read", batch="alone")
    p = people5()
    c.add("garbage_cell_reference", "cell references that are not references (r='A-1', r='ZZZZ9')", ["accepted", "rejected"],
          book([("Return", sheet_xml(return_rows(p), tail='<row r="99"><c r="A-1" t="inlineStr"><is><t>x</t></is></c>'
                                     '<c r="ZZZZ9" t="inlineStr"><is><t>y</t></is></c></row>'), "")]),
          phrases=limit_words + ["damaged", "read"], validate=[0, 1], persons=p)
    p = people5()
    c.add("heading_at_xfd", "a heading in column XFD (borough workbooks of 16,389 columns)", ["accepted", "rejected"],
          book([("Return", sheet_xml(return_rows(p)).replace(
              '<row r="8">', '<row r="8"><c r="XFD8" t="inlineStr"><is><t>Notes</t></is></c>', 1), "")]),
          phrases=limit_words, validate=[0, 1], persons=p, needs="read", max_package_columns=40)
    p = people5()
    wide = list(TABLE_HEADINGS) + [f"Extra {i}" for i in range(3000)]
    c.add("three_thousand_headings", "a heading row of 3,012 columns", ["accepted", "rejected"],
          book([("Return", sheet_xml(header_block() + [wide] + table_cells(p)), "")]), phrases=limit_words,
          validate=[0, 1], persons=p, max_package_columns=40)

    # 8. Hidden sheets lose to visible ones.
    stale, real = crowd(next(seed), {"E09000019": 3}), people5()
    c.add("hidden_stale_sheet", "a hidden first sheet with last month's table, the real one visible after it", "accepted",
          book([("Old", sheet_xml(return_rows(stale)), "hidden"), ("Return", sheet_xml(return_rows(real)), "")]),
          rows_read=5, rows_forwarded=5, validate=[0], persons=stale + real, needs="read", stale=only_in(stale, real))
    stale, real = crowd(next(seed), {"E09000019": 3}), people5()
    c.add("very_hidden_stale_sheet", "a veryHidden first sheet with a stale table", "accepted",
          book([("Old", sheet_xml(return_rows(stale)), "veryHidden"), ("Return", sheet_xml(return_rows(real)), "")]),
          rows_read=5, rows_forwarded=5, validate=[0], persons=stale + real, needs="read", stale=only_in(stale, real))

    # 6, 8. csv that breaks the csv module.
    p = crowd(next(seed), {"E09000019": 14, "E09000007": 13, "E09000012": 13})
    lines = csv_text(p).splitlines(keepends=True)
    lines[3] = lines[3].replace(",", ',"', 1)  # a stray opening quote in row 3's second field swallows what follows
    c.add("csv_stray_quote", "a 40-row csv with a stray quote (38 rows were swallowed, 'Rows read: 2')", ["accepted", "rejected"],
          "".join(lines).encode(), "csv", phrases=["quote", "row"], rows_read=40, validate=[0, 1], persons=p, needs="read")
    c.add("csv_200kb_field", "a csv with one 200 KB field (over the csv module's 128 KB), made at test time",
          ["accepted", "rejected"], None, "csv", send="runtime", phrases=["field", "limit", "too long", "characters"],
          validate=[0, 1], persons=crowd(777), needs="read")
    p = people5()
    c.add("csv_nul_bytes", "a csv with NUL bytes inside fields", ["accepted", "rejected"],
          csv_text(p).replace("High Street", "High\0Street").encode(), "csv", phrases=["read", "csv", "NUL", "character"],
          validate=[0, 1], persons=p)
    p = people5()
    c.add("csv_control_characters", "a csv whose values hold ESC, bell and form feed", "accepted",
          csv_text(p).replace("Church Road", "Church\x1b[31mRoad\x07\x0c").encode(), "csv", rows_read=5, validate=[0, 1], persons=p)
    p = people5()
    c.add("csv_bidi_override", "names holding right-to-left overrides and zero-width characters", "accepted",
          csv_text(p).replace(p[0].family_name, "\u202e" + p[0].family_name + "\u200b").encode(), "csv", rows_read=5,
          validate=[0, 1], persons=p)
    p = people5()
    c.add("csv_utf16", "a csv saved as 'Unicode text' (UTF-16 with BOM, tab-separated)", ["accepted", "rejected"],
          csv_text(p, "\t").encode("utf-16"), "csv", phrases=["utf-8", "save", "csv"], validate=[0, 1], persons=p)
    rng = random.Random(5)
    c.add("csv_really_binary", "a .csv that is random bytes", "rejected", rng.randbytes(20_000), "csv",
          phrases=["not a spreadsheet", "could not find", "read", "csv"], validate=[1, 2])
    c.add("csv_only_quotes", "a csv of 50,000 double quotes", "rejected", b'"' * 50_000, "csv",
          phrases=["could not find", "quote", "read"], validate=[1, 2], needs="read")
    p = people5()
    rows = list(csv.reader(io.StringIO(csv_text(p))))
    rows[0].append('=HYPERLINK("http://evil.example/x","Account locked")')
    for row in rows[1:]:
        row.append("=cmd|' /C calc'!A0")
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerows(rows)
    c.add("csv_formula_heading", "a csv whose extra heading is =HYPERLINK(...) and a value =cmd|' /C calc'!A0", "accepted",
          out.getvalue().encode(), "csv",
          rows_read=5, validate=[0, 1], persons=p, needs="pack", no_formula=True)

    # 4. Formula-like text in headings and sheet names.
    p = people5()
    headings = list(TABLE_HEADINGS) + ['=HYPERLINK("http://evil.example/x","Account locked")']
    c.add("formula_heading", "=HYPERLINK in a column heading", "accepted",
          book([("Return", sheet_xml(header_block() + [headings] + [r + ["x"] for r in table_cells(p)]), "")]),
          rows_read=5, rows_forwarded=5, validate=[0, 1], persons=p, needs="pack", no_formula=True)
    p = people5()
    headings = list(TABLE_HEADINGS)
    headings[headings.index("Address")] = "=1+2 Address"
    c.add("formula_in_finding_column", "a heading with a formula prefix on a column that gets findings", ["accepted", "rejected"],
          book([("Return", sheet_xml(header_block() + [headings] + table_cells(p)), "")]), phrases=["address"],
          validate=[0, 1], persons=p, needs="pack", no_formula=True)
    p = people5()
    c.add("formula_sheet_name", "a sheet named @SUM(1+1)*cmd", "accepted",
          book([("@SUM(1+1)*cmd", sheet_xml(return_rows(p)), "")]), rows_read=5, validate=[0, 1], persons=p,
          needs="pack", no_formula=True)

    # XML tricks: entities, external entities, billion laughs, deep nesting.
    laughs = ('<!DOCTYPE lolz [<!ENTITY lol "lollollollollollollollollollol">'
              + "".join(f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">' for i in range(1, 10))
              + "]>\n")
    xxe = '<!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n'
    p = people5()
    c.add("billion_laughs_sheet", "billion laughs in the sheet XML", ["rejected", "quarantined"],
          book([("Return", sheet_xml(return_rows(p) + [["&lol9;"]], doctype=laughs).replace("&amp;lol9;", "&lol9;"), "")]),
          phrases=["read", "damaged", "not a spreadsheet", "could not"], validate=[1, 2], persons=p)
    p = people5()
    c.add("xxe_sheet", "an external entity (file:///etc/passwd) in the sheet XML", ["accepted", "rejected", "quarantined"],
          book([("Return", sheet_xml(return_rows(p) + [["&xxe;"]], doctype=xxe).replace("&amp;xxe;", "&xxe;"), "")]),
          phrases=["read", "damaged", "not a spreadsheet", "could not"], validate=[0, 1, 2], persons=p, no_passwd=True)
    p = people5()
    c.add("billion_laughs_content_types", "billion laughs in [Content_Types].xml", ["accepted", "rejected", "quarantined"],
          book([("Return", sheet_xml(return_rows(p)), "")], content_types=content_types(laughs, "lol9")),
          phrases=["read", "damaged", "not a spreadsheet", "could not"], validate=[0, 1, 2], persons=p)
    p = people5()
    c.add("xxe_content_types", "an external entity in [Content_Types].xml", ["accepted", "rejected", "quarantined"],
          book([("Return", sheet_xml(return_rows(p)), "")], content_types=content_types(xxe, "xxe")),
          phrases=["read", "damaged", "not a spreadsheet", "could not"], validate=[0, 1, 2], persons=p, no_passwd=True)
    p = people5()
    shared = ('<?xml version="1.0"?>\n' + laughs + f'<sst {_NS} count="1" uniqueCount="1"><si><t>&lol9;</t></si></sst>')
    sheet = sheet_xml(return_rows(p)).replace("</sheetData>", '<row r="99"><c r="A99" t="s"><v>0</v></c></row></sheetData>')
    c.add("billion_laughs_shared_strings", "billion laughs in sharedStrings.xml", ["rejected", "quarantined"],
          book([("Return", sheet, "")], extra={"xl/sharedStrings.xml": shared},
               rels_extra='<Relationship Id="rId99" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/sharedStrings" Target="sharedStrings.xml"/>'),
          phrases=["read", "damaged", "not a spreadsheet", "could not"], validate=[1, 2], persons=p)
    p = people5()
    shared = ('<?xml version="1.0"?>\n' + xxe + f'<sst {_NS} count="1" uniqueCount="1"><si><t>&xxe;</t></si></sst>')
    c.add("xxe_shared_strings", "an external entity in sharedStrings.xml", ["accepted", "rejected", "quarantined"],
          book([("Return", sheet, "")], extra={"xl/sharedStrings.xml": shared},
               rels_extra='<Relationship Id="rId99" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/sharedStrings" Target="sharedStrings.xml"/>'),
          phrases=["read", "damaged", "not a spreadsheet", "could not"], validate=[0, 1, 2], persons=p, no_passwd=True)
    p = people5()
    c.add("xxe_workbook_xml", "an external entity in workbook.xml (read by the gateway's own formula scan)",
          ["accepted", "rejected", "quarantined"],
          book([("Return", sheet_xml(return_rows(p)), "")], workbook_extra="<definedNames><definedName name=\"x\">&xxe;</definedName></definedNames>",
               workbook_doctype=xxe), phrases=["read", "damaged", "could not"], validate=[0, 1, 2], persons=p, no_passwd=True)
    p = people5()
    deep = "<x>" * 50_000 + "</x>" * 50_000
    c.add("deep_xml_nesting", "50,000 nested elements inside the sheet XML", ["accepted", "rejected", "quarantined"],
          book([("Return", sheet_xml(return_rows(p)).replace("</sheetData>", "</sheetData>" + deep), "")]),
          phrases=["read", "damaged", "could not"], validate=[0, 1, 2], persons=p)

    # Zip bombs and lying archives.
    p = people5()
    c.add("zip_bomb_ratio", "a workbook whose sheet inflates 1000:1 to 90 MB of spaces", ["rejected", "quarantined"],
          book([("Return", sheet_xml(return_rows(p)).replace("<sheetData>", "<sheetData>" + " " * 90_000_000, 1), "")]),
          phrases=limit_words, validate=[1, 2], persons=p, provider_told=None)
    p = people5()
    c.add("zip_lying_size", "a sheet entry that declares 100 bytes and inflates to 60 MB", ["rejected", "quarantined"],
          lying_size_zip(p), phrases=limit_words + ["damaged"], validate=[1, 2], persons=p)
    c.add("zip_overlapping_entries", "200 central-directory entries sharing one 10 MB local file", ["rejected", "quarantined"],
          overlapping_zip(), phrases=limit_words + ["damaged", "not a spreadsheet", "could not"], validate=[1, 2])
    c.add("zip_nested", "zips within zips, four levels of three (81 MB if opened all the way)", ["rejected", "quarantined"],
          nested_zip(), "zip", phrases=["zip", "archive"], validate=[1, 2])
    c.add("zip_many_entries", "a zip of 1,001 empty entries (one over the limit)", ["rejected", "quarantined"],
          zipped({f"{i}": b"" for i in range(1001)}, method=zipfile.ZIP_STORED), "zip", phrases=["zip", "files", "entries"], validate=[1, 2])
    p = people5()
    c.add("zip_traversal_member", "a zip whose member is ../../../../tmp/ldor-evil.csv", ["accepted", "rejected"],
          zipped({"../../../../tmp/ldor-evil.csv": csv_text(p)}), "zip", phrases=["zip"], validate=[0, 1, 2], persons=p,
          no_file="/tmp/ldor-evil.csv")
    p = people5()
    c.add("truncated_xlsx", "a workbook cut off half way", "rejected", good_xlsx(p)[:1500],
          phrases=["damaged", "incomplete", "not a spreadsheet", "could not", "read"], validate=[1, 2], persons=p)
    c.add("pk_then_garbage", "PK\\x03\\x04 followed by noise", "rejected", b"PK\x03\x04" + random.Random(6).randbytes(4000),
          phrases=["damaged", "incomplete", "not a spreadsheet", "could not", "read"], validate=[1, 2])
    c.add("ole_then_garbage", "an OLE compound-file signature followed by noise, named .xls", "rejected",
          b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + random.Random(7).randbytes(4000), "xls",
          phrases=["damaged", "not a spreadsheet", "could not", "read", "xls"], validate=[1, 2])
    c.add("empty_xlsx", "an empty file named .xlsx", "rejected", b"", phrases=["empty"], validate=[1, 2])
    p = people5()
    c.add("xlsx_really_csv", "a csv named .xlsx", ["accepted", "rejected"], csv_text(p).encode(), "xlsx",
          phrases=["xlsx", "csv", "save"], validate=[0, 1], persons=p)
    p = people5()
    many = [(f"S{i}", f"<worksheet {_NS}><sheetData/></worksheet>", "") for i in range(299)] + [("Return", sheet_xml(return_rows(p)), "")]
    c.add("three_hundred_sheets", "a workbook of 300 sheets, the return on the last", ["accepted", "rejected"], book(many),
          phrases=["sheets", "limit", "too many"], validate=[0, 1], persons=p)
    p = people5()
    c.add("external_link", "a workbook with an external link to file:///etc/passwd and a web address", "accepted",
          book([("Return", sheet_xml(return_rows(p)), "")], extra={
              "xl/externalLinks/externalLink1.xml": f'<externalLink {_NS}><externalBook {_R} r:id="rId1"/></externalLink>',
              "xl/externalLinks/_rels/externalLink1.xml.rels": (
                  '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
                  '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/externalLinkPath" '
                  'Target="file:///etc/passwd" TargetMode="External"/></Relationships>')},
               workbook_extra='<externalReferences><externalReference r:id="rId50"/></externalReferences>',
               rels_extra='<Relationship Id="rId50" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/externalLink" Target="externalLinks/externalLink1.xml"/>'),
          rows_read=5, rows_forwarded=5, validate=[0], persons=p, no_passwd=True)
    p = people5()
    c.add("xlsm_macro", "a macro-enabled workbook holding a vbaProject.bin", "accepted",
          book([("Return", sheet_xml(return_rows(p)), "")], extra={"xl/vbaProject.bin": b"\xd0\xcf\x11\xe0" + b"Auto_Open" * 100},
               main_type="application/vnd.ms-excel.sheet.macroEnabled.main+xml"), "xlsm",
          rows_read=5, rows_forwarded=5, validate=[0], persons=p)
    p = people5()
    c.add("inline_string_flood", "one 30 MB inline string", ["accepted", "rejected", "quarantined"],
          book([("Return", sheet_xml(return_rows(p) + [["A" * 30_000_000]]), "")]), phrases=limit_words,
          validate=[0, 1, 2], persons=p)
    p = people5()
    shared = f'<sst {_NS} count="999999999" uniqueCount="999999999"><si><t>x</t></si></sst>'
    c.add("shared_strings_lying_count", "sharedStrings.xml that claims a billion strings (calamine reserves room for them all and aborts)",
          ["accepted", "rejected"],
          book([("Return", sheet_xml(return_rows(p)), "")], extra={"xl/sharedStrings.xml": shared},
               rels_extra='<Relationship Id="rId99" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/sharedStrings" Target="sharedStrings.xml"/>'),
          phrases=["read", "damaged"] + limit_words, validate=[0, 1], persons=p, needs="read", batch="alone")

    # Encryption: wrong passwords, no MDC, broken armour, compression bomb.
    p = people5()
    c.add("wrong_password_xlsx", "a protected workbook with another password", "rejected", good_xlsx(p), send="protected_wrong",
          name="return.xlsx", phrases=["password"], persons=p)
    p = people5()
    c.add("wrong_password_zip", "an AES zip with another password", "rejected", good_xlsx(p), send="aes_zip_wrong",
          name="return.zip", phrases=["password"], persons=p)
    p = people5()
    c.add("no_mdc", "encrypted without integrity protection (--rfc2440)", "rejected", good_xlsx(p), send="gpg_no_mdc",
          phrases=["integrity"], persons=p)
    p = people5()
    c.add("truncated_armour", "an armoured .asc cut off half way", "rejected", good_xlsx(p), send="armour_truncated",
          name="return.xlsx.asc", phrases=["decrypt", "damaged", "incomplete", "could not", "key"], persons=p)
    p = people5()
    c.add("armour_bad_crc", "an armoured .asc with one base64 character changed", "rejected", good_xlsx(p),
          send="armour_corrupt", name="return.xlsx.asc", phrases=["decrypt", "damaged", "could not", "key", "integrity"], persons=p)
    c.add("gpg_bomb", "1 GB of zeros, compressed by gpg into a couple of kB (decompressed into memory before the 50 MB check)",
          ["rejected", "quarantined"], None, send="gpg_bomb", name="return.xlsx.gpg",
          phrases=["50 MB", "limit", "split", "too large"], needs="isolate", provider_told=True, batch="alone", max_mb=600)
    c.add("gpg_garbage", "random bytes named .gpg", "rejected", random.Random(8).randbytes(3000), "bin", send="clear",
          name="return.xlsx.gpg", phrases=["decrypt", "could not", "key", "damaged"])

    # Messages: names, MIME, senders, parts.
    p = people5()
    c.add("traversal_name", "attachment named ../../../../tmp/ldor-evil.xlsx.gpg", "accepted", good_xlsx(p),
          name="../../../../tmp/ldor-evil.xlsx.gpg", rows_forwarded=5, persons=p, no_file="/tmp/ldor-evil.xlsx.gpg")
    p = people5()
    c.add("control_char_name", "attachment name with CR, LF, ESC and NUL", "accepted", good_xlsx(p),
          name="ret\x1b[2Jurn\x00\r\nX-Evil: 1.xlsx.gpg", rows_forwarded=5, persons=p)
    p = people5()
    c.add("rtl_override_name", "attachment name with a right-to-left override (Smith\u202exslx.gpg)", "accepted", good_xlsx(p),
          name=f"{p[0].family_name}\u202exslx.exe.xlsx.gpg", rows_forwarded=5, persons=p, name_personal=True)
    p = people5()
    c.add("name_is_personal", "attachment and subject named after a young person", "accepted", good_xlsx(p),
          name=f"{p[0].family_name} {p[0].first_name} {p[0].uln}.xlsx.gpg", subject=f"Leaver {p[0].family_name} {p[0].postcode}",
          rows_forwarded=5, persons=p)
    p = people5()
    c.add("same_attachment_twice", "one encrypted file attached twice to one message", "accepted", good_xlsx(p),
          send="gpg_twice", rows_forwarded=5, persons=p, needs="isolate", receipts=1)
    p = people5()
    c.add("same_file_two_encryptions", "one file encrypted twice, both attached to one message", "accepted", good_xlsx(p),
          send="gpg_twice_fresh", rows_forwarded=5, persons=p, needs="isolate", receipts=1)
    p = people5()
    c.add("broken_mime_no_end", "multipart whose closing boundary never comes and whose part headers are cut", ["accepted", "rejected"],
          good_xlsx(p), send="mime_unterminated", phrases=["attach", "found no return", "decrypt"], persons=p)
    p = people5()
    c.add("broken_mime_bad_base64", "a base64 part with invalid characters and bad padding", ["accepted", "rejected"],
          good_xlsx(p), send="mime_bad_base64", phrases=["decrypt", "damaged", "could not", "found no return", "key"], persons=p)
    p = people5()
    c.add("mime_deep_nesting", "an attachment inside 300 nested multiparts", ["accepted", "rejected", "quarantined"],
          good_xlsx(p), send="mime_deep", phrases=["found no return", "attach", "nested", "limit"], persons=p)
    p = people5()
    c.add("mime_no_boundary", "multipart/mixed with no boundary parameter", ["accepted", "rejected"], good_xlsx(p),
          send="mime_no_boundary", phrases=["found no return", "attach"], persons=p)
    p = people5()
    c.add("huge_header", "a 200 kB Subject header", ["accepted", "rejected"], good_xlsx(p), send="gpg",
          subject="LDOR " + "x" * 200_000, rows_forwarded=5, persons=p)
    p = people5()
    c.add("winmail_traversal", "winmail.dat whose file is named ..\\..\\evil.xlsx, protected with the password",
          ["accepted", "rejected"], good_xlsx(p), send="winmail_traversal", name="winmail.dat",
          phrases=["encrypt", "password", "winmail", "found no return"], persons=p)
    p = people5()
    c.add("winmail_truncated", "a winmail.dat cut off inside an attribute", ["rejected", "quarantined"], good_xlsx(p),
          send="winmail_truncated", name="winmail.dat", phrases=["winmail", "damaged", "found no return", "encrypt", "attach"], persons=p)
    c.add("winmail_lying_length", "a winmail.dat attribute claiming 4 GB", ["rejected", "quarantined"], None,
          send="winmail_lying", name="winmail.dat", phrases=["winmail", "damaged", "found no return", "encrypt", "attach"])
    p = people5()
    c.add("stranger_sends_return", "a stranger sends a well-made encrypted return", "quarantined", good_xlsx(p), sender="stranger",
          provider_told=False, persons=p)
    p = people5()
    c.add("display_name_spoof", "From: \"mis@example-college.example\" <evil@elsewhere.example>", "quarantined",
          good_xlsx(p), send="spoof", provider_told=False, persons=p)
    dsn_people = crowd(next(seed), {"E09000019": 2})
    c.add("stranger_delivery_status", "a stranger's message/delivery-status part holding 100 KB of text with names and a DOB",
          "quarantined", None, send="stranger_dsn", sender="stranger", provider_told=False, persons=dsn_people, needs="isolate")
    c.add("provider_delivery_status", "a delivery report from the provider's domain about no gateway message",
          ["quarantined", "rejected"], None, send="provider_dsn", persons=dsn_people, needs="isolate",
          phrases=["found no return", "attach"])
    c.add("ten_thousand_parts", "one message with 10,000 small .gpg parts", ["rejected", "accepted"], None,
          send="many_parts", phrases=["parts", "attachments", "files", "limit"], needs="isolate", receipts=1,
          batch="alone", max_seconds=60)
    c.add("over_fifty_mb", "an encrypted attachment of 51 MB", "rejected", None, send="over_limit",
          phrases=["50 MB", "split"], needs="isolate", batch="alone", provider_told=True)
    return c


# -- messages, built at test time --------------------------------------------------------------------------------
def mail(sender: str, subject: str = "LDOR return", text: str = "Please find our return attached.\n") -> EmailMessage:
    message = EmailMessage()
    message["From"] = f"MIS Team <{sender}>"
    message["To"] = GATEWAY
    message["Subject"] = subject
    message["Message-ID"] = f"<hostile-{zlib.crc32(subject.encode()):08x}@example-college.example>"
    message.set_content(text)
    return message


def _attach(message: EmailMessage, name: str, data: bytes) -> None:
    message.add_attachment(data, maintype="application", subtype="octet-stream", filename=name)


def message(case: str, spec: dict, data: bytes | None, crypto) -> bytes:
    """The message of one case. `crypto` encrypts: crypto.encrypt(data, extra_args) -> bytes, and has
    crypto.protect(xlsx, password) / crypto.aes_zip(name, data, password)."""
    sender = {"college": COLLEGE, "stranger": STRANGER}[spec["sender"]]
    send, name = spec["send"], spec["name"]
    m = mail(sender, spec.get("subject", f"LDOR return {case}"))
    if any(ord(ch) < 32 for ch in name):
        # The email package refuses control characters in a header; a mailer can still send them
        # percent-encoded (RFC 2231), which decodes to the raw characters on the reader's side.
        from urllib.parse import quote

        _attach(m, "PLACEHOLDER.xlsx.gpg", crypto.encrypt(data))
        return m.as_bytes().replace(b'filename="PLACEHOLDER.xlsx.gpg"', f"filename*=utf-8''{quote(name, safe='')}".encode())
    if send == "runtime":
        _attach(m, name + ".gpg", crypto.encrypt(runtime_file(case)))
    elif send == "gpg":
        _attach(m, name, crypto.encrypt(data))
    elif send == "clear":
        _attach(m, name, data)
    elif send == "gpg_no_mdc":
        _attach(m, name, crypto.encrypt(data, ["--rfc2440"]))
    elif send in ("armour_truncated", "armour_corrupt"):
        armour = crypto.encrypt(data, ["--armor"])
        if send == "armour_truncated":
            armour = armour[: len(armour) // 2]
        else:
            lines = armour.split(b"\n")
            middle = len(lines) // 2
            lines[middle] = (b"A" if lines[middle][:1] != b"A" else b"B") + lines[middle][1:]
            armour = b"\n".join(lines)
        m.add_attachment(armour, maintype="application", subtype="pgp-encrypted", filename=name)
    elif send == "protected_wrong":
        _attach(m, name, crypto.protect(data, "Not-The-Password-2"))
    elif send == "aes_zip_wrong":
        _attach(m, name, crypto.aes_zip("return.xlsx", data, "Not-The-Password-2"))
    elif send == "gpg_bomb":
        _attach(m, name, (FILES / "gpg_bomb.gpg").read_bytes())
    elif send == "gpg_twice":
        sealed = crypto.encrypt(data)
        _attach(m, "return.xlsx.gpg", sealed)
        _attach(m, "return copy.xlsx.gpg", sealed)
    elif send == "gpg_twice_fresh":
        _attach(m, "return.xlsx.gpg", crypto.encrypt(data))
        _attach(m, "return (2).xlsx.gpg", crypto.encrypt(data))
    elif send == "spoof":
        m.replace_header("From", f'"{COLLEGE}" <evil@elsewhere.example>')
        _attach(m, name, crypto.encrypt(data))
    elif send == "many_parts":
        # Distinct tiny returns would need 10,000 encryptions; one sealed csv repeated with a counter in
        # each part's name still makes 10,000 parts the gateway must not answer one by one.
        sealed = crypto.encrypt(b"ULN,Surname\r\n")
        for i in range(10_000):
            _attach(m, f"part{i}.csv.gpg", sealed)
    elif send == "over_limit":
        _attach(m, name, crypto.encrypt(random.Random(51).randbytes(51 * 1024 * 1024), ["--compress-algo", "none"]))
    elif send in ("stranger_dsn", "provider_dsn"):
        return delivery_status(spec, sender if send == "stranger_dsn" else "mailer-daemon@example-college.example")
    elif send.startswith("winmail"):
        _attach_winmail(m, send, data, crypto)
    elif send.startswith("mime_"):
        return broken_mime(send, sender, crypto.encrypt(data))
    else:
        raise ValueError(f"unknown way of sending: {send}")
    return m.as_bytes()


def _attach_winmail(m: EmailMessage, send: str, data: bytes | None, crypto) -> None:
    import struct

    def attribute(level: int, name: int, kind: int, value: bytes) -> bytes:
        return struct.pack("<BHHI", level, name, kind, len(value)) + value + struct.pack("<H", sum(value) & 0xFFFF)

    out = struct.pack("<IH", 0x223E9F78, 0x0001)
    out += attribute(1, 0x9006, 0x0008, struct.pack("<I", 0x00010000))
    if send == "winmail_lying":
        out += struct.pack("<BHHI", 2, 0x800F, 0x0006, 0xFFFFFFF0) + b"x" * 100
    else:
        protected = crypto.protect(data, PASSWORD)
        out += attribute(2, 0x9002, 0x0006, struct.pack("<HIHHI", 1, 0xFFFFFFFF, 0, 0, 0))
        out += attribute(2, 0x8010, 0x0001, b"..\\..\\..\\evil.xlsx\0")
        out += attribute(2, 0x800F, 0x0006, protected)
        if send == "winmail_truncated":
            out = out[: len(out) - len(protected) // 2]
    m.add_attachment(out, maintype="application", subtype="ms-tnef", filename="winmail.dat")


def broken_mime(send: str, sender: str, sealed: bytes) -> bytes:
    import base64

    encoded = base64.encodebytes(sealed)
    head = (f"From: MIS Team <{sender}>\r\nTo: {GATEWAY}\r\nSubject: LDOR return {send}\r\n"
            f"Message-ID: <{send}@example-college.example>\r\nMIME-Version: 1.0\r\n").encode()
    part = (b'Content-Type: application/octet-stream; name="return.xlsx.gpg"\r\n'
            b'Content-Disposition: attachment; filename="return.xlsx.gpg"\r\nContent-Transfer-Encoding: base64\r\n\r\n')
    if send == "mime_unterminated":
        return (head + b'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\nHello\r\n'
                b"--b1\r\n" + part + encoded + b"--b1\r\nContent-Type: appl")
    if send == "mime_bad_base64":
        bad = encoded.replace(b"A", b"!", 3)[:-3] + b"=\r\n="
        return head + b'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n--b1\r\n' + part + bad + b"\r\n--b1--\r\n"
    if send == "mime_no_boundary":
        return head + b"Content-Type: multipart/mixed\r\n\r\n--b1\r\n" + part + encoded + b"\r\n--b1--\r\n"
    if send == "mime_deep":
        body = part + encoded
        for level in range(300):
            body = (f'Content-Type: multipart/mixed; boundary="n{level}"\r\n\r\n--n{level}\r\n').encode() + body + (
                f"\r\n--n{level}--\r\n").encode()
        return head + body
    raise ValueError(send)


def delivery_status(spec: dict, sender: str) -> bytes:
    """A message/delivery-status report quoting 100 KB of someone's text: names, a date of birth."""
    told = " ".join(spec["personal"])
    text = (f"Dear colleague, about {told}. " * 2000)[:100_000]
    boundary = "dsn-boundary"
    return (
        f"From: Mail Delivery System <{sender}>\r\nTo: {GATEWAY}\r\nSubject: Undelivered Mail Returned to Sender\r\n"
        f"Message-ID: <dsn-{spec['send']}@elsewhere.example>\r\nMIME-Version: 1.0\r\n"
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"\r\n\r\n'
        f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n"
        f"--{boundary}\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; elsewhere.example\r\n\r\n"
        f"Final-Recipient: rfc822; {told[:60].replace(' ', '.')}@elsewhere.example\r\nAction: failed {told}\r\n"
        f"Status: 5.1.1 {text[:50_000]}\r\n"
        f"Diagnostic-Code: smtp; 550 {text[:5000]}\r\n\r\n"
        f"--{boundary}\r\nContent-Type: text/rfc822-headers\r\n\r\nFrom: {told[:200]}\r\nSubject: {told[:300]}\r\n\r\n"
        f"--{boundary}--\r\n"
    ).encode()


def gpg_bomb(out: Path) -> None:
    """1 GB of zeros, bzip2-compressed by gpg at level 9 and encrypted to the golden gateway key."""
    with tempfile.TemporaryDirectory() as home:
        def gpg(*args: str, **kw) -> subprocess.CompletedProcess:
            return subprocess.run(["gpg", "--batch", "--no-tty", "--homedir", home, "--trust-model", "always", *args],
                                  capture_output=True, check=True, timeout=120, **kw)

        gpg("--import", str(GOLDEN_KEYS / "gateway.public.asc"))
        process = subprocess.Popen(
            ["gpg", "--batch", "--no-tty", "--homedir", home, "--trust-model", "always", "--compress-algo", "bzip2",
             "--bzip2-compress-level", "9", "--encrypt", "--recipient", GATEWAY, "--output", str(out)],
            stdin=subprocess.PIPE, stderr=subprocess.DEVNULL)
        zeros = bytes(1 << 20)
        for _ in range(1024):
            process.stdin.write(zeros)
        process.stdin.close()
        assert process.wait(timeout=120) == 0
        subprocess.run(["gpgconf", "--homedir", home, "--kill", "all"], check=False)


def main() -> None:
    corpus = build()
    FILES.mkdir(exist_ok=True)
    for file in FILES.iterdir():
        if file.name != "gpg_bomb.gpg":
            file.unlink()
    for name, data in corpus.files.items():
        (FILES / name).write_bytes(data)
    if not (FILES / "gpg_bomb.gpg").exists():
        gpg_bomb(FILES / "gpg_bomb.gpg")
    assert (FILES / "gpg_bomb.gpg").stat().st_size < 100_000
    expected = {"about": "What issue 9 says must happen to each hostile case; see make.py.", "today": TODAY.isoformat(),
                "cases": corpus.cases}
    (HERE / "expected.json").write_text(json.dumps(expected, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"{len(corpus.cases)} cases, {len(corpus.files)} files")


def runtime_file(case: str) -> bytes:
    """Files too big to keep in the repository, made the same way every time."""
    if case == "csv_200kb_field":
        return build_csv_200kb()
    raise KeyError(case)


def build_csv_200kb() -> bytes:
    p = crowd(777)
    lines = csv_text(p).splitlines(keepends=True)
    lines[2] = lines[2].rstrip("\r\n") + ',"' + "A" * 200_000 + '"\r\n'
    return "".join(lines).encode()


if __name__ == "__main__":
    main()
