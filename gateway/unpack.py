"""From a raw message to decrypted attachments and the sender's provider.

Decrypted bytes stay in memory. File names are used to recognise encrypted attachments and are
never logged, stored or repeated in a clear receipt.
"""

from __future__ import annotations

import email
import email.policy
import email.utils
import hashlib
from dataclasses import dataclass
from email.message import EmailMessage

from .errors import KeyringError, UnknownSender, UnpackError
from .keys import Keyring
from .rules import Provider, Rules

ENCRYPTED_SUFFIXES = (".gpg", ".pgp", ".asc")
SHEET_SUFFIXES = (".xlsx", ".xlsm", ".xls", ".ods", ".csv")
_ARMOUR = b"-----BEGIN PGP MESSAGE-----"


@dataclass(frozen=True)
class Attachment:
    """One attached return: its size and hash as received, and its decrypted bytes or why not."""

    index: int  # 1-based position among the returns in the message
    size: int
    sha256: str
    data: bytes | None
    error: UnpackError | None = None
    signer: str | None = None

    @property
    def short_hash(self) -> str:
        return self.sha256[:12]


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
        raise UnknownSender(f"message has {len(values)} From headers", "")
    addresses = email.utils.getaddresses([str(values[0])])
    if len(addresses) != 1 or "@" not in addresses[0][1] or message["From"].defects:
        raise UnknownSender("the From header cannot be read as one address", "")
    return addresses[0][1].strip().lower()


def parse(raw: bytes) -> EmailMessage:
    return email.message_from_bytes(raw, policy=email.policy.default)  # type: ignore[return-value]


def unpack(raw: bytes, rules: Rules, keyring: Keyring) -> Unpacked:
    """Identify the provider from the sender, then decrypt each encrypted attachment."""
    message = parse(raw)
    sender = sender_of(message)
    provider = rules.provider_for_sender(sender)
    if provider is None:
        raise UnknownSender("sender is not registered for any provider", "")
    found = []
    clear = 0
    for part in message.walk():
        if part.is_multipart():
            continue
        name = (part.get_filename() or "").strip().lower()
        payload = part.get_payload(decode=True) or b""
        if name.endswith(ENCRYPTED_SUFFIXES) or (not name and payload.lstrip().startswith(_ARMOUR) and part.get_content_maintype() != "text"):
            found.append(payload)
        elif name.endswith(SHEET_SUFFIXES):
            clear += 1
    if not found:
        if clear:
            return Unpacked(sender, provider, (), UnpackError(
                "return attached without encryption",
                "Your return was attached without encryption, so we have not opened or forwarded it. "
                "Please encrypt the file with the gateway's public key (attached to this receipt) and send it again. "
                "Sending young people's details unencrypted may be a data incident under your own policy.",
            ))
        return Unpacked(sender, provider, (), UnpackError(
            "no encrypted attachment",
            "We found no encrypted return attached to your email. Please attach the return encrypted "
            "with the gateway's public key (attached to this receipt) as a .gpg, .pgp or .asc file.",
        ))
    return Unpacked(sender, provider, tuple(_open(i, data, provider, keyring) for i, data in enumerate(found, 1)))


def _open(index: int, data: bytes, provider: Provider, keyring: Keyring) -> Attachment:
    digest = hashlib.sha256(data).hexdigest()
    if not data.strip():
        error = UnpackError("empty attachment", "The attached file was empty. Please attach the completed, encrypted return and send it again.")
        return Attachment(index, len(data), digest, None, error)
    try:
        decrypted = keyring.decrypt(data)
    except KeyringError as failure:
        return Attachment(index, len(data), digest, None, _decrypt_advice(failure, keyring))
    if provider.require_signature and (decrypted.signer is None or decrypted.signer not in provider.signing_keys):
        error = UnpackError(
            "required signature missing or not the provider's",
            "Your organisation's returns must be signed with one of its registered signing keys, and this "
            "file was not. Please sign and encrypt the file and send it again; if your signing key has "
            "changed, ask the gateway administrator to register the new one.",
        )
        return Attachment(index, len(data), digest, None, error)
    return Attachment(index, len(data), digest, decrypted.data, None, decrypted.signer)


def _decrypt_advice(failure: KeyringError, keyring: Keyring) -> UnpackError:
    reason = str(failure)
    try:
        fingerprint = keyring.own_fingerprint()
    except KeyringError:
        fingerprint = "(see the attached key)"
    if "not the gateway's" in reason:
        advice = (
            "We could not decrypt this file: it was encrypted to a key that is not the gateway's. "
            f"Please encrypt it to the gateway's key, fingerprint {fingerprint} (attached), and send it again."
        )
    elif "integrity" in reason:
        advice = (
            "We could not accept this file: it was encrypted without integrity protection, so we cannot be "
            "sure it was not altered. Please encrypt it again with a current version of your encryption "
            f"software (Kleopatra, GpgOL or gpg) to the gateway's key {fingerprint}, and send it again."
        )
    elif "not OpenPGP" in reason:
        advice = (
            "The attached .gpg/.pgp/.asc file is not an OpenPGP encrypted file. Please encrypt the return "
            f"to the gateway's key {fingerprint} (attached) and send it again."
        )
    else:
        advice = (
            "We could not decrypt this file: it is damaged or incomplete. Please encrypt the return again "
            f"to the gateway's key {fingerprint} (attached) and send it again."
        )
    return UnpackError(reason, advice)
