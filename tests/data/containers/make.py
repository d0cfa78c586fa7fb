"""Make the golden container files beside this script, and expected.json with what opening each gives.

    python tests/data/containers/make.py

The password of every protected file is PASSWORD below; it protects nothing real. The plaintexts
(return.xlsx, return.csv) are deterministic; the ciphertexts are not (encryption draws random salts,
keys and IVs, and 7-Zip/zip stamp the time), so rerunning changes the files' bytes but never what
opening them gives, which is what expected.json records (with the SHA-256 of the plaintext inside).

Real tools are used where there is one: Info-ZIP `zip -e` for ZipCrypto, 7-Zip (`7z`, from p7zip-full)
for a 7-Zip AES-256 zip, a 7-Zip ZipCrypto zip and a .7z archive; if a tool is missing, its files are
left as they are. msoffcrypto-tool writes Agile encryption only, so the Standard-encrypted workbook is
built here from MS-OFFCRYPTO 2.3.4.5-2.3.4.9 (an implementation independent of the one that reads it),
inside msoffcrypto's own compound-file writer. winmail.dat is built from MS-OXTNEF, field by field.
The .xls and .doc files are minimal compound files written here (old.xls: BOF and EOF only;
xls97_encrypted.xls: a FilePass record claiming RC4; word97.doc: a WordDocument stream), enough for the
gateway to recognise them, not for Excel to show anything. strong.zip, corrupt.zip, tampered.zip and
agile_excessive_spin.xlsx are good files damaged on purpose, as their functions below say.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile
from datetime import datetime
from pathlib import Path

import openpyxl
import pyzipper
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from msoffcrypto.format.ooxml import OOXMLFile
from msoffcrypto.method.container.ecma376_encrypted import ECMA376Encrypted
from pyzipper.zipfile_aes import AESZipInfo

HERE = Path(__file__).resolve().parent
PASSWORD = "Ldor-Test-Password-1"
WHEN = (2024, 3, 1, 9, 0, 0)
EPOCH = datetime(*WHEN).timestamp()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# Plaintexts ----------------------------------------------------------------------------------------

def workbook() -> bytes:
    """A small return with made-up people, byte-for-byte the same on every run."""
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "Return"
    sheet.append(["UKPRN", 10001234])
    sheet.append([])
    sheet.append(["Family Name", "First Name", "DOB", "Post Code", "Date Left"])
    sheet.append(["Testperson", "Alex", "2008-01-02", "N1 1AA", "2024-02-01"])
    sheet.append(["Exampleton", "Sam", "2007-05-06", "NW1 2BB", "2024-02-10"])
    book.properties.creator = "ldor-gateway tests"
    book.properties.created = book.properties.modified = datetime(*WHEN)
    buffer = io.BytesIO()
    book.save(buffer)
    return restamp(buffer.getvalue())


def restamp(data: bytes) -> bytes:
    """The same zip with every entry, and the workbook's modified time, dated WHEN (openpyxl stamps now)."""
    source = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for entry in source.infolist():
            content = source.read(entry)
            if entry.filename == "docProps/core.xml":
                content = re.sub(rb"(<dcterms:modified[^>]*>)[^<]*", rb"\g<1>2024-03-01T09:00:00Z", content)
            info = zipfile.ZipInfo(entry.filename, WHEN)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o600 << 16
            target.writestr(info, content)
    return out.getvalue()


CSV = (
    "UKPRN,10001234\r\n"
    "Family Name,First Name,DOB,Post Code,Date Left\r\n"
    "Testperson,Alex,2008-01-02,N1 1AA,2024-02-01\r\n"
    "Exampleton,Sam,2007-05-06,NW1 2BB,2024-02-10\r\n"
).encode()

DOCX = {
    "[Content_Types].xml": '<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
                           '<Default Extension="xml" ContentType="application/xml"/></Types>',
    "word/document.xml": '<?xml version="1.0"?><w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"/>',
    # msoffcrypto's compound-file writer produces unreadable files for packages under 4096 bytes (its
    # mini-stream path), so give the document an incompressible picture to take it past that.
    "word/media/image1.bin": b"".join(hashlib.sha256(bytes([i])).digest() for i in range(160)),
}


