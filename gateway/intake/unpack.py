"""From a raw message to decrypted attachments and the sender's provider.

Providers send returns the way their tools make them: .gpg/.pgp/.asc files (Kleopatra), PGP/MIME
mail (Thunderbird, GpgOL; RFC 3156), inline PGP, password-protected workbooks, AES zips, Outlook's
winmail.dat, or a forwarded message holding any of these. Each return found becomes an Attachment,
decrypted in memory. File names only help recognise files: they are never logged, stored or
repeated in a clear receipt.
"""

from __future__ import annotations

import email
import email.policy
import email.utils
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from email.message import EmailMessage, MIMEPart

from .. import isolate
from ..errors import (
    DecryptedTooLarge,
    HostileFile,
    KeyringError,
    NotOpenPGP,
    OwnKeyLocked,
    SenderNotRegistered,
    SenderUnreadable,
    UnpackError,
)
from ..keys import NO_SIGNATURE, Keyring, Signature
from ..mail import decoded_body
from ..rules import Provider, Rules
from .containers import MAX_FILE_BYTES, SHEET_SUFFIXES, open_file
from .tnef import tnef_attachments

ENCRYPTED_SUFFIXES = (".gpg", ".pgp", ".asc")
ATTACHED_SUFFIXES = SHEET_SUFFIXES + (".zip",)  # what an attachment's name may end with to be taken as a return
_ARMOUR = re.compile(rb"-----BEGIN PGP MESSAGE-----.*?-----END PGP MESSAGE-----", re.DOTALL)
MAX_RETURNS_PER_MESSAGE = 20  # more files than this in one email is not a month's returns: one answer, nothing opened
# A PGP/MIME message carries its files base64-encoded inside the encrypted part (4/3 larger).
_MAX_PGP_MIME_BYTES = MAX_FILE_BYTES * 3 // 2
_TNEF_TYPES = ("application/ms-tnef", "application/vnd.ms-tnef")
_SPREADSHEET_TYPES = (
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", "application/vnd.ms-excel",
    "application/vnd.ms-excel.sheet.macroenabled.12", "application/vnd.oasis.opendocument.spreadsheet",
    "text/csv", "application/zip", "application/x-zip-compressed",
)


@dataclass(frozen=True)
class Attachment:
    """One return found in a message: its size and hash as received, and its plain bytes or why not."""

    index: int  # 1-based, in the order found
    size: int
    sha256: str  # of the bytes as received (ciphertext)
    data: bytes | None
    error: UnpackError | None = None
    signature: Signature = Signature()
    warnings: tuple[str, ...] = ()  # notes for the provider's receipt (e.g. weak zip encryption)
    inline: bool = False  # an inline-PGP message body: if it holds no table it was only a covering note

    @property
    def short_hash(self) -> str:
        return self.sha256[:12]

    @property
    def signer(self) -> str | None:
        return self.signature.signer

    @property
    def content_sha256(self) -> str:
        """Hash of the decrypted file: the same return sent again has the same one."""
        return hashlib.sha256(self.data or b"").hexdigest()

    @property
    def hostile(self) -> bool:
        return isinstance(self.error, HostileFile)


@dataclass(frozen=True)
class Unpacked:
    sender: str
    provider: Provider
    attachments: tuple[Attachment, ...]
    error: UnpackError | None = None  # the message as a whole holds no return to open


def sender_of(message: EmailMessage) -> str:
    """The single From address; anything else is refused (spoofing often hides in odd From headers)."""
    values = message.get_all("From") or []
    if len(values) != 1:
        raise SenderUnreadable(f"message has {len(values)} From headers")
    header = message["From"]
    addresses = email.utils.getaddresses([str(values[0])])
    if len(addresses) != 1 or "@" not in addresses[0][1] or header.defects or len(getattr(header, "addresses", ())) != 1:
        raise SenderUnreadable("the From header cannot be read as one address")
    return addresses[0][1].strip().lower()


