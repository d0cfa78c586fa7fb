"""Containers: protected workbooks, encrypted zips, hostile zips and winmail.dat, on real files.

The golden files in tests/data/containers/ (made by make.py there) are opened and compared with
expected.json; zip bombs are built here at test time and never committed.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import shutil
import struct
import subprocess
import time
import traceback
import zipfile
from pathlib import Path

import msoffcrypto
import openpyxl
import pytest
import pyzipper

from gateway.errors import HostileFile, UnpackError
from gateway.intake.containers import (
    MAX_FILE_BYTES,
    ZIPCRYPTO_WARNING,
    Opened,
    open_file,
)
from gateway.intake.tnef import tnef_attachments

DATA = Path(__file__).resolve().parent / "data" / "containers"
EXPECTED = json.loads((DATA / "expected.json").read_text())
PASSWORD = EXPECTED["password"]
GOLDEN = sorted(EXPECTED["files"])
MB = 1024 * 1024


def golden(name: str) -> bytes:
    return (DATA / name).read_bytes()


def refusal(name: str, data: bytes, password: str | None) -> UnpackError:
    with pytest.raises(UnpackError) as caught:
        open_file(name, data, password)
    return caught.value


def assert_safe(error: UnpackError, *secrets: str) -> None:
    """Neither the message, the advice nor the traceback (chained causes included) quotes a secret."""
    text = str(error) + error.advice + "".join(traceback.format_exception(error))
    for secret in (PASSWORD, *secrets):
        assert secret not in text


def xlsx_bytes() -> bytes:
    book = openpyxl.Workbook()
    book.active.append(["Family Name", "First Name", "DOB", "Post Code"])
    book.active.append(["Testperson", "Alex", "2008-01-02", "N1 1AA"])
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


def aes_zip(members: dict[str, bytes], password: str = PASSWORD) -> bytes:
    out = io.BytesIO()
    with pyzipper.AESZipFile(out, "w", compression=pyzipper.ZIP_DEFLATED, encryption=pyzipper.WZ_AES) as archive:
        archive.setpassword(password.encode())
        for name, content in members.items():
            archive.writestr(name, content)
    return out.getvalue()


def zeros_zip(megabytes: int, encrypted: bool = False) -> bytes:
    """One member of `megabytes` MB of zeros, written in 1 MB chunks so the test never holds it whole."""
    out = io.BytesIO()
    kind = pyzipper.AESZipFile if encrypted else zipfile.ZipFile
    extra = {"encryption": pyzipper.WZ_AES} if encrypted else {}
    with kind(out, "w", compression=zipfile.ZIP_DEFLATED, **extra) as archive:
        if encrypted:
            archive.setpassword(PASSWORD.encode())
        with archive.open("return.csv", "w", force_zip64=False) as member:
            chunk = bytes(MB)
            for _ in range(megabytes):
                member.write(chunk)
    return out.getvalue()


def declare_size(data: bytes, size: int) -> bytes:
    """Rewrite the first member's uncompressed size in its local and central headers."""
    out = bytearray(data)
    struct.pack_into("<I", out, out.find(b"PK\x03\x04") + 22, size)
    struct.pack_into("<I", out, out.find(b"PK\x01\x02") + 24, size)
    return bytes(out)


# Golden files --------------------------------------------------------------------------------------

def test_every_golden_file_has_an_expected_outcome():
    on_disk = {path.name for path in DATA.iterdir()} - {"make.py", "expected.json", "__pycache__"}
    assert on_disk == set(EXPECTED["files"]) | set(EXPECTED["tnef"])


@pytest.mark.parametrize("name", GOLDEN)
def test_golden(name):
    expected = EXPECTED["files"][name]
    password = PASSWORD if expected["password"] else None
    if "error" in expected:
        error = refusal(name, golden(name), password)
        assert type(error).__name__ == expected["error"]
        assert expected["advice"].lower() in error.advice.lower()
        assert_safe(error)
        return
    opened = open_file(name, golden(name), password)
    assert (opened.kind, opened.encrypted, len(opened.warnings)) == (
        expected["kind"], expected["encrypted"], expected["warnings"])
    assert hashlib.sha256(opened.data).hexdigest() == expected["sha256"]


def test_the_golden_plaintexts_are_what_the_encrypted_files_hold():
    xlsx = hashlib.sha256(golden("return.xlsx")).hexdigest()
    assert EXPECTED["files"]["agile.xlsx"]["sha256"] == xlsx
    assert EXPECTED["files"]["standard.xlsx"]["sha256"] == xlsx
    assert EXPECTED["files"]["7zip_aes256.zip"]["sha256"] == xlsx
    assert EXPECTED["files"]["zipcrypto.zip"]["sha256"] == hashlib.sha256(golden("return.csv")).hexdigest()


