"""From an attachment's bytes to the spreadsheet inside: protected workbooks, encrypted zips, winmail.dat.

Everything happens in memory. The provider's password, the attachment's name and the names of the
files inside an archive never appear in an error, a log record or a receipt.
"""

from __future__ import annotations

import copy
import io
import logging
import struct
from dataclasses import dataclass

import msoffcrypto
import pyzipper
from msoffcrypto.exceptions import DecryptionError, FileFormatError, InvalidKeyError
from msoffcrypto.format.ooxml import OOXMLFile
from msoffcrypto.format.xls97 import Xls97File

from ..errors import HostileFile, PasswordMissing, UnpackError

MAX_FILE_BYTES = 50 * 1024 * 1024  # the most any attachment, archive member or winmail.dat may hold
# A part of an xlsx or ods (a sheet's XML) may be larger: 100,000 rows of XML pass 50 MB. read.py reads it.
MAX_DOCUMENT_PART_BYTES = 10 * MAX_FILE_BYTES
MAX_RATIO = 200  # a member expanding more than this ...
RATIO_FROM_BYTES = 1024 * 1024  # ... and to more than this is a bomb, not a return
MAX_MEMBERS = 1000  # a zip holding more entries than this is not a return
MAX_ATTACHMENTS = 100  # nor is a winmail.dat holding more files than this
MAX_SPIN_COUNT = 1_000_000  # Excel uses 100,000 key-derivation rounds; more only burns our CPU

SHEET_SUFFIXES = (".xlsx", ".xlsm", ".xls", ".ods", ".csv")
_ARCHIVE_SUFFIXES = (".zip", ".zipx", ".7z", ".rar", ".gz", ".tgz", ".tar", ".cab")
_JUNK_NAMES = {".ds_store", "thumbs.db", "desktop.ini"}

_OLE = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_ZIP = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")  # local header, empty archive, split archive
_OTHER_ARCHIVES = (b"7z\xbc\xaf\x27\x1c", b"Rar!\x1a\x07", b"\x1f\x8b", b"MSCF")
_ODS_MIMETYPE = b"application/vnd.oasis.opendocument.spreadsheet"
_CHUNK = 1024 * 1024
_ZIP_ENCRYPTED = 0x0001  # general purpose flag bits
_ZIP_STRONG = 0x0040
_ZIP_CENTRAL_DIRECTORY_ENCRYPTED = 0x2000
_ZIP_STORED, _ZIP_DEFLATED = 0, 8

# msoffcrypto logs the password itself at DEBUG (ecma376_standard.makekey_from_password) and the
# derived keys after it. Keep its loggers above DEBUG whatever level the gateway runs at.
logging.getLogger("msoffcrypto").setLevel(logging.WARNING)