def plain_zip(members: dict[str, bytes | str]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in members.items():
            archive.writestr(zipfile.ZipInfo(name, WHEN), content)
    return out.getvalue()


def aes_zip(members: dict[str, bytes], version: int = 2, bits: int = 256) -> bytes:
    out = io.BytesIO()
    with pyzipper.AESZipFile(out, "w", compression=pyzipper.ZIP_DEFLATED, encryption=pyzipper.WZ_AES,
                             encryption_kwargs={"nbits": bits, "force_wz_aes_version": version}) as archive:
        archive.setpassword(PASSWORD.encode())
        for name, content in members.items():
            if name.endswith("/"):
                archive.writestr(AESZipInfo(name, WHEN), b"")  # a folder: not encrypted, as 7-Zip does
            else:
                archive.writestr(AESZipInfo(name, WHEN), content, compress_type=pyzipper.ZIP_DEFLATED)
    return out.getvalue()


# Excel Standard encryption (MS-OFFCRYPTO 2.3.4.5 to 2.3.4.9: AES-128, SHA-1, 50,000 rounds) ------------

def standard_key(password: str, salt: bytes) -> bytes:
    digest = hashlib.sha1(salt + password.encode("utf-16-le")).digest()
    for iterator in range(50_000):
        digest = hashlib.sha1(struct.pack("<I", iterator) + digest).digest()
    final = hashlib.sha1(digest + struct.pack("<I", 0)).digest()
    x1 = hashlib.sha1(bytes(b ^ 0x36 for b in final.ljust(64, b"\0"))).digest()
    return x1[:16]


def standard_encrypt(package: bytes, password: str) -> bytes:
    salt = hashlib.sha256(b"standard salt").digest()[:16]
    verifier = hashlib.sha256(b"standard verifier").digest()[:16]
    key = standard_key(password, salt)
    aes = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    encrypted_verifier = aes.update(verifier)
    encrypted_verifier_hash = aes.update(hashlib.sha1(verifier).digest().ljust(32, b"\0"))
    csp = "Microsoft Enhanced RSA and AES Cryptographic Provider\0".encode("utf-16-le")
    flags = 0x24  # fCryptoAPI | fAES
    header = struct.pack("<8I", flags, 0, 0x660E, 0x8004, 128, 0x18, 0, 0) + csp
    info = (struct.pack("<HHII", 4, 2, flags, len(header)) + header
            + struct.pack("<I", 16) + salt + encrypted_verifier + struct.pack("<I", 20) + encrypted_verifier_hash)
    encrypted = struct.pack("<Q", len(package)) + aes.update(package + b"\0" * (-len(package) % 16)) + aes.finalize()
    out = io.BytesIO()
    ECMA376Encrypted(encrypted, info).write_to(out)
    return out.getvalue()


def agile_encrypt(package: bytes) -> bytes:
    out = io.BytesIO()
    OOXMLFile(io.BytesIO(package)).encrypt(PASSWORD, out)
    return out.getvalue()


def excessive_spin(agile: bytes) -> bytes:
    """Agile encryption asking for 9,999,999 key-derivation rounds (Excel uses 100,000), same length."""
    out = agile.replace(b'spinCount="100000"', b'spinCount="9999999"').replace(b"\n    <keyData", b"\n   <keyData")
    assert len(out) == len(agile) and out != agile
    return out


# Excel 97-2003 workbooks: a compound file with a Workbook stream of BIFF8 records ------------------

BOF = struct.pack("<HH", 0x0809, 16) + struct.pack("<HHHHII", 0x0600, 0x0005, 0x0DBB, 0x07CC, 0, 6)
EOF = struct.pack("<HH", 0x000A, 0)
# FilePass (MS-XLS 2.4.117): RC4 encryption, version 1.1, salt, verifier and its hash (made up here)
FILEPASS = struct.pack("<HHHHH", 0x002F, 54, 0x0001, 1, 1) + hashlib.sha256(b"rc4").digest() + bytes(16)


def compound_file(records: bytes, stream_name: str = "Workbook") -> bytes:
    free, end, fat_sector, no_stream = 0xFFFFFFFF, 0xFFFFFFFE, 0xFFFFFFFD, 0xFFFFFFFF
    stream = records.ljust(4096, b"\0")  # 4096: a regular, not a mini, stream
    sectors = len(stream) // 512
    fat = [fat_sector, end] + list(range(3, 2 + sectors)) + [end]
    fat += [free] * (128 - len(fat))

    def entry(name: str, kind: int, child: int, start: int, size: int) -> bytes:
        encoded = (name + "\0").encode("utf-16-le") if name else b""
        return (encoded.ljust(64, b"\0") + struct.pack("<HBB3I", len(encoded), kind, 1, no_stream, no_stream, child)
                + b"\0" * 16 + struct.pack("<I", 0) + b"\0" * 16 + struct.pack("<IQ", start, size))

    directory = (entry("Root Entry", 5, 1, end, 0) + entry(stream_name, 2, no_stream, 2, len(stream))
                 + entry("", 0, no_stream, 0, 0) + entry("", 0, no_stream, 0, 0))
    header = (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 16
              + struct.pack("<HHHHH6xIIIIIIIII", 0x3E, 3, 0xFFFE, 9, 6, 0, 1, 1, 0, 4096, end, 0, end, 0)
              + struct.pack("<109I", 0, *([free] * 108)))
    return header + struct.pack("<128I", *fat) + directory + stream


# winmail.dat (MS-OXTNEF) ---------------------------------------------------------------------------

def tnef_attribute(level: int, name: int, kind: int, value: bytes) -> bytes:
    return struct.pack("<BHHI", level, name, kind, len(value)) + value + struct.pack("<H", sum(value) & 0xFFFF)


def mapi(*properties: tuple[int, int, object]) -> bytes:
    out = struct.pack("<I", len(properties))
    for ptype, pid, value in properties:
        out += struct.pack("<HH", ptype, pid)
        if ptype == 0x0003:
            out += struct.pack("<I", value)
        else:
            raw = value if isinstance(value, bytes) else value.encode("utf-16-le" if ptype == 0x001F else "cp1252") + (
                b"\0\0" if ptype == 0x001F else b"\0")
            out += struct.pack("<II", 1, len(raw)) + raw + b"\0" * (-len(raw) % 4)
    return out


def winmail(xlsx: bytes) -> bytes:
    rend = struct.pack("<HIHHI", 1, 0xFFFFFFFF, 0, 0, 0)  # a file attachment, no rendering position
    modified = struct.pack("<7H", *WHEN, 5)
    out = struct.pack("<IH", 0x223E9F78, 0x0001)
    out += tnef_attribute(1, 0x9006, 0x0008, struct.pack("<I", 0x00010000))  # attTnefVersion
    out += tnef_attribute(1, 0x9007, 0x0006, struct.pack("<II", 1252, 0))  # attOemCodepage
    out += tnef_attribute(1, 0x8008, 0x0007, b"IPM.Microsoft Mail.Note\0")  # attMessageClass
    out += tnef_attribute(1, 0x9003, 0x0006, mapi((0x001E, 0x1000, "Please find the return attached.")))  # attMsgProps: PR_BODY
    # 1: the return, with Outlook's 8.3 title and the real name as a Unicode PR_ATTACH_LONG_FILENAME
    out += tnef_attribute(2, 0x9002, 0x0006, rend)
    out += tnef_attribute(2, 0x8010, 0x0001, b"RETURN~1.XLS\0")
    out += tnef_attribute(2, 0x8013, 0x0003, modified)
    out += tnef_attribute(2, 0x800F, 0x0006, xlsx)
    out += tnef_attribute(2, 0x9005, 0x0006, mapi((0x0003, 0x3705, 1), (0x001F, 0x3707, "Return March 2024.xlsx"),
                                                  (0x001E, 0x3703, ".xlsx")))
    # 2: a covering note, its long name in the ANSI code page
    out += tnef_attribute(2, 0x9002, 0x0006, rend)
    out += tnef_attribute(2, 0x8010, 0x0001, b"COVERI~1.TXT\0")
    out += tnef_attribute(2, 0x800F, 0x0006, b"Covering note: two leavers this month.\r\n")
    out += tnef_attribute(2, 0x9005, 0x0006, mapi((0x0003, 0x3705, 1), (0x001E, 0x3707, "Covering note.txt")))
    # 3: a forwarded email (ATTACH_EMBEDDED_MSG), which is not a file and must be skipped
    out += tnef_attribute(2, 0x9002, 0x0006, rend)
    out += tnef_attribute(2, 0x8010, 0x0001, b"Forwarded message\0")
    out += tnef_attribute(2, 0x800F, 0x0006, b"\x78\x9f\x3e\x22\x01\x00")
    out += tnef_attribute(2, 0x9005, 0x0006, mapi((0x0003, 0x3705, 5)))
    return out


# Zips made or damaged by hand ----------------------------------------------------------------------

def strong_zip() -> bytes:
    """A zip whose entry claims PKWARE strong encryption (flag bits 0 and 6), as SecureZIP marks it."""
    data = bytearray(plain_zip({"return.csv": CSV}))
    local = data.find(b"PK\x03\x04")
    central = data.find(b"PK\x01\x02")
    for flags_at in (local + 6, central + 8):
        struct.pack_into("<H", data, flags_at, struct.unpack_from("<H", data, flags_at)[0] | 0x0041)
    return bytes(data)


def tampered(data: bytes) -> bytes:
    """One byte of the first entry's ciphertext flipped: the AES authentication code must catch it."""
    out = bytearray(data)
    name_length, extra_length = struct.unpack_from("<HH", out, 26)
    out[30 + name_length + extra_length + 16 + 2 + 40] ^= 0x01  # past the salt and the password check
    return bytes(out)


# Real tools ----------------------------------------------------------------------------------------

def with_tool(tool: str, arguments: list[str], inputs: dict[str, bytes], output: str) -> bytes | None:
    if shutil.which(tool) is None:
        print(f"{tool} not installed: {output} left as it is", file=sys.stderr)
        return None
    with tempfile.TemporaryDirectory() as folder:
        for name, content in inputs.items():
            path = Path(folder, name)
            path.write_bytes(content)
            os.utime(path, (EPOCH, EPOCH))
        target = Path(folder, output)
        subprocess.run([tool, *arguments, str(target), *inputs], cwd=folder, check=True, capture_output=True)
        return target.read_bytes()


def main() -> None:
    xlsx = workbook()
    docx = restamp(plain_zip(DOCX))
    files: dict[str, bytes | None] = {
        "return.xlsx": xlsx,
        "return.csv": CSV,
        "old.xls": compound_file(BOF + EOF),
        "xls97_encrypted.xls": compound_file(BOF + FILEPASS + EOF),
        "word97.doc": compound_file(b"\xec\xa5\xc1\x00" + bytes(60), "WordDocument"),
        "agile.xlsx": agile_encrypt(xlsx),
        "standard.xlsx": standard_encrypt(xlsx, PASSWORD),
        "agile_document.docx": agile_encrypt(docx),
        "aes256_xlsx.zip": aes_zip({"return.xlsx": xlsx}),
        "aes256_ae1_csv.zip": aes_zip({"return.csv": CSV}, version=1),
        "aes128_csv.zip": aes_zip({"return.csv": CSV}, bits=128),
        "aes_with_junk.zip": aes_zip({"returns/": b"", "__MACOSX/returns/._return.xlsx": b"\0\5\26\7junk",
                                      "returns/.DS_Store": b"\0\0\0\1Bud1", "returns/~$return.xlsx": b"\x08lock",
                                      "returns/return.xlsx": xlsx}),
        "aes_two_returns.zip": aes_zip({"return.xlsx": xlsx, "return.csv": CSV}),
        "aes_nested.zip": aes_zip({"inner.zip": plain_zip({"return.csv": CSV})}),
        "aes_agile_inside.zip": aes_zip({"return.xlsx": agile_encrypt(xlsx)}),
        "plain.zip": plain_zip({"return.csv": CSV}),
        "strong.zip": strong_zip(),
        "web_page.xls": b"<html><body><table><tr><td>Family Name</td><td>First Name</td></tr></table></body></html>\r\n",
        "winmail.dat": winmail(xlsx),
        "zipcrypto.zip": with_tool("zip", ["-X", "-q", "-e", "-P", PASSWORD], {"return.csv": CSV}, "zipcrypto.zip"),
        "7zip_aes256.zip": with_tool("7z", ["a", "-tzip", "-mem=AES256", f"-p{PASSWORD}", "-bd"], {"return.xlsx": xlsx},
                                     "7zip_aes256.zip"),
        "7zip_zipcrypto.zip": with_tool("7z", ["a", "-tzip", "-mem=ZipCrypto", f"-p{PASSWORD}", "-bd"],
                                        {"return.csv": CSV}, "7zip_zipcrypto.zip"),
        "archive.7z": with_tool("7z", ["a", "-t7z", f"-p{PASSWORD}", "-bd"], {"return.csv": CSV}, "archive.7z"),
    }
    aes = files["aes256_xlsx.zip"]
    assert aes is not None
    files["corrupt.zip"] = aes[: len(aes) * 2 // 3]
    files["tampered.zip"] = tampered(aes)
    files["agile_excessive_spin.xlsx"] = excessive_spin(files["agile.xlsx"])

    opened = lambda kind, inner, encrypted=True, warnings=0: {  # noqa: E731
        "password": True, "kind": kind, "encrypted": encrypted, "warnings": warnings, "sha256": sha(inner)}
    refused = lambda error, advice, password=True: {"password": password, "error": error, "advice": advice}  # noqa: E731
    expected = {
        "password": PASSWORD,
        "files": {
            "return.xlsx": opened("xlsx", xlsx, encrypted=False),
            "return.csv": opened("csv", CSV, encrypted=False),
            "old.xls": opened("xls", files["old.xls"], encrypted=False),
            "agile.xlsx": opened("xlsx", xlsx),
            "standard.xlsx": opened("xlsx", xlsx),
            "agile_document.docx": refused("UnpackError", "not a spreadsheet"),
            "agile_excessive_spin.xlsx": refused("HostileFile", "set it aside"),
            "xls97_encrypted.xls": refused("UnpackError", "Excel 97-2003 encryption"),
            "word97.doc": refused("UnpackError", "not a spreadsheet"),
            "aes256_xlsx.zip": opened("xlsx", xlsx),
            "aes256_ae1_csv.zip": opened("csv", CSV),
            "aes128_csv.zip": opened("csv", CSV),
            "aes_with_junk.zip": opened("xlsx", xlsx),
            "aes_two_returns.zip": refused("UnpackError", "more than one return"),
            "aes_nested.zip": refused("UnpackError", "holds another zip"),
            "aes_agile_inside.zip": opened("xlsx", xlsx),
            "plain.zip": opened("csv", CSV, encrypted=False),
            "strong.zip": refused("UnpackError", "PKWARE strong encryption"),
            "web_page.xls": refused("UnpackError", "web page"),
            "zipcrypto.zip": opened("csv", CSV, warnings=1),
            "7zip_aes256.zip": opened("xlsx", xlsx),
            "7zip_zipcrypto.zip": opened("csv", CSV, warnings=1),
            "archive.7z": refused("UnpackError", "7z, RAR"),
            "corrupt.zip": refused("UnpackError", "damaged or incomplete"),
            "tampered.zip": refused("UnpackError", "damaged on its way"),
        },
        "tnef": {"winmail.dat": [["Return March 2024.xlsx", sha(xlsx)],
                                 ["Covering note.txt", sha(b"Covering note: two leavers this month.\r\n")]]},
    }
    for name, content in files.items():
        if content is not None:
            (HERE / name).write_bytes(content)
    (HERE / "expected.json").write_text(json.dumps(expected, indent=2) + "\n")


if __name__ == "__main__":
    main()