def parse(raw: bytes) -> EmailMessage:
    return email.message_from_bytes(raw, policy=email.policy.default)


def unpack(raw: bytes, rules: Rules, keyring: Keyring, password: Callable[[Provider], str | None] = lambda _: None) -> Unpacked:
    """Identify the provider from the sender, then open every return the message carries."""
    message = parse(raw)
    sender = sender_of(message)
    provider = rules.provider_for_sender(sender)
    if provider is None:
        raise SenderNotRegistered("sender is not registered for any provider")
    if _count_files(message) > MAX_RETURNS_PER_MESSAGE:  # counted before any is decrypted
        return Unpacked(sender, provider, (), UnpackError("too many files in one message", _TOO_MANY))
    finder = _Finder(keyring, provider, password(provider))
    finder.entity(message, raw, Signature())
    found = finder.found
    if len(found) > MAX_RETURNS_PER_MESSAGE:  # files inside PGP/MIME or winmail.dat count too
        return Unpacked(sender, provider, (), UnpackError("too many files in one message", _TOO_MANY))
    if not found:
        advice = _CLEAR if finder.clear else NOTHING_ATTACHED
        return Unpacked(sender, provider, (), UnpackError("no encrypted return", advice))
    numbered = tuple(replace(a, index=i) for i, a in enumerate(found, 1))
    return Unpacked(sender, provider, numbered)


def _count_files(message: EmailMessage) -> int:
    """How many parts of the message would be opened as returns (PGP/MIME counts one until decrypted)."""
    count = 0
    for part in message.walk():
        if part.get_content_type() == "multipart/encrypted":
            count += 1
        elif not part.is_multipart() and _kind(part, b"") not in (None, "inline"):
            count += 1
    return count


def _kind(part: MIMEPart, data: bytes | None) -> str | None:
    """What a leaf part is to the gateway: "tnef", "pgp", "inline" (armoured text), "sheet" or None.

    `data` is the decoded payload, or b"" to judge by name and type alone (armour in the body is then not seen).
    """
    name = (part.get_filename() or "").strip().lower()
    kind = part.get_content_type()
    if kind in _TNEF_TYPES or name == "winmail.dat":
        return "tnef"
    if name.endswith(ENCRYPTED_SUFFIXES) or (kind != "text/plain" and data and _ARMOUR.search(data[:200] + data[-200:])):
        return "pgp"
    if kind == "text/plain" and not name and data and _ARMOUR.search(data):
        return "inline"
    if name.endswith(ATTACHED_SUFFIXES) or kind in _SPREADSHEET_TYPES:
        return "sheet"
    return None


_TOO_MANY = (
    f"Your email carried more than {MAX_RETURNS_PER_MESSAGE} files, more than the gateway accepts in one "
    "email, so none of them has been opened or forwarded. Please send each return in its own email (or at "
    f"most {MAX_RETURNS_PER_MESSAGE} in one), and send them again."
)
_TOO_LARGE_DECRYPTED = (
    f"The file decrypts to more than {MAX_FILE_BYTES // (1024 * 1024)} MB, more than the gateway accepts "
    "for one return, so it has not been opened or forwarded. Please check you attached the right file; "
    "if your return really is this large, split it into several files under "
    f"{MAX_FILE_BYTES // (1024 * 1024)} MB, save each as an Excel Workbook (.xlsx), encrypt and send each."
)
_CLEAR = (
    "Your return was attached without encryption, so we have not opened or forwarded it. Please "
    "encrypt the file with the gateway's public key (attached to this receipt), or protect it with the "
    "password agreed with the gateway's administrator, and send it again. Sending young people's "
    "details unencrypted may be a data incident under your own organisation's policy."
)
NOTHING_ATTACHED = (
    "We found no return attached to your email. Please attach the return encrypted with the gateway's "
    "public key (attached to this receipt) as a .gpg, .pgp or .asc file, or as a password-protected "
    "workbook or AES-encrypted zip if that is what was agreed."
)