ZIPCRYPTO_WARNING = (
    "This zip used the old ZipCrypto encryption, which is weak: please use AES-256 "
    "(in 7-Zip: Encryption method AES-256) next time."
)
_NO_PASSWORD_WORKBOOK = (
    "Your workbook is password protected, but no password has been agreed with the gateway for your "
    "organisation, so we could not open it. Please contact the gateway administrator, or send the file "
    "encrypted with PGP."
)
_NO_PASSWORD_ZIP = (
    "Your zip file is password protected, but no password has been agreed with the gateway for your "
    "organisation, so we could not open it. Please contact the gateway administrator, or send the file "
    "encrypted with PGP."
)
_WRONG_PASSWORD_WORKBOOK = (
    "The password did not open your workbook. Please check it is the one agreed with the gateway "
    "administrator, and send the file again."
)
_WRONG_PASSWORD_ZIP = (
    "The password did not open your zip file. Please check it is the one agreed with the gateway "
    "administrator, and send the file again."
)
_PASSWORD_OR_DAMAGED_ZIP = (
    "Your zip file could not be opened: either the password is not the one agreed with the gateway "
    "administrator, or the file was damaged on its way. Please check the password, create the zip again "
    "and send it again."
)
_DAMAGED_ZIP = "The zip file is damaged or incomplete; please create it again and send it again."
_DAMAGED_WORKBOOK = (
    "Your workbook could not be opened: it is damaged or incomplete. Please save it again from Excel "
    "and send it again."
)
_UNSUPPORTED_WORKBOOK_ENCRYPTION = (
    "Your workbook is protected with a kind of encryption the gateway cannot open. Please save it as an "
    "Excel Workbook (.xlsx) with a password (in Excel: File > Info > Protect Workbook > Encrypt with "
    "Password), or encrypt it with PGP, and send it again."
)
_LEGACY_XLS_ENCRYPTION = (
    "Your workbook is protected with the old Excel 97-2003 encryption, which is weak and which the "
    "gateway does not open. Please save it as an Excel Workbook (.xlsx) with a password (in Excel: File > "
    "Info > Protect Workbook > Encrypt with Password), or encrypt it with PGP, and send it again."
)
_ENCRYPTED_ODS = (
    "Your .ods file is protected with LibreOffice's own encryption, which the gateway does not open. "
    "Please save it as an Excel Workbook (.xlsx) with a password, or put it in a zip with AES-256 "
    "encryption, and send it again."
)
_STRONG_ENCRYPTION = (
    "Your zip file uses a kind of zip encryption the gateway does not support (PKWARE strong encryption). "
    "Please create it again with AES-256 encryption in 7-Zip or WinZip, and send it again."
)
_UNSUPPORTED_COMPRESSION = (
    "Your zip file uses a compression method the gateway does not open. Please create it again with the "
    "usual settings (in 7-Zip: Archive format zip, Compression method Deflate, Encryption method AES-256) "
    "and send it again."
)
_MORE_THAN_ONE = (
    "Your zip file holds more than one return. Please send one return per zip file or per attachment, "
    "and send them again."
)
_NO_SPREADSHEET_IN_ZIP = (
    "Your zip file holds no spreadsheet or csv file. Please put the return (.xlsx, .xls, .ods or .csv) in "
    "the zip and send it again."
)
_NESTED_ARCHIVE = (
    "Your zip file holds another zip or archive, which the gateway does not open. Please put the return "
    "itself (.xlsx or .csv) in a single zip with AES-256 encryption and send it again."
)
_OTHER_ARCHIVE = (
    "The attached file is a 7z, RAR, gzip or cabinet archive, which the gateway does not open. Please "
    "create a .zip instead (in 7-Zip: Archive format zip, Encryption method AES-256) and send it again."
)
_NOT_A_SPREADSHEET = (
    "The attached file is not a spreadsheet or csv file the gateway can read. Please send the return as "
    "an Excel Workbook (.xlsx) or a csv file, protected as agreed with the gateway administrator."
)
_WEB_PAGE = (
    "The attached file is a web page, XML or rich text file, not a workbook, even if its name says it is "
    "one. Please open it in Excel, save it as an Excel Workbook (.xlsx) and send it again."
)
_EMPTY = "The attached file was empty. Please attach the completed return and send it again."
_HOSTILE = (
    "The attached file would expand to more than 50 MB, or its sizes do not add up, so for safety the "
    "gateway has not opened it and has set it aside for the administrator. Please send the return on its "
    "own, in a new zip made with 7-Zip or WinZip."
)
TOO_MANY_FILES = (
    "The attached file holds far more files than any return, so for safety the gateway has not opened it "
    "and has set it aside for the administrator. Please send the return on its own."
)
_EXCESSIVE_SPIN = (
    "Your workbook's encryption asks for far more work to open than Excel ever uses, so for safety the "
    "gateway has not opened it and has set it aside for the administrator. Please save the workbook again "
    "from Excel with a password and send it again."
)
TOO_BIG = (
    "The attached file is larger than 50 MB, the most the gateway accepts for one return, so it has not been "
    "read. Please save the return as an Excel Workbook (.xlsx), which is much smaller than csv or .xls; if it "
    "is still over 50 MB, split it into several files under 50 MB and send each."
)




@dataclass(frozen=True)
class Opened:
    """The spreadsheet found in an attachment, as bytes, and what it is."""

    data: bytes
    kind: str  # "xlsx" | "xls" | "ods" | "csv": what the bytes are
    warnings: tuple[str, ...] = ()  # text for the provider's receipt, e.g. weak ZipCrypto
    encrypted: bool = False  # whether it arrived protected; the caller decides whether clear files are acceptable


def open_file(name: str, data: bytes, password: str | None) -> Opened:
    """Open one attachment, deciding by its content, never by `name` (which may lie: an "xls" that is a
    web page, a csv named .xls). Names matter only inside an archive, to pick the return among its files.
    """
    if len(data) > MAX_FILE_BYTES:
        # Too big is a careless export far more often than an attack: the provider gets a rejection, not a quarantine.
        raise UnpackError("attachment over the size limit", TOO_BIG)
    return _open(data, password or None, inside_archive=False)