# Password-protected workbooks ----------------------------------------------------------------------

@pytest.mark.parametrize("name", ["agile.xlsx", "standard.xlsx"])
def test_workbook_encryption_type_is_the_one_named(name):
    office = msoffcrypto.OfficeFile(io.BytesIO(golden(name)))
    assert office.type == name.split(".")[0]


def test_workbook_encrypted_at_test_time_opens_with_the_password():
    plain = xlsx_bytes()
    encrypted = io.BytesIO()
    msoffcrypto.format.ooxml.OOXMLFile(io.BytesIO(plain)).encrypt(PASSWORD, encrypted)
    opened = open_file("return.xlsx", encrypted.getvalue(), PASSWORD)
    assert opened == Opened(plain, "xlsx", (), encrypted=True)


@pytest.mark.parametrize("name", ["agile.xlsx", "standard.xlsx"])
def test_workbook_wrong_password(name):
    error = refusal(name, golden(name), "Not-The-Password")
    assert "did not open your workbook" in error.advice
    assert "agreed with the gateway administrator" in error.advice
    assert_safe(error, "Not-The-Password")


@pytest.mark.parametrize("password", [None, ""])
@pytest.mark.parametrize("name", ["agile.xlsx", "standard.xlsx"])
def test_workbook_without_an_agreed_password(name, password):
    error = refusal(name, golden(name), password)
    assert "no password has been agreed" in error.advice
    assert "PGP" in error.advice


def test_damaged_workbook():
    data = golden("agile.xlsx")
    for cut in (700, len(data) * 2 // 3):
        error = refusal("agile.xlsx", data[:cut], PASSWORD)
        assert "damaged or incomplete" in error.advice


def test_encrypted_xls_is_refused_before_any_password_is_tried():
    error = refusal("old.xls", golden("xls97_encrypted.xls"), None)
    assert "Excel 97-2003" in error.advice and ".xlsx" in error.advice


# Zips ----------------------------------------------------------------------------------------------

def test_aes_zip_wrong_password():
    error = refusal("return.zip", golden("aes256_xlsx.zip"), "Not-The-Password")
    assert "did not open your zip file" in error.advice
    assert_safe(error, "Not-The-Password", "return.xlsx")


@pytest.mark.parametrize("name", ["aes256_xlsx.zip", "zipcrypto.zip"])
def test_encrypted_zip_without_an_agreed_password(name):
    error = refusal(name, golden(name), None)
    assert "zip file is password protected" in error.advice
    assert "no password has been agreed" in error.advice


def test_zipcrypto_warning_names_the_remedy():
    opened = open_file("return.zip", golden("zipcrypto.zip"), PASSWORD)
    assert opened.warnings == (ZIPCRYPTO_WARNING,)
    assert "AES-256" in ZIPCRYPTO_WARNING and "weak" in ZIPCRYPTO_WARNING


def test_zipcrypto_zip_made_with_a_non_ascii_password_in_the_windows_code_page(tmp_path):
    """Older Windows tools encrypt with the password's ANSI bytes, not UTF-8; Info-ZIP takes raw bytes."""
    if shutil.which("zip") is None:
        pytest.skip("Info-ZIP zip is not installed")
    password = "Clé-Été-2024"
    (tmp_path / "return.csv").write_bytes(golden("return.csv"))
    subprocess.run([b"zip", b"-q", b"-P", password.encode("cp1252"), b"out.zip", b"return.csv"], cwd=tmp_path, check=True)
    data = (tmp_path / "out.zip").read_bytes()
    assert zipfile.ZipFile(io.BytesIO(data)).infolist()[0].flag_bits & 1
    opened = open_file("return.zip", data, password)
    assert opened.data == golden("return.csv") and opened.warnings == (ZIPCRYPTO_WARNING,)


def test_unencrypted_zip_and_workbook_are_opened_but_marked_clear():
    assert open_file("return.zip", golden("plain.zip"), PASSWORD).encrypted is False
    assert open_file("return.xlsx", golden("return.xlsx"), None) == Opened(golden("return.xlsx"), "xlsx")


def test_two_returns_named_by_people_never_leak_the_names():
    data = aes_zip({"Smith John.xlsx": xlsx_bytes(), "Smith Jane.csv": golden("return.csv")})
    error = refusal("returns.zip", data, PASSWORD)
    assert "more than one return" in error.advice
    assert_safe(error, "Smith")


def test_wrong_password_never_leaks_the_member_name():
    # pyzipper's own error is "Bad password for file 'Smith John.xlsx'"
    error = refusal("returns.zip", aes_zip({"Smith John.xlsx": xlsx_bytes()}), "Not-The-Password")
    assert_safe(error, "Smith", "Not-The-Password")


def test_a_zip_inside_named_as_a_csv_is_still_a_nested_zip():
    inner = zipfile.ZipFile(io.BytesIO(golden("plain.zip")))
    assert inner.namelist() == ["return.csv"]
    error = refusal("return.zip", aes_zip({"return.csv": golden("plain.zip")}), PASSWORD)
    assert "holds another zip" in error.advice


def test_only_junk_in_a_zip():
    error = refusal("return.zip", aes_zip({"__MACOSX/._return.xlsx": b"x", "Thumbs.db": b"x", "notes.txt": b"x",
                                           "more.txt": b"x"}), PASSWORD)
    assert "holds no spreadsheet" in error.advice


def test_bzip2_compression_is_refused():
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_BZIP2) as archive:
        archive.writestr("return.csv", golden("return.csv"))
    error = refusal("return.zip", out.getvalue(), None)
    assert "compression method" in error.advice