@dataclass
class _Finder:
    """Walks one message's MIME tree and collects the returns in it."""

    keyring: Keyring
    provider: Provider
    password: str | None
    found: list[Attachment] = field(default_factory=list)
    clear: int = 0

    def entity(self, part: MIMEPart, raw: bytes | None, signature: Signature, protected: bool = False) -> None:
        """`raw` is the entity's exact bytes when known (needed to check a multipart/signed);
        `protected` says the entity came out of a PGP/MIME decryption, so its files need no more."""
        kind = part.get_content_type()
        if kind == "multipart/encrypted":
            self._pgp_mime(part, signature)
        elif kind == "multipart/signed" and raw is not None:
            self._signed(part, raw, signature, protected)
        elif part.is_multipart():
            for child in part.iter_parts():
                self.entity(child, None, signature, protected)
        else:
            self._leaf(part, signature, protected)

    def _pgp_mime(self, part: MIMEPart, signature: Signature) -> None:
        payloads = [p for p in part.iter_parts() if p.get_content_type() == "application/octet-stream"]
        data = decoded_body(payloads[0]) if payloads else b""
        plain = self._decrypt(data, limit=_MAX_PGP_MIME_BYTES)
        if plain is None:
            return
        inner, inner_signature = plain
        self.entity(parse(inner), inner, _stronger(inner_signature, signature), protected=True)

    def _signed(self, part: MIMEPart, raw: bytes, signature: Signature, protected: bool) -> None:
        """RFC 3156 multipart/signed: the first part, byte for byte, is what the signature covers."""
        children = list(part.iter_parts())
        boundary = part.get_boundary()
        signed_bytes = _first_part_bytes(raw, boundary) if boundary else None
        detached = decoded_body(children[1]) if len(children) > 1 else None
        if signed_bytes is not None and detached:
            signature = _stronger(self.keyring.verify_detached(signed_bytes, detached), signature)
        if children:
            self.entity(children[0], signed_bytes, signature, protected)

    def _leaf(self, part: MIMEPart, signature: Signature, protected: bool = False) -> None:
        name = (part.get_filename() or "").strip().lower()
        data = decoded_body(part)
        kind = _kind(part, data)
        if len(self.found) > MAX_RETURNS_PER_MESSAGE and kind is not None:
            return  # the message is answered as a whole (unpack); opening more only costs time
        if kind == "tnef":
            self._tnef(data, signature, protected)
        elif kind == "pgp":
            self._pgp_file(name, data, signature)
        elif kind == "inline":
            self._inline(data, signature)
        elif kind == "sheet":
            self._open(name, data, data, signature, protected)

    def _pgp_file(self, name: str, data: bytes, signature: Signature) -> None:
        if not data.strip():
            self._add(data, None, UnpackError("empty attachment", "The attached file was empty. Please attach the completed, encrypted return and send it again."))
            return
        plain = self._decrypt(data)
        if plain is None:
            return
        inner, inner_signature = plain
        self._open(name.rsplit(".", 1)[0], inner, data, _stronger(inner_signature, signature), protected=True)

    def _inline(self, data: bytes, signature: Signature) -> None:
        armour = _ARMOUR.search(data)
        if armour is None:  # _kind found one: not reached
            return
        block = armour.group(0)
        plain = self._decrypt(block, inline=True)
        if plain is not None:
            inner, inner_signature = plain
            self._add(block, inner, None, _stronger(inner_signature, signature), inline=True)

    def _tnef(self, data: bytes, signature: Signature, protected: bool) -> None:
        try:
            files = tnef_attachments(data)
        except UnpackError as error:
            self._add(data, None, error)
            return
        for inner_name, inner in files:
            carrier = EmailMessage()
            carrier.add_attachment(inner, maintype="application", subtype="octet-stream", filename=inner_name)
            for child in carrier.iter_attachments():
                self._leaf(child, signature, protected)

    def _open(self, name: str, data: bytes, received: bytes, signature: Signature, protected: bool) -> None:
        """Open a workbook, csv or zip; unless PGP already protected it, it must have been encrypted."""
        try:
            opened = isolate.run(open_file, name, data, self.password)
        except UnpackError as error:
            self._add(received, None, error)
            return
        if not protected and not opened.encrypted:
            self.clear += 1
            return
        self._add(received, opened.data, None, signature, warnings=opened.warnings)

    def _decrypt(self, data: bytes, inline: bool = False, limit: int = MAX_FILE_BYTES) -> tuple[bytes, Signature] | None:
        try:
            decrypted = self.keyring.decrypt(data, limit=limit)
        except DecryptedTooLarge:
            self._add(data, None, UnpackError("decrypted file over the size limit", _TOO_LARGE_DECRYPTED))
            return None
        except OwnKeyLocked:
            raise  # the gateway's fault, not the file's: the message waits (pipeline.handle)
        except KeyringError as failure:
            if not (inline and isinstance(failure, NotOpenPGP)):
                self._add(data, None, decrypt_advice(failure, self.keyring))
            return None
        return decrypted.data, decrypted.signature

    def _add(self, received: bytes, data: bytes | None, error: UnpackError | None, signature: Signature = NO_SIGNATURE,
             warnings: tuple[str, ...] = (), inline: bool = False) -> None:
        if error is None:
            error = untrusted(self.provider, signature)
            if error is not None:
                data = None
        self.found.append(Attachment(0, len(received), hashlib.sha256(received).hexdigest(), data, error, signature, warnings, inline))