def _open(data: bytes, password: str | None, inside_archive: bool) -> Opened:
    if not data.strip():
        raise UnpackError("empty file", _EMPTY)
    if data.startswith(_OLE):
        return _open_ole(data, password)
    if data.startswith(_ZIP):
        return _open_zip(data, password, inside_archive)
    if data.startswith(_OTHER_ARCHIVES):
        raise UnpackError("archive other than zip", _NESTED_ARCHIVE if inside_archive else _OTHER_ARCHIVE)
    text = _as_text(data)
    if text is None:
        raise UnpackError("not a spreadsheet", _NOT_A_SPREADSHEET)
    if text.lstrip()[:1] == "<" or text.startswith("{\\rtf"):
        raise UnpackError("markup or rich text, not a spreadsheet", _WEB_PAGE)
    return Opened(data, "csv")


def _as_text(data: bytes) -> str | None:
    """The same test read.py applies before reading a csv file."""
    for encoding in ("utf-8-sig", "cp1252"):
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError:
            continue
        return None if "\x00" in text else text
    return None


# Workbooks in an OLE compound file: Excel 97-2003 .xls, or an encrypted .xlsx ------------------------


def _open_ole(data: bytes, password: str | None) -> Opened:
    try:
        office = msoffcrypto.OfficeFile(io.BytesIO(data))
    except FileFormatError:  # an OLE file that is neither a workbook nor encrypted OOXML: .doc, .msg, ...
        raise UnpackError("OLE file is not a workbook", _NOT_A_SPREADSHEET) from None
    except DecryptionError:  # an EncryptionInfo version msoffcrypto does not know (Extensible, ...)
        raise UnpackError("workbook encryption version unsupported", _UNSUPPORTED_WORKBOOK_ENCRYPTION) from None
    except Exception:  # olefile and msoffcrypto raise many unrelated types on damaged or odd files
        raise UnpackError("OLE file cannot be parsed", _DAMAGED_WORKBOOK) from None
    if isinstance(office, OOXMLFile):
        return _decrypt_ooxml(office, password)
    if not isinstance(office, Xls97File):
        raise UnpackError("OLE file is not a workbook", _NOT_A_SPREADSHEET)
    try:
        encrypted = office.is_encrypted()
    except Exception:
        raise UnpackError("xls workbook stream cannot be parsed", _DAMAGED_WORKBOOK) from None
    if encrypted:
        # RC4 and XOR obfuscation are weak, and msoffcrypto writes the decrypted workbook to a temporary
        # file on disk, which the gateway never does with plaintext. Ask for .xlsx encryption instead.
        raise UnpackError("xls workbook uses Excel 97-2003 encryption", _LEGACY_XLS_ENCRYPTION)
    return Opened(data, "xls")


def _decrypt_ooxml(office: OOXMLFile, password: str | None) -> Opened:
    if office.type not in ("agile", "standard"):
        raise UnpackError("workbook encryption type unsupported", _UNSUPPORTED_WORKBOOK_ENCRYPTION)
    if office.type == "agile" and office.info["spinValue"] > MAX_SPIN_COUNT:
        raise HostileFile("workbook asks for an excessive key-derivation count", _EXCESSIVE_SPIN)
    if password is None:
        raise PasswordMissing("workbook is password protected and no password is configured", _NO_PASSWORD_WORKBOOK)
    try:
        office.load_key(password=password, verify_password=True)
    except InvalidKeyError:
        raise UnpackError("password did not open the workbook", _WRONG_PASSWORD_WORKBOOK) from None
    except Exception:
        raise UnpackError("workbook encryption header cannot be parsed", _DAMAGED_WORKBOOK) from None
    plain = io.BytesIO()
    try:
        # The password is verified by now, so a failure here (integrity check, not a zip) is damage.
        office.decrypt(plain, verify_integrity=office.type == "agile")
    except Exception:
        raise UnpackError("decrypted workbook failed its integrity check", _DAMAGED_WORKBOOK) from None
    opened = _open_zip(plain.getvalue(), None, inside_archive=True)
    return Opened(opened.data, opened.kind, opened.warnings, encrypted=True)