def test_strong_encryption_is_named_even_when_the_zip_cannot_be_parsed():
    error = refusal("return.zip", golden("strong.zip")[:60], PASSWORD)
    assert "PKWARE strong encryption" in error.advice and "AES-256" in error.advice


def test_corrupt_zip_is_damaged_not_hostile():
    error = refusal("return.zip", golden("corrupt.zip"), PASSWORD)
    assert type(error) is UnpackError
    assert "damaged or incomplete" in error.advice


# Hostile files -------------------------------------------------------------------------------------

def test_zip_bomb_declaring_200_mb_is_refused_without_expanding_it():
    bomb = zeros_zip(200)
    assert len(bomb) < MB and zipfile.ZipFile(io.BytesIO(bomb)).infolist()[0].file_size == 200 * MB
    started = time.monotonic()
    error = refusal("return.zip", bomb, PASSWORD)
    assert isinstance(error, HostileFile)
    assert time.monotonic() - started < 1  # decided from the header, not by decompressing


def test_zip_bomb_under_the_size_limit_is_refused_by_its_ratio():
    bomb = zeros_zip(40)
    error = refusal("return.zip", bomb, None)
    assert isinstance(error, HostileFile)
    assert "ratio" in str(error)


@pytest.mark.parametrize("encrypted", [False, True])
def test_zip_whose_header_lies_about_its_size_is_stopped_by_its_real_output(encrypted):
    liar = declare_size(zeros_zip(60, encrypted), 1000)  # 1000 bytes declared, 60 MB inside
    assert pyzipper.AESZipFile(io.BytesIO(liar)).infolist()[0].file_size == 1000  # headers alone would pass it
    error = refusal("return.zip", liar, PASSWORD)
    assert isinstance(error, HostileFile)
    assert "expands past the size limit" in str(error)


def test_zip_whose_header_lies_under_the_limit_is_damaged():
    liar = declare_size(aes_zip({"return.csv": golden("return.csv")}), 10)
    error = refusal("return.zip", liar, PASSWORD)
    assert type(error) is UnpackError and "damaged" in error.advice


def test_zip_with_too_many_entries():
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for number in range(1001):
            archive.writestr(f"{number}.txt", b"")
    assert isinstance(refusal("return.zip", out.getvalue(), None), HostileFile)


def test_attachment_over_the_size_limit_is_refused_with_the_limit_not_quarantined():
    """A careless export, far more often than an attack: the provider is told the limit and what to do."""
    error = refusal("return.csv", b"a" * (MAX_FILE_BYTES + 1), None)
    assert not isinstance(error, HostileFile)
    assert "50 MB" in error.advice and "split" in error.advice and ".xlsx" in error.advice


# Passwords never reach a log ------------------------------------------------------------------------

def test_no_password_in_any_log_record_at_debug(caplog):
    caplog.set_level(logging.DEBUG)
    for name in GOLDEN:
        for password in (PASSWORD, "Wrong-Password-99"):
            try:
                open_file(name, golden(name), password)
            except UnpackError:
                pass
    for record in caplog.records:
        text = record.getMessage() + str(record.args)
        assert PASSWORD not in text and "Wrong-Password-99" not in text


def test_msoffcrypto_is_kept_above_debug_when_the_gateway_logs_at_debug(caplog):
    caplog.set_level(logging.DEBUG)
    assert logging.getLogger("gateway").isEnabledFor(logging.DEBUG)
    assert not logging.getLogger("msoffcrypto.method.ecma376_standard").isEnabledFor(logging.DEBUG)