def _stronger(inner: Signature, outer: Signature) -> Signature:
    """The signature that speaks for a file: a bad one anywhere spoils it; else the innermost present."""
    if inner.bad or outer.bad:
        return Signature(present=True, bad=True)
    return inner if inner.present else outer


def untrusted(provider: Provider, signature: Signature) -> UnpackError | None:
    """Whether a signature (or its absence) means the file must not be taken as this provider's."""
    if signature.bad:
        return UnpackError(
            "signature does not verify",
            "The file carries a signature that does not verify (the file may have been altered, or the "
            "signing key has expired or been revoked), so we have not forwarded it. Please sign it again "
            "with a current key and send it again.",
        )
    registered = provider.signing_keys
    if registered and signature.present and signature.signer not in registered:
        return UnpackError(
            "signed by a key not registered for the provider",
            "The file is signed, but not with one of your organisation's registered signing keys, so we "
            "cannot be sure it comes from you and have not forwarded it. If your signing key has changed, "
            "ask the gateway administrator to register the new one.",
        )
    if provider.require_signature and (signature.signer is None or signature.signer not in registered):
        return UnpackError(
            "required signature missing",
            "Your organisation's returns must be signed with one of its registered signing keys, and this "
            "file was not. Please sign and encrypt the file and send it again; if your signing key has "
            "changed, ask the gateway administrator to register the new one.",
        )
    return None


def _first_part_bytes(raw: bytes, boundary: str) -> bytes | None:
    """The exact bytes of a multipart's first part, CRLF line ends (RFC 3156 section 5)."""
    text = raw.replace(b"\r\n", b"\n")
    marker = b"\n--" + boundary.encode()
    start = text.find(marker)
    if start < 0:
        return None
    start = text.find(b"\n", start + len(marker)) + 1
    end = text.find(marker, start)
    if end < 0:
        return None
    return text[start:end].replace(b"\n", b"\r\n")


def decrypt_advice(failure: KeyringError, keyring: Keyring) -> UnpackError:
    """The provider's advice for gpg's outcome on its file: each KeyringError subclass carries its own."""
    try:
        fingerprint = keyring.own_fingerprint()
    except KeyringError:
        fingerprint = "(see the attached key)"
    return UnpackError(str(failure), failure.advice.format(fingerprint=fingerprint))