# Zips: an xlsx or ods itself, or an archive holding one return --------------------------------------


def _open_zip(data: bytes, password: str | None, inside_archive: bool) -> Opened:
    archive = _parse_zip(data)
    entries = archive.infolist()
    kind = None if any(entry.flag_bits & _ZIP_ENCRYPTED for entry in entries) else _document_kind(archive, entries)
    for entry in entries:
        _check_declared_size(entry, MAX_DOCUMENT_PART_BYTES if kind else MAX_FILE_BYTES)
    if kind is not None:
        # The workbook's own parts are decompressed by read.py, which must bound what it reads.
        return Opened(data, kind)
    if inside_archive:
        raise UnpackError("zip inside a zip", _NESTED_ARCHIVE)
    return _open_archive(archive, entries, password)


def _parse_zip(data: bytes) -> pyzipper.AESZipFile:
    declared = _declared_entries(data)
    if declared is not None and declared > MAX_MEMBERS:
        raise HostileFile("zip declares too many entries", TOO_MANY_FILES)
    try:
        archive = pyzipper.AESZipFile(io.BytesIO(data))
    except Exception:  # BadZipFile, but also struct.error, ValueError, EOFError on hostile bytes
        if len(data) >= 8 and struct.unpack_from("<H", data, 6)[0] & (_ZIP_STRONG | _ZIP_CENTRAL_DIRECTORY_ENCRYPTED):
            raise UnpackError("zip uses PKWARE strong encryption", _STRONG_ENCRYPTION) from None
        raise UnpackError("zip file damaged or incomplete", _DAMAGED_ZIP) from None
    if len(archive.infolist()) > MAX_MEMBERS:
        raise HostileFile("zip holds too many entries", TOO_MANY_FILES)
    return archive


def _declared_entries(data: bytes) -> int | None:
    """The entry count in the end-of-central-directory record, read before parsing the directory."""
    end = data.rfind(b"PK\x05\x06", max(0, len(data) - 65557))
    if end < 0 or end + 22 > len(data):
        return None
    count = struct.unpack_from("<H", data, end + 10)[0]
    return MAX_MEMBERS + 1 if count == 0xFFFF else count  # 0xFFFF: the real count is in a zip64 record


def _check_declared_size(entry: pyzipper.ZipInfo, limit: int) -> None:
    if entry.file_size > limit:
        raise HostileFile("zip entry declares more than the size limit", _HOSTILE)
    if entry.file_size > RATIO_FROM_BYTES and entry.file_size > MAX_RATIO * max(entry.compress_size, 1):
        raise HostileFile("zip entry compression ratio over the limit", _HOSTILE)


def _document_kind(archive: pyzipper.AESZipFile, entries: list[pyzipper.ZipInfo]) -> str | None:
    """"xlsx" or "ods" for an Office or OpenDocument spreadsheet, None for a plain archive."""
    names = {entry.filename for entry in entries}
    if "[Content_Types].xml" in names:
        if any(name.startswith("xl/") for name in names):
            return "xlsx"
        raise UnpackError("Office document other than a workbook", _NOT_A_SPREADSHEET)
    if "mimetype" in names:
        if _small_entry(archive, "mimetype").strip() != _ODS_MIMETYPE:
            raise UnpackError("OpenDocument file other than a spreadsheet", _NOT_A_SPREADSHEET)
        if "META-INF/manifest.xml" in names and b"encryption-data" in _small_entry(archive, "META-INF/manifest.xml"):
            raise UnpackError("ods protected with OpenDocument encryption", _ENCRYPTED_ODS)
        return "ods"
    return None


def _small_entry(archive: pyzipper.AESZipFile, name: str) -> bytes:
    entry = archive.getinfo(name)
    if entry.file_size > RATIO_FROM_BYTES:
        raise UnpackError("document metadata entry implausibly large", _NOT_A_SPREADSHEET)
    return _read_entry(archive, entry, None)