def test_msoffcrypto_would_log_the_password_without_that_guard(caplog):
    """Why the guard exists. If this fails, msoffcrypto stopped logging passwords and the guard can go."""
    caplog.set_level(logging.DEBUG)
    guard = logging.getLogger("msoffcrypto")
    level = guard.level
    guard.setLevel(logging.NOTSET)
    try:
        open_file("standard.xlsx", golden("standard.xlsx"), PASSWORD)
    finally:
        guard.setLevel(level)
    assert any(PASSWORD in record.getMessage() for record in caplog.records)


# winmail.dat ---------------------------------------------------------------------------------------

def test_winmail_attachments_match_expected():
    found = tnef_attachments(golden("winmail.dat"))
    assert [[name, hashlib.sha256(data).hexdigest()] for name, data in found] == EXPECTED["tnef"]["winmail.dat"]


def test_winmail_return_opens_as_a_workbook():
    (name, data), _note = tnef_attachments(golden("winmail.dat"))
    assert open_file(name.lower(), data, None) == Opened(golden("return.xlsx"), "xlsx")


def test_winmail_golden_file_reads_the_same_in_tnefparse():
    """The hand-built winmail.dat is valid TNEF by a second, independent reader."""
    tnef = pytest.importorskip("tnefparse.tnef")
    parsed = tnef.TNEF(golden("winmail.dat"))
    names = [attachment.long_filename() for attachment in parsed.attachments if attachment.data]
    assert names[:2] == [name for name, _ in tnef_attachments(golden("winmail.dat"))]


def tnef(*attributes: bytes) -> bytes:
    return struct.pack("<IH", 0x223E9F78, 1) + b"".join(attributes)


def attribute(level: int, name: int, kind: int, value: bytes, checksum: int | None = None) -> bytes:
    total = sum(value) & 0xFFFF if checksum is None else checksum
    return struct.pack("<BHHI", level, name, kind, len(value)) + value + struct.pack("<H", total)


VERSION = attribute(1, 0x9006, 0x0008, struct.pack("<I", 0x00010000))
REND = attribute(2, 0x9002, 0x0006, bytes(14))


def test_not_tnef():
    with pytest.raises(UnpackError) as caught:
        tnef_attachments(golden("return.csv"))
    assert "winmail.dat" in caught.value.advice


def test_tnef_without_attachments():
    with pytest.raises(UnpackError) as caught:
        tnef_attachments(tnef(VERSION, attribute(1, 0x8008, 0x0007, b"IPM.Microsoft Mail.Note\0")))
    assert "held no attached file" in caught.value.advice


def test_truncated_tnef():
    data = golden("winmail.dat")
    with pytest.raises(UnpackError) as caught:
        tnef_attachments(data[: len(data) // 2])
    assert "could not read it" in caught.value.advice


def test_tnef_attachment_with_a_bad_checksum_is_damaged():
    data = tnef(VERSION, REND, attribute(2, 0x8010, 0x0001, b"R.CSV\0"), attribute(2, 0x800F, 0x0006, b"a,b\r\n", 1))
    with pytest.raises(UnpackError):
        tnef_attachments(data)


def test_tnef_with_a_huge_property_count_and_many_attributes_is_read_quickly():
    huge_count = attribute(2, 0x9005, 0x0006, struct.pack("<I", 0xFFFFFFFF) + bytes(8))
    many = VERSION * 100_000  # 1.5 MB of tiny attributes: tnefparse takes seconds (it copies per attribute)
    data = tnef(many, REND, attribute(2, 0x8010, 0x0001, b"R.CSV\0"), attribute(2, 0x800F, 0x0006, b"a,b\r\n"), huge_count)
    started = time.monotonic()
    assert tnef_attachments(data) == [("R.CSV", b"a,b\r\n")]
    assert time.monotonic() - started < 2


def test_tnef_long_filename_wins_over_the_8_3_title():
    long_name = "Return for March.csv".encode("utf-16-le") + b"\0\0"
    props = struct.pack("<IHHII", 1, 0x001F, 0x3707, 1, len(long_name)) + long_name + bytes(-len(long_name) % 4)
    data = tnef(VERSION, REND, attribute(2, 0x8010, 0x0001, b"RETURN~1.CSV\0"),
                attribute(2, 0x800F, 0x0006, b"a,b\r\n"), attribute(2, 0x9005, 0x0006, props))
    assert tnef_attachments(data) == [("Return for March.csv", b"a,b\r\n")]


def test_generated_at_a_fixed_time():
    """make.py stamps the plaintext workbook, so regenerating it gives the same bytes."""
    book = zipfile.ZipFile(io.BytesIO(golden("return.xlsx")))
    assert {entry.date_time for entry in book.infolist()} == {(2024, 3, 1, 9, 0, 0)}
    assert b"2024-03-01T09:00:00Z</dcterms:modified>" in book.read("docProps/core.xml")
