"""Build the golden intake messages: one .eml per way providers send returns, and per way it goes wrong.

Run by hand from the repository: `python tests/data/messages/make.py`. It

1. creates four throwaway OpenPGP keys ONCE into keys/ (the gateway's, for ldor@example.org; the
   college's; the signing academy's; an unrelated person's), or reuses them when keys/ holds them;
2. writes one <name>.eml per form and per negative case, made with the real tools providers' software
   uses (the gpg command, msoffcrypto-tool, pyzipper, the `zip -e` command, the email package);
3. writes expected.json: for each message, what the issue ("Intake") says must happen to it.

The expectations are reasoned from the issue text by hand, not taken from running the gateway.
Ciphertext is random by nature, so the .eml files differ between runs; everything else (people,
workbooks, dates, Message-IDs, MIME boundaries) is fixed. The young people are invented (gateway.demo.sample)
and live at real postcodes of Islington E09000019, Camden E09000007 and Hackney E09000012.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from xml.sax.saxutils import escape

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

import pyzipper  # noqa: E402
from servers import export_public, gnupg_home, kill_agents, make_key  # noqa: E402

from gateway.demo.sample import (  # noqa: E402
    TABLE_HEADINGS,
    Person,
    people,
    reason_csv,
    with_changes,
    workbook,
)
from gateway.reference.postcodes import Directory  # noqa: E402

KEYS = HERE / "keys"
TODAY = date(2026, 11, 20)  # people are 16-18 on this day (sample.people)
SENT = datetime(2026, 11, 20, 9, 0, tzinfo=timezone.utc)
ZIP_TIME = (2026, 11, 20, 9, 0, 0)

GATEWAY = "ldor@example.org"
COLLEGE = "mis@example-college.example"
ACADEMY = "data@signing-academy.example"
STRANGER = "someone@elsewhere.example"
PASSWORD = "Ldor-Test-Password-1"
WRONG_PASSWORD = "Not-The-Password-2"
ISLINGTON, CAMDEN, HACKNEY = "E09000019", "E09000007", "E09000012"
RECIPIENT = {ISLINGTON: "ldor@islington.example", CAMDEN: "ldor@camden.example", HACKNEY: "ldor@hackney.example"}

XLSX_TYPE = ("application", "vnd.openxmlformats-officedocument.spreadsheetml.sheet")
XLSM_TYPE = ("application", "vnd.ms-excel.sheet.macroEnabled.12")
OCTET = ("application", "octet-stream")

# name: (real name, address) of each throwaway key; the file stem in keys/ is the name.
KEY_OWNERS = {
    "gateway": ("LDOR gateway", GATEWAY),
    "college": ("Example College MIS", COLLEGE),
    "academy": ("Signing Academy data team", ACADEMY),
    "unrelated": ("Unrelated Person", "someone@unrelated.example"),
}


# -- keys ----------------------------------------------------------------------------------------------
def _gpg(home: Path, *args: str, data: bytes | None = None) -> bytes:
    result = subprocess.run(
        ["gpg", "--batch", "--no-tty", "--homedir", str(home), "--trust-model", "always",
         "--pinentry-mode", "loopback", "--passphrase", "", *args],
        input=data, capture_output=True, timeout=60,
    )
    if result.returncode != 0:
        raise RuntimeError(f"gpg {' '.join(args)} failed: {result.stderr.decode(errors='replace')}")
    return result.stdout


def _fingerprint_of(home: Path, address: str) -> str:
    out = _gpg(home, "--with-colons", "--list-secret-keys", address).decode()
    return next(line.split(":")[9] for line in out.splitlines() if line.startswith("fpr:"))


def ensure_keys(home: Path) -> dict[str, str]:
    """Create the throwaway keys into keys/ the first time; afterwards import them. Name -> fingerprint."""
    KEYS.mkdir(exist_ok=True)
    fingerprints = {}
    for name, (real, address) in KEY_OWNERS.items():
        secret, public = KEYS / f"{name}.secret.asc", KEYS / f"{name}.public.asc"
        if secret.exists() and public.exists():
            _gpg(home, "--import", str(secret))
            fingerprints[name] = _fingerprint_of(home, address)
            continue
        fpr = make_key(home, real, address)
        secret.write_bytes(_gpg(home, "--armor", "--export-secret-keys", fpr))
        public.write_text(export_public(home, fpr))
        fingerprints[name] = fpr
    return fingerprints


@dataclass
class Crypto:
    """The gpg command on a keyring holding all four throwaway secret keys."""

    home: Path
    fpr: dict[str, str]

    def encrypt(self, data: bytes, to: str = "gateway", signer: str | None = None, armour: bool = False,
                extra: tuple[str, ...] = ()) -> bytes:
        args = ["--encrypt", "--recipient", self.fpr[to], *extra]
        if signer:
            args += ["--sign", "--local-user", self.fpr[signer], "--digest-algo", "SHA256"]
        if armour:
            args.append("--armor")
        return _gpg(self.home, *args, data=data)

    def detach_sign(self, data: bytes, signer: str) -> bytes:
        return _gpg(self.home, "--detach-sign", "--armor", "--local-user", self.fpr[signer], "--digest-algo", "SHA256",
                    data=data)


# -- files ---------------------------------------------------------------------------------------------
def fixed_zip(data: bytes, rename_type: tuple[str, str] | None = None) -> bytes:
    """Rewrite an OOXML zip with fixed times (and optionally another main content type)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            content = source.read(info.filename)
            if info.filename == "docProps/core.xml":
                content = re.sub(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", b"2026-11-20T09:00:00Z", content)
            if rename_type and info.filename == "[Content_Types].xml":
                content = content.replace(rename_type[0].encode(), rename_type[1].encode())
            target.writestr(zipfile.ZipInfo(info.filename, ZIP_TIME), content, zipfile.ZIP_DEFLATED)
    return out.getvalue()


def xlsx(name: str, ukprn: str, crowd: list[Person]) -> bytes:
    return fixed_zip(workbook(name, ukprn, [p.cells() for p in crowd]))


def xlsm(name: str, ukprn: str, crowd: list[Person]) -> bytes:
    """A macro-enabled workbook: the same package with the xlsm main content type (what Excel saves)."""
    return fixed_zip(workbook(name, ukprn, [p.cells() for p in crowd]), (
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml",
        "application/vnd.ms-excel.sheet.macroEnabled.main+xml",
    ))


def ods(name: str, ukprn: str, crowd: list[Person]) -> bytes:
    """A minimal valid OpenDocument spreadsheet, written by hand (no ODS writer is installed)."""
    header = [["Provider Name", name], ["Provider Number", ukprn], ["Contact Name", "MIS Team"],
              ["Tel", "020 7946 0000"], ["e-mail", "mis@example-college.example"], [], [], list(TABLE_HEADINGS)]
    rows = header + [p.cells() for p in crowd]

    def cell(value: object) -> str:
        if value in (None, ""):
            return "<table:table-cell/>"
        if isinstance(value, date):
            return (f'<table:table-cell office:value-type="date" office:date-value="{value.isoformat()}">'
                    f"<text:p>{value:%d/%m/%Y}</text:p></table:table-cell>")
        return f'<table:table-cell office:value-type="string"><text:p>{escape(str(value))}</text:p></table:table-cell>'

    def table(title: str, cells: list[list[object]]) -> str:
        body = "".join("<table:table-row>" + "".join(cell(v) for v in row) + "</table:table-row>" if row
                       else '<table:table-row><table:table-cell/></table:table-row>' for row in cells)
        return f'<table:table table:name="{title}">{body}</table:table>'

    ns = ('xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
          'xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0" '
          'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0"')
    content = (f'<?xml version="1.0" encoding="UTF-8"?>\n<office:document-content {ns} office:version="1.2">'
               "<office:body><office:spreadsheet>"
               + table("Instructions", [["Complete the Return sheet. One row per young person. Tick one reason per row."]])
               + table("Return", rows)
               + "</office:spreadsheet></office:body></office:document-content>")
    manifest = ('<?xml version="1.0" encoding="UTF-8"?>\n'
                '<manifest:manifest xmlns:manifest="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0" manifest:version="1.2">'
                '<manifest:file-entry manifest:full-path="/" manifest:version="1.2" '
                'manifest:media-type="application/vnd.oasis.opendocument.spreadsheet"/>'
                '<manifest:file-entry manifest:full-path="content.xml" manifest:media-type="text/xml"/>'
                "</manifest:manifest>")
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as book:
        # The mimetype entry comes first and is stored, as ODF requires.
        book.writestr(zipfile.ZipInfo("mimetype", ZIP_TIME), "application/vnd.oasis.opendocument.spreadsheet",
                      zipfile.ZIP_STORED)
        book.writestr(zipfile.ZipInfo("content.xml", ZIP_TIME), content, zipfile.ZIP_DEFLATED)
        book.writestr(zipfile.ZipInfo("META-INF/manifest.xml", ZIP_TIME), manifest, zipfile.ZIP_DEFLATED)
    return out.getvalue()


def protected_xlsx(plain: bytes, password: str = PASSWORD) -> bytes:
    """Excel's Agile encryption, as msoffcrypto-tool makes it."""
    from msoffcrypto.format.ooxml import OOXMLFile

    out = io.BytesIO()
    OOXMLFile(io.BytesIO(plain)).encrypt(password, out)
    return out.getvalue()


def aes_zip(members: list[tuple[str, bytes]], password: str = PASSWORD) -> bytes:
    out = io.BytesIO()
    with pyzipper.AESZipFile(out, "w", compression=pyzipper.ZIP_DEFLATED, encryption=pyzipper.WZ_AES) as archive:
        archive.setpassword(password.encode())
        for name, data in members:
            info = archive.zipinfo_cls(name, ZIP_TIME)
            info.compress_type = pyzipper.ZIP_DEFLATED
            archive.writestr(info, data)
    return out.getvalue()


def zipcrypto_zip(name: str, data: bytes, password: str = PASSWORD) -> bytes:
    """Old ZipCrypto ("zip -e"), as Windows' and Info-ZIP's tools make it."""
    if not shutil.which("zip"):
        raise SystemExit("the zip command is needed: apt-get install -y zip")
    with tempfile.TemporaryDirectory() as folder:
        member = Path(folder) / name
        member.write_bytes(data)
        subprocess.run(["touch", "-d", "2026-11-20 09:00:00", str(member)], check=True)
        subprocess.run(["zip", "-q", "-X", "-e", "-P", password, "out.zip", name], cwd=folder, check=True,
                       capture_output=True)
        return (Path(folder) / "out.zip").read_bytes()


def csv_bytes(crowd: list[Person], encoding: str) -> bytes:
    text = reason_csv(crowd).decode("utf-8")
    if encoding == "utf-8-bom":
        return b"\xef\xbb\xbf" + text.encode("utf-8")
    return text.encode(encoding)


# -- messages ------------------------------------------------------------------------------------------
class Mail:
    """Builds one message: fixed Date, Message-ID and MIME boundaries, CRLF line ends (as on the wire)."""

    def __init__(self, slug: str, index: int) -> None:
        self.slug = slug
        self.when = SENT + timedelta(minutes=index)

    def headers(self, message: EmailMessage, sender: str, subject: str, display: str = "MIS Team") -> EmailMessage:
        message["From"] = f"{display} <{sender}>"
        message["To"] = f"LDOR secure mailbox <{GATEWAY}>"
        message["Subject"] = subject
        message["Date"] = format_datetime(self.when)
        message["Message-ID"] = f"<{self.slug}@{sender.split('@')[1]}>"
        return message

    def boundaries(self, message: EmailMessage) -> EmailMessage:
        for number, part in enumerate(p for p in message.walk() if p.is_multipart()):
            part.set_boundary(f"----ldor-{self.slug}-{number}")
        return message

    def plain(self, sender: str, subject: str, note: str, attachments: list[tuple[str, bytes, tuple[str, str]]],
              display: str = "MIS Team") -> bytes:
        """An ordinary message (Outlook with Kleopatra, or any client): a note and files attached."""
        message = self.headers(EmailMessage(), sender, subject, display)
        message.set_content(note)
        for name, data, (maintype, subtype) in attachments:
            message.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
        return self.boundaries(message).as_bytes(policy=policy.SMTP)

    def entity(self, note: str, attachments: list[tuple[str, bytes, tuple[str, str]]], sender: str = "",
               subject: str = "") -> EmailMessage:
        """The inner MIME entity Thunderbird encrypts: multipart/mixed, text then attachments."""
        inner = EmailMessage()
        if sender:  # Thunderbird's "protected headers" repeat From/To/Subject inside the encryption
            inner["From"] = f"MIS Team <{sender}>"
            inner["To"] = f"LDOR secure mailbox <{GATEWAY}>"
            inner["Subject"] = subject
        inner.set_content(note)
        for name, data, (maintype, subtype) in attachments:
            inner.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
        if sender:
            inner.set_param("protected-headers", "v1")
        for number, part in enumerate(p for p in inner.walk() if p.is_multipart()):
            part.set_boundary(f"----inner-{self.slug}-{number}")
        return inner

    def pgp_mime(self, sender: str, subject: str, armoured: bytes) -> bytes:
        """RFC 3156 multipart/encrypted as Thunderbird writes it."""
        head = self.headers(EmailMessage(), sender, subject)
        boundary = f"----enc-{self.slug}"
        lines = [f"{k}: {v}" for k, v in head.items()] + [
            "MIME-Version: 1.0",
            f'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted"; boundary="{boundary}"',
            "",
            "This is an OpenPGP/MIME encrypted message (RFC 4880 and 3156)",
            f"--{boundary}",
            "Content-Type: application/pgp-encrypted",
            "Content-Description: PGP/MIME version identification",
            "",
            "Version: 1",
            "",
            f"--{boundary}",
            'Content-Type: application/octet-stream; name="encrypted.asc"',
            "Content-Description: OpenPGP encrypted message",
            'Content-Disposition: inline; filename="encrypted.asc"',
            "",
            *armoured.decode("ascii").replace("\r\n", "\n").rstrip("\n").split("\n"),
            "",
            f"--{boundary}--",
            "",
        ]
        return "\r\n".join(lines).encode("ascii")

    def signed_entity(self, first: bytes, signature: bytes) -> bytes:
        """RFC 3156 section 5 multipart/signed around `first` (exact bytes, CRLF), as Thunderbird nests it."""
        boundary = f"----sig-{self.slug}"
        sig = signature.decode("ascii").replace("\r\n", "\n").rstrip("\n").replace("\n", "\r\n")
        return (
            f'Content-Type: multipart/signed; micalg=pgp-sha256;\r\n protocol="application/pgp-signature";\r\n'
            f' boundary="{boundary}"\r\n\r\n'
            "This is an OpenPGP/MIME signed message (RFC 4880 and 3156)\r\n"
            f"--{boundary}\r\n"
        ).encode() + first + (
            f"\r\n--{boundary}\r\n"
            'Content-Type: application/pgp-signature; name="OpenPGP_signature.asc"\r\n'
            "Content-Description: OpenPGP digital signature\r\n"
            'Content-Disposition: attachment; filename="OpenPGP_signature.asc"\r\n\r\n'
            f"{sig}\r\n\r\n--{boundary}--\r\n"
        ).encode()


def crlf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


# -- expectations --------------------------------------------------------------------------------------
@dataclass
class Expected:
    form: str
    folder: str = "Processed"
    receipts: list[dict] = field(default_factory=list)
    admin_alert: bool = False
    packages: dict[str, int] = field(default_factory=dict)  # recipient address -> rows it must receive
    personal: list[str] = field(default_factory=list)


def accepted(crowd: list[Person], rules: tuple[str, ...] = ()) -> dict:
    return {"kind": "receipt", "rows_forwarded": len(crowd), "rules": list(rules), "phrases": []}


def refused(phrases: tuple[str, ...] = (), rules: tuple[str, ...] = ()) -> dict:
    return {"kind": "rejection", "rows_forwarded": 0, "rules": list(rules), "phrases": list(phrases)}


def personal_values(crowd: list[Person]) -> list[str]:
    found = []
    for p in crowd:
        found += [p.family_name, p.uln, p.postcode, p.postcode.replace(" ", ""), p.email]
    return sorted({s for s in found if len(s) > 3})


def packages_for(crowds: list[list[Person]], directory: Directory) -> dict[str, int]:
    counts: dict[str, int] = {}
    for crowd in crowds:
        for p in crowd:
            address = RECIPIENT[directory.authority(p.postcode)]
            counts[address] = counts.get(address, 0) + 1
    return dict(sorted(counts.items()))


# -- the golden set ------------------------------------------------------------------------------------
class Golden:
    def __init__(self, crypto: Crypto, directory: Directory) -> None:
        self.crypto = crypto
        self.directory = directory
        self.messages: dict[str, tuple[bytes, Expected]] = {}
        self.seed = 100

    def crowd(self, islington: int = 2, camden: int = 1, hackney: int = 1) -> list[Person]:
        self.seed += 1
        return people(self.directory, {ISLINGTON: islington, CAMDEN: camden, HACKNEY: hackney}, seed=self.seed,
                      today=TODAY)

    def mail(self, slug: str) -> Mail:
        return Mail(slug, len(self.messages))

    def add(self, slug: str, raw: bytes, expected: Expected, crowds: list[list[Person]], forwarded: bool) -> None:
        expected.personal = sorted({v for c in crowds for v in personal_values(c)})
        if forwarded:
            expected.packages = packages_for(crowds, self.directory)
        self.messages[slug] = (crlf(raw), expected)

    # -- 1. PGP -------------------------------------------------------------------------------------
    def pgp_forms(self) -> None:
        c = self.crypto

        crowd = self.crowd(2, 2, 1)
        mail = self.mail("pgpmime-encrypted")
        inner = mail.entity("Please find our November return attached.\n",
                            [("LDOR November.xlsx", xlsx("Example College", "10001234", crowd), XLSX_TYPE)],
                            COLLEGE, "LDOR return November")
        raw = mail.pgp_mime(COLLEGE, "...", c.encrypt(inner.as_bytes(policy=policy.SMTP), armour=True))
        self.add("pgpmime_encrypted", raw, Expected(
            "PGP/MIME (RFC 3156) as Thunderbird makes it: multipart/encrypted holding multipart/mixed with a text part and the xlsx",
            receipts=[accepted(crowd)]), [crowd], True)

        crowd = self.crowd(1, 2, 1)
        mail = self.mail("pgpmime-signed-combined")
        inner = mail.entity("Our return is attached.\n",
                            [("LDOR return.xlsx", xlsx("Signing Academy", "10005678", crowd), XLSX_TYPE)],
                            ACADEMY, "LDOR return")
        raw = mail.pgp_mime(ACADEMY, "...", c.encrypt(inner.as_bytes(policy=policy.SMTP), signer="academy", armour=True))
        self.add("pgpmime_signed_combined", raw, Expected(
            "PGP/MIME signed and encrypted in one pass (gpg --sign --encrypt) by the academy's registered key",
            receipts=[accepted(crowd)]), [crowd], True)

        crowd = self.crowd(2, 1, 2)
        mail = self.mail("pgpmime-signed-inner")
        first = mail.entity("Our return is attached.\n",
                            [("LDOR return.xlsx", xlsx("Signing Academy", "10005678", crowd), XLSX_TYPE)])
        first_bytes = first.as_bytes(policy=policy.SMTP)
        signed = mail.signed_entity(first_bytes, c.detach_sign(first_bytes, "academy"))
        raw = mail.pgp_mime(ACADEMY, "...", c.encrypt(signed, armour=True))
        self.add("pgpmime_signed_inner", raw, Expected(
            "PGP/MIME encrypted holding an RFC 3156 section 5 multipart/signed (detached signature over the first part's CRLF bytes) by the academy's key",
            receipts=[accepted(crowd)]), [crowd], True)

        crowd = self.crowd(2, 1, 1)
        mail = self.mail("pgpmime-bad-signature")
        first = mail.entity("Our return is attached.\n",
                            [("LDOR return.xlsx", xlsx("Signing Academy", "10005678", crowd), XLSX_TYPE)])
        first_bytes = first.as_bytes(policy=policy.SMTP)
        signature = c.detach_sign(first_bytes, "academy")
        altered = first_bytes.replace(b"Our return is attached.", b"Our return is attached!")
        assert altered != first_bytes
        raw = mail.pgp_mime(ACADEMY, "...", c.encrypt(mail.signed_entity(altered, signature), armour=True))
        self.add("pgpmime_bad_signature", raw, Expected(
            "PGP/MIME multipart/signed whose signed part was altered after signing: the signature does not verify",
            receipts=[refused(("signature",))]), [crowd], False)

        crowd = self.crowd(2, 1, 1)
        mail = self.mail("inline-pgp")
        note = c.encrypt(b"Hello,\r\n\r\nPlease find our return attached.\r\n\r\nMIS Team\r\n", armour=True)
        raw = mail.plain(COLLEGE, "LDOR return", note.decode("ascii"),
                         [("LDOR November.xlsx.pgp", c.encrypt(xlsx("Example College", "10001234", crowd)), OCTET)])
        self.add("inline_pgp", raw, Expected(
            "GpgOL inline mode: the text/plain body is an armoured PGP message of the covering note, the return attached as a binary .pgp file",
            receipts=[accepted(crowd)]), [crowd], True)

        crowd = self.crowd(2, 2, 2)
        mail = self.mail("gpg-binary")
        raw = mail.plain(COLLEGE, "LDOR return", "Please find our return attached.\n",
                         [("LDOR November.xlsx.gpg", c.encrypt(xlsx("Example College", "10001234", crowd)), OCTET)])
        self.add("gpg_binary", raw, Expected("a binary .gpg attachment (Kleopatra), unsigned",
                                             receipts=[accepted(crowd)]), [crowd], True)

        crowd = self.crowd(1, 1, 2)
        mail = self.mail("pgp-binary-signed")
        raw = mail.plain(ACADEMY, "LDOR return", "Please find our return attached.\n",
                         [("return.xlsx.pgp", c.encrypt(xlsx("Signing Academy", "10005678", crowd), signer="academy"), OCTET)],
                         display="Data Team")
        self.add("pgp_binary_signed", raw, Expected(
            "a binary .pgp attachment signed (inside the encryption) by the academy's registered key",
            receipts=[accepted(crowd)]), [crowd], True)

        crowd = self.crowd(3, 1, 1)
        mail = self.mail("asc-armoured")
        raw = mail.plain(COLLEGE, "LDOR return", "Please find our return attached.\n",
                         [("LDOR November.xlsx.asc", c.encrypt(xlsx("Example College", "10001234", crowd), armour=True), OCTET)])
        self.add("asc_armoured", raw, Expected("an armoured .asc attachment, unsigned",
                                               receipts=[accepted(crowd)]), [crowd], True)

        crowd = self.crowd(1, 3, 1)
        mail = self.mail("asc-armoured-signed")
        raw = mail.plain(COLLEGE, "LDOR return", "Please find our return attached.\n",
                         [("LDOR November.xlsx.asc",
                           c.encrypt(xlsx("Example College", "10001234", crowd), signer="college", armour=True),
                           ("text", "plain"))])
        self.add("asc_armoured_signed", raw, Expected(
            "an armoured .asc attachment (sent as text/plain) signed by the college's key; the college has no signing_keys, so any signature is fine",
            receipts=[accepted(crowd)]), [crowd], True)

        one, two, three = self.crowd(2, 1, 0), self.crowd(1, 2, 1), self.crowd(0, 1, 4)
        mail = self.mail("several-returns")
        raw = mail.plain(COLLEGE, "LDOR returns: main site, annexe, evening", "Three returns attached.\n", [
            ("main site.xlsx.gpg", c.encrypt(xlsx("Example College", "10001234", one)), OCTET),
            ("annexe.csv.asc", c.encrypt(csv_bytes(two, "utf-8"), armour=True), OCTET),
            ("evening.xlsx", protected_xlsx(xlsx("Example College", "10001234", three)), XLSX_TYPE),
        ])
        self.add("several_returns", raw, Expected(
            "three returns in one message (.gpg xlsx, .asc csv, password-protected xlsx): each handled and receipted separately",
            receipts=[accepted(one), accepted(two), accepted(three)]), [one, two, three], True)

        crowd = self.crowd(2, 1, 1)
        mail = self.mail("forwarded")
        original = EmailMessage()
        Mail("forwarded-original", 0).headers(original, COLLEGE, "LDOR return", "MIS Team")
        original.set_content("Please find our return attached.\n")
        original.add_attachment(c.encrypt(xlsx("Example College", "10001234", crowd)), maintype="application",
                                subtype="octet-stream", filename="LDOR November.xlsx.gpg")
        original.set_boundary("----ldor-forwarded-original")
        outer = mail.headers(EmailMessage(), COLLEGE, "Fwd: LDOR return")
        outer.set_content("Forwarding the return my colleague sent to the wrong place.\n")
        outer.add_attachment(original)
        raw = mail.boundaries(outer).as_bytes(policy=policy.SMTP)
        self.add("forwarded_rfc822", raw, Expected(
            "a return inside an attached forwarded message (message/rfc822)",
            receipts=[accepted(crowd)]), [crowd], True)

    # -- 2. passwords --------------------------------------------------------------------------------
    def password_forms(self) -> None:
        crowd = self.crowd(2, 1, 1)
        raw = self.mail("protected-xlsx").plain(COLLEGE, "LDOR return", "Password as agreed.\n",
                                                [("LDOR November.xlsx", protected_xlsx(xlsx("Example College", "10001234", crowd)), XLSX_TYPE)])
        self.add("protected_xlsx", raw, Expected("a password-protected xlsx (Excel Agile encryption, msoffcrypto-tool)",
                                                 receipts=[accepted(crowd)]), [crowd], True)

        crowd = self.crowd(1, 2, 1)
        raw = self.mail("aes-zip-xlsx").plain(COLLEGE, "LDOR return", "Zip password as agreed.\n", [
            ("LDOR November.zip", aes_zip([("LDOR November.xlsx", xlsx("Example College", "10001234", crowd))]),
             ("application", "x-zip-compressed"))])
        self.add("aes_zip_xlsx", raw, Expected("an AES-256 zip (WinZip AES, pyzipper) holding an xlsx",
                                               receipts=[accepted(crowd)]), [crowd], True)

        crowd = self.crowd(1, 1, 2)
        raw = self.mail("aes-zip-csv").plain(COLLEGE, "LDOR return", "Zip password as agreed.\n", [
            ("LDOR November.zip", aes_zip([("LDOR November.csv", csv_bytes(crowd, "utf-8"))]), ("application", "zip"))])
        self.add("aes_zip_csv", raw, Expected("an AES-256 zip holding a csv", receipts=[accepted(crowd)]), [crowd], True)

        crowd = self.crowd(2, 2, 1)
        raw = self.mail("zipcrypto").plain(COLLEGE, "LDOR return", "Zip password as agreed.\n", [
            ("LDOR November.zip", zipcrypto_zip("LDOR November.xlsx", xlsx("Example College", "10001234", crowd)),
             ("application", "zip"))])
        self.add("zipcrypto_zip", raw, Expected(
            "an old ZipCrypto zip (zip -e): accepted with a warning, rule File_02",
            receipts=[accepted(crowd, ("File_02",))]), [crowd], True)

        crowd = self.crowd(2, 1, 1)
        raw = self.mail("wrong-password-xlsx").plain(COLLEGE, "LDOR return", "Password as agreed.\n", [
            ("LDOR November.xlsx", protected_xlsx(xlsx("Example College", "10001234", crowd), WRONG_PASSWORD), XLSX_TYPE)])
        self.add("wrong_password_xlsx", raw, Expected("a protected xlsx with a password other than the agreed one",
                                                      receipts=[refused(("password",))]), [crowd], False)

        crowd = self.crowd(1, 1, 1)
        raw = self.mail("wrong-password-zip").plain(COLLEGE, "LDOR return", "Zip password as agreed.\n", [
            ("LDOR November.zip", aes_zip([("LDOR November.xlsx", xlsx("Example College", "10001234", crowd))], WRONG_PASSWORD),
             ("application", "zip"))])
        self.add("wrong_password_zip", raw, Expected("an AES zip with a password other than the agreed one",
                                                     receipts=[refused(("password",))]), [crowd], False)

        crowd = self.crowd(2, 1, 1)
        whole = aes_zip([("LDOR November.xlsx", xlsx("Example College", "10001234", crowd))])
        raw = self.mail("corrupt-zip").plain(COLLEGE, "LDOR return", "Zip password as agreed.\n", [
            ("LDOR November.zip", whole[: len(whole) * 6 // 10], ("application", "zip"))])
        self.add("corrupt_zip", raw, Expected("an AES zip cut short in transfer (its last 40% missing)",
                                              receipts=[refused(("zip",))]), [crowd], False)

    # -- 3. sheet formats and attachment names ------------------------------------------------------
    def sheet_forms(self) -> None:
        c = self.crypto
        accents = ["Müller", "Ó Súilleabháin", "Nuñez-García", "Françoise"]

        def accented(crowd: list[Person]) -> list[Person]:
            return [with_changes(p, family_name=accents[i % len(accents)] + f"-{p.family_name}") for i, p in enumerate(crowd)]

        for slug, name, make, form in (
            ("xlsm_in_pgp", "return.xlsm.gpg", lambda cr: xlsm("Example College", "10001234", cr), "a macro-enabled .xlsm inside PGP"),
            ("ods_in_pgp", "return.ods.gpg", lambda cr: ods("Example College", "10001234", cr), "an OpenDocument .ods (LibreOffice) inside PGP"),
            ("csv_utf8_in_pgp", "return.csv.gpg", lambda cr: csv_bytes(cr, "utf-8"), "a csv in UTF-8 (accented names) inside PGP"),
            ("csv_utf8_bom_in_pgp", "return.csv.pgp", lambda cr: csv_bytes(cr, "utf-8-bom"), "a csv in UTF-8 with a byte-order mark (Excel's 'CSV UTF-8') inside PGP"),
            ("csv_cp1252_in_pgp", "return.csv.gpg", lambda cr: csv_bytes(cr, "cp1252"), "a csv in Windows-1252 (Excel's plain 'CSV', accented names) inside PGP"),
        ):
            crowd = self.crowd(2, 1, 1)
            if slug.startswith("csv"):
                crowd = accented(crowd)
            raw = self.mail(slug).plain(COLLEGE, "LDOR return", "Please find our return attached.\n",
                                        [(name, c.encrypt(make(crowd)), OCTET)])
            self.add(slug, raw, Expected(form, receipts=[accepted(crowd)]), [crowd], True)

        # RFC 2231: the email package writes filename*=utf-8''... for a name that is not ASCII.
        crowd = self.crowd(1, 1, 1)
        raw = self.mail("rfc2231-name").plain(COLLEGE, "LDOR return", "Please find our return attached.\n",
                                              [("Retour élèves – novembre.xlsx.gpg", c.encrypt(xlsx("Example College", "10001234", crowd)), OCTET)])
        assert b"filename*=" in raw, "the email package did not use RFC 2231"
        self.add("rfc2231_name", raw, Expected("an attachment name with accents in RFC 2231 form (filename*=utf-8''...)",
                                               receipts=[accepted(crowd)]), [crowd], True)

        # Encoded words in quoted parameters: not allowed by RFC 2047, but Outlook and others write them.
        crowd = self.crowd(2, 1, 1)
        mail = self.mail("encoded-word-name")
        message = mail.headers(EmailMessage(), COLLEGE, "LDOR return")
        message.set_content("Please find our return attached.\n")
        message.add_attachment(c.encrypt(xlsx("Example College", "10001234", crowd)), maintype="application",
                               subtype="octet-stream", filename="placeholder.gpg")
        raw = mail.boundaries(message).as_bytes(policy=policy.SMTP)
        word = "=?UTF-8?B?UmV0b3VyIMOpbMOodmVzIG5vdmVtYnJlLnhsc3guZ3Bn?="  # "Retour élèves novembre.xlsx.gpg"
        raw = raw.replace(b'Content-Type: application/octet-stream\r\n',
                          f'Content-Type: application/octet-stream; name="{word}"\r\n'.encode())
        raw = raw.replace(b'filename="placeholder.gpg"', f'filename="{word}"'.encode())
        assert raw.count(word.encode()) == 2
        self.add("encoded_word_name", raw, Expected("an attachment name with accents as an RFC 2047 encoded word in quotes (Outlook)",
                                                    receipts=[accepted(crowd)]), [crowd], True)

    # -- 4, 5. decryption safety, sender trust, negative cases --------------------------------------
    def negative_forms(self) -> None:
        c = self.crypto
        college_xlsx = lambda crowd: xlsx("Example College", "10001234", crowd)  # noqa: E731
        academy_xlsx = lambda crowd: xlsx("Signing Academy", "10005678", crowd)  # noqa: E731

        def one(slug: str, sender: str, name: str, data: bytes, expected: Expected, crowd: list[Person],
                kind: tuple[str, str] = OCTET) -> None:
            raw = self.mail(slug.replace("_", "-")).plain(sender, "LDOR return", "Please find our return attached.\n",
                                                          [(name, data, kind)])
            self.add(slug, raw, expected, [crowd], False)

        crowd = self.crowd()
        one("wrong_key", COLLEGE, "return.xlsx.gpg", c.encrypt(college_xlsx(crowd), to="unrelated"),
            Expected("encrypted to another key than the gateway's", receipts=[refused(("{gateway_fingerprint}",))]), crowd)

        crowd = self.crowd()
        one("no_mdc", COLLEGE, "return.xlsx.gpg", c.encrypt(college_xlsx(crowd), extra=("--rfc2440",)),
            Expected("encrypted without integrity protection (gpg --rfc2440, no MDC)",
                     receipts=[refused(("integrity",))]), crowd)

        crowd = self.crowd()
        raw = self.mail("two-from").plain(COLLEGE, "LDOR return", "Please find our return attached.\n",
                                          [("return.xlsx.gpg", c.encrypt(college_xlsx(crowd)), OCTET)])
        first_from = raw.index(b"From: ")
        raw = raw[:first_from] + b"From: Someone Else <someone@elsewhere.example>\r\n" + raw[first_from:]
        self.add("two_from", raw, Expected("two From headers", folder="Quarantine", admin_alert=True), [crowd], False)

        crowd = self.crowd()
        one("signed_by_other_provider", ACADEMY, "return.xlsx.gpg", c.encrypt(academy_xlsx(crowd), signer="college"),
            Expected("the academy (signing_keys set) sends a file signed by the college's key, another provider's",
                     receipts=[refused(("signing key",))]), crowd)

        crowd = self.crowd()
        one("signed_by_unrelated_key", ACADEMY, "return.xlsx.gpg", c.encrypt(academy_xlsx(crowd), signer="unrelated"),
            Expected("the academy (signing_keys set) sends a file signed by a key not in keys/ at all",
                     receipts=[refused(("signing key",))]), crowd)

        crowd = self.crowd()
        one("unsigned_but_required", ACADEMY, "return.xlsx.gpg", c.encrypt(academy_xlsx(crowd)),
            Expected("the academy (require_signature = true) sends an unsigned file from its registered address",
                     receipts=[refused(("sign",))]), crowd)

        crowd = self.crowd()
        one("provider_mismatch", COLLEGE, "return.xlsx.gpg", c.encrypt(xlsx("Example College", "10005678", crowd)),
            Expected("the college sends a return whose header block names the academy's UKPRN",
                     receipts=[refused(rules=("Provider_03",))]), crowd)

        crowd = self.crowd()
        one("unknown_sender", STRANGER, "return.xlsx.gpg", c.encrypt(college_xlsx(crowd)),
            Expected("a well-encrypted return from an address no provider registered", folder="Quarantine", admin_alert=True),
            crowd)

        crowd = self.crowd()
        one("empty_attachment", COLLEGE, "return.xlsx.gpg", b"",
            Expected("an empty .gpg attachment", receipts=[refused(("empty",))]), crowd)

        crowd = self.crowd()
        one("clear_xlsx", COLLEGE, "return.xlsx", college_xlsx(crowd),
            Expected("an xlsx attached without any encryption", receipts=[refused(("encrypt",))]), crowd, XLSX_TYPE)

    # -- output -------------------------------------------------------------------------------------
    def write(self) -> None:
        for old in HERE.glob("*.eml"):
            old.unlink()
        expected = {}
        for slug, (raw, exp) in self.messages.items():
            (HERE / f"{slug}.eml").write_bytes(raw)
            expected[f"{slug}.eml"] = {
                "form": exp.form, "folder": exp.folder, "receipts": exp.receipts, "admin_alert": exp.admin_alert,
                "packages": exp.packages, "personal": exp.personal,
            }
        document = {
            "about": "What the issue 'Intake' says must happen to each golden message; see make.py.",
            "today": TODAY.isoformat(),
            "keys": {name: self.crypto.fpr[name] for name in KEY_OWNERS},
            "providers": {
                "10001234": {"name": "Example College", "senders": [COLLEGE], "host_la": ISLINGTON,
                             "password_env": "LDOR_PW_10001234", "password": PASSWORD},
                "10005678": {"name": "Signing Academy", "senders": [ACADEMY], "host_la": CAMDEN,
                             "signing_keys": [self.crypto.fpr["academy"]], "require_signature": True},
            },
            "messages": expected,
        }
        (HERE / "expected.json").write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")


def main() -> None:
    directory = Directory()
    with tempfile.TemporaryDirectory(prefix="ldor-make-") as folder, gnupg_home(Path(folder) / "gnupg") as home:
        try:
            fingerprints = ensure_keys(home)
            golden = Golden(Crypto(home, fingerprints), directory)
            golden.pgp_forms()
            golden.password_forms()
            golden.sheet_forms()
            golden.negative_forms()
            golden.write()
        finally:
            kill_agents(home)
    print(f"wrote {len(golden.messages)} messages and expected.json to {HERE}")


if __name__ == "__main__":
    main()