def _open_archive(archive: pyzipper.AESZipFile, entries: list[pyzipper.ZipInfo], password: str | None) -> Opened:
    members = [entry for entry in entries if not _is_junk(entry)]
    returns = [entry for entry in members if entry.filename.lower().endswith(SHEET_SUFFIXES)]
    if not returns and len(members) == 1 and not members[0].filename.lower().endswith(_ARCHIVE_SUFFIXES):
        returns = members  # one file with an odd name: let its content decide
    if len(returns) > 1:
        raise UnpackError(f"zip holds {len(returns)} returns", _MORE_THAN_ONE)
    if not returns:
        if any(entry.filename.lower().endswith(_ARCHIVE_SUFFIXES) for entry in members):
            raise UnpackError("zip holds only another archive", _NESTED_ARCHIVE)
        raise UnpackError("zip holds no spreadsheet", _NO_SPREADSHEET_IN_ZIP)
    entry = returns[0]
    warnings: tuple[str, ...] = ()
    encrypted = bool(entry.flag_bits & _ZIP_ENCRYPTED)
    if entry.flag_bits & _ZIP_STRONG:
        raise UnpackError("zip uses PKWARE strong encryption", _STRONG_ENCRYPTION)
    if entry.compress_type not in (_ZIP_STORED, _ZIP_DEFLATED):
        # bzip2 and LZMA decompress without an output bound in zipfile, so a lying size could not be
        # stopped; 99 without its AES extra field is an encryption we do not know.
        raise UnpackError(f"zip compression method {entry.compress_type} unsupported", _UNSUPPORTED_COMPRESSION)
    if encrypted and getattr(entry, "wz_aes_version", None) is None:
        warnings = (ZIPCRYPTO_WARNING,)
    inner = _open(_read_entry(archive, entry, password), password, inside_archive=True)
    return Opened(inner.data, inner.kind, warnings + inner.warnings, encrypted or inner.encrypted)


def _is_junk(entry: pyzipper.ZipInfo) -> bool:
    """Folders, macOS resource forks, Windows thumbnails and Excel's lock files zipped by accident."""
    path = entry.filename.replace("\\", "/")
    base = path.rsplit("/", 1)[-1].lower()
    return entry.is_dir() or path.startswith("__MACOSX/") or base in _JUNK_NAMES or base.startswith(("._", "~$"))


def _read_entry(archive: pyzipper.AESZipFile, entry: pyzipper.ZipInfo, password: str | None) -> bytes:
    """Decompress one entry, counting the real output rather than trusting the size its header declares."""
    # zipfile stops at the declared size and checks the CRC there, so a header that understates the size
    # would pass as merely damaged. Declare twice the limit instead (we stop reading one chunk past the
    # limit, well before that) so what actually comes out is what gets judged.
    capped = copy.copy(entry)
    capped.file_size = 2 * MAX_FILE_BYTES
    encrypted = bool(entry.flag_bits & _ZIP_ENCRYPTED)
    if encrypted and password is None:
        raise PasswordMissing("zip is password protected and no password is configured", _NO_PASSWORD_ZIP)
    candidates: list[bytes | None] = _password_bytes(password) if encrypted and password else [None]
    for pwd in candidates:
        output = bytearray()
        try:
            with archive.open(capped, pwd=pwd) as stream:
                while chunk := stream.read(_CHUNK):
                    output += chunk
                    if len(output) > MAX_FILE_BYTES:
                        raise HostileFile("zip entry expands past the size limit", _HOSTILE)
        except HostileFile:
            raise
        except RuntimeError:  # zipfile's "Bad password for file <name>": try the password's other encodings
            if pwd is None:
                raise UnpackError("zip entry cannot be read", _DAMAGED_ZIP) from None
            continue
        except Exception:  # BadZipFile (CRC, HMAC), zlib.error, EOFError, and zipfile refusing a method it lacks
            advice = _PASSWORD_OR_DAMAGED_ZIP if pwd is not None else _DAMAGED_ZIP
            raise UnpackError("zip entry failed to decompress or its check failed", advice) from None
        if len(output) != entry.file_size:
            raise UnpackError("zip entry size differs from its header", _DAMAGED_ZIP)
        return bytes(output)
    raise UnpackError("password did not open the zip", _WRONG_PASSWORD_ZIP)


def _password_bytes(password: str) -> list[bytes | None]:
    """The password as 7-Zip and WinZip (UTF-8) or older Windows tools (ANSI, OEM) would have encoded it."""
    found: list[bytes | None] = []
    for encoding in ("utf-8", "cp1252", "cp437"):
        try:
            encoded = password.encode(encoding)
        except UnicodeEncodeError:
            continue
        if encoded not in found:
            found.append(encoded)
    return found
