"""The gateway's errors: one base class, one subclass per failure, each with the advice its reader needs.

Callers tell failures apart by class, never by message text. Every message here is safe to log: it
carries ids, UIDs, row numbers and column names, never a value taken from a return, a subject or a file
name. `advice` is what the reader (the provider in a rejection receipt, the administrator at the
terminal or in an alert) should do; "" when the message says it already.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .mail import Outgoing


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a file the administrator edits, written for that administrator."""

    file: Path
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else f"{self.file}"
        return f"{where}: {self.message}"


class Cause(enum.Enum):
    """Why a sign-in was refused, as the administrator acts on it."""

    SECRET = "client secret wrong, expired or revoked"
    CERTIFICATE = "certificate expired or not accepted"
    KEY = "service account key refused"
    UNKNOWN_APP = "app registration not found"
    PERMISSION = "permission missing"
    SETUP = "sign-in settings refused"


class Reach(Protocol):
    """How far a sheet reaches (returns.extent.Extent)."""

    @property
    def rows(self) -> int: ...
    @property
    def columns(self) -> int: ...


class GatewayError(Exception):
    """Base class for every failure the gateway reports."""

    retryable = False
    advice = ""


# -- configuration, rules, installation ----------------------------------------------------------------
class ConfigError(GatewayError):
    """config.toml is missing, unreadable or wrong."""


class RulesError(GatewayError):
    """A rule file cannot be read."""


class TomlError(GatewayError, ValueError):
    """A TOML file could not be read at all; `problem` names the file and line."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(str(problem))
        self.problem = problem


class InitError(GatewayError):
    """`gateway init` cannot make the installation (one is there already, a file it must not overwrite)."""


class KeyFileError(GatewayError):
    """A file given to `gateway keys import` is not one public key, or would replace another key."""


class ReportError(GatewayError):
    """The report cannot be made as asked (a month not in YYYY-MM form, a due day outside 1-31)."""


class OutputError(GatewayError):
    """A file the command was asked to write cannot be written."""


class NoPassword(GatewayError):
    """A file needs a password and there is neither a terminal to ask at nor GATEWAY_FILE_PASSWORD."""


# -- the keyring (gpg's outcomes) ------------------------------------------------------------------------
class KeyringError(GatewayError):
    """The gateway's keyring or a key in keys/ cannot be used, or gpg refused a file.

    The subclasses below are gpg's outcomes on a provider's file; their `advice` is the provider's, with
    {fingerprint} standing for the gateway's own key (unpack.decrypt_advice fills it in).
    """

    advice = ("We could not decrypt this file: it is damaged or incomplete. Please encrypt the return again "
              "to the gateway's key {fingerprint} (attached) and send it again.")


class NotOpenPGP(KeyringError):
    """The file is not OpenPGP encrypted data."""

    advice = ("The attached .gpg/.pgp/.asc file is not an OpenPGP encrypted file. Please encrypt the return "
              "to the gateway's key {fingerprint} (attached) and send it again.")


class NotForUs(KeyringError):
    """The file is encrypted to a key that is not the gateway's."""

    advice = ("We could not decrypt this file: it was encrypted to a key that is not the gateway's. "
              "Please encrypt it to the gateway's key, fingerprint {fingerprint} (attached), and send it again.")


class NoIntegrity(KeyringError):
    """The file is encrypted without integrity protection (no MDC, no AEAD): it could have been altered."""

    advice = ("We could not accept this file: it was encrypted without integrity protection, so we cannot be "
              "sure it was not altered. Please encrypt it again with a current version of your encryption "
              "software (Kleopatra, GpgOL or gpg) to the gateway's key {fingerprint}, and send it again.")


class Damaged(KeyringError):
    """gpg could not decrypt the file: it is damaged or incomplete."""


class DecryptedTooLarge(KeyringError):
    """The decrypted data passed the caller's limit (a compression bomb, or a return far too large); gpg was stopped."""


class OwnKeyLocked(KeyringError):
    """The gateway's own secret key cannot decrypt (passphrase missing or wrong, secret key unusable): the
    gateway's fault, never the provider's; mail waits in the mailbox until it is fixed."""

    retryable = True
    advice = ("set the variable in the gateway's environment (the service's EnvironmentFile), restart "
              "the gateway, and run `gateway check`, which decrypts a test message with the key.")


# -- the mailbox and signing in --------------------------------------------------------------------------
class MailboxError(GatewayError):
    """The IMAP mailbox cannot be reached or refused an operation."""

    retryable = True


class SignInRefused(GatewayError):
    """The token service or a mail server refused the gateway's app: the administrator must act; tried again later."""

    retryable = True
    advice = ("after a change to the app registration, `gateway check --connect` shows at once whether the "
              "sign-in works.")

    def __init__(self, message: str, cause: Cause, retry_in: float = 0.0) -> None:
        super().__init__(message)
        self.cause = cause
        self.retry_in = retry_in  # seconds until the next attempt is allowed


class MailboxSignInRefused(SignInRefused, MailboxError):
    """The mailbox's sign-in was refused (the daemon alerts through the relay and waits)."""


class TokenServiceDown(GatewayError):
    """The token service could not be reached or failed (network, 5xx): a passing fault."""

    retryable = True


# -- a provider's message and its files -------------------------------------------------------------------
class UnpackError(GatewayError):
    """A message holds no return the gateway can open (file-level, severity F).

    `advice` is the sentence the provider reads in the rejection receipt.
    """

    def __init__(self, message: str, advice: str) -> None:
        super().__init__(message)
        self.advice = advice


class PasswordMissing(UnpackError):
    """A protected workbook or zip, and no password is configured for its provider."""


class HostileFile(UnpackError):
    """A file built to harm its reader (zip bomb, lying sizes, oversized): quarantine it, never retry.

    `replies`: when the pipeline raises it for a whole message, the rejection the registered provider gets.
    """

    def __init__(self, message: str, advice: str, replies: Sequence[Outgoing] = ()) -> None:
        super().__init__(message, advice)
        self.replies = list(replies)


class UnknownSender(UnpackError):
    """The sender is not registered for any provider; the message is quarantined. `advice` is the administrator's."""

    ADVICE = ("The sender's address is not in rules/providers.toml. If it is a provider's new address, add it to "
              "that provider's senders and move the message back to the mailbox folder.")

    def __init__(self, message: str, advice: str = "") -> None:
        super().__init__(message, advice or self.ADVICE)


class SenderNotRegistered(UnknownSender):
    """The From address is one address, but no provider lists it among its senders."""


class SenderUnreadable(UnknownSender):
    """The From header is missing, repeated or not one readable address."""


class ReadError(UnpackError):
    """The decrypted file is not a return the gateway can read (file-level, severity F)."""


class LimitExceeded(ReadError):
    """Opening or reading a file ended its child process (memory, time, or a crash in a native reader)."""


class IsolatedFailure(GatewayError):
    """The reader raised something unexpected in its child (a bug, not a bad file): the message is set aside."""


class SheetError(GatewayError):
    """extent.py's answer to read.py about a sheet's XML (read.py turns it into a ReadError with advice)."""


class Unreadable(SheetError):
    """The sheet's XML is damaged or names a cell in a way no spreadsheet program writes."""


class TooBig(SheetError):
    """The sheet reaches further than `limits` allow; `extent` says how far, as far as it was read."""

    def __init__(self, extent: Reach, crowded: bool = False) -> None:
        super().__init__(f"sheet reaches row {extent.rows}, column {extent.columns}"
                         + (", too many cells" if crowded else ""))
        self.extent = extent
        self.crowded = crowded  # more cell elements than any return has, wherever they sit


# -- packing and sending ---------------------------------------------------------------------------------
class PackError(GatewayError):
    """A borough package could not be built or encrypted."""


class NoUsableKey(PackError):
    """A recipient has no single valid public key; the package must be held, never sent in clear."""

    advice = "Put the recipient's current public key (one .asc file) in keys/ and run `gateway check`."


class OutboxError(GatewayError):
    """The outbox folder cannot be written (disk full, read-only, permissions): nothing leaves INBOX."""

    retryable = True


class SendError(GatewayError):
    """The SMTP relay refused or failed a message."""

    def __init__(self, message: str, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class RelayDown(SendError):
    """The relay could not be reached or would not talk (refused, timed out, dropped, login or TLS failed)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=True)


def unreachable(what: str, section: str, host: str, port: int, error: BaseException) -> str:
    """Why a server could not be reached, naming its host and port and what to check; never a class name alone.

    `what` is how the administrator knows the server ("the mailbox"), `section` the table of config.toml
    that names it ("mailbox").
    """
    import socket

    where = f"{what} at {host}:{port}"
    if isinstance(error, socket.gaierror):
        return (f"cannot reach {where}: the name {host} cannot be found (DNS): "
                f"check [{section}] host in config.toml and this machine's network")
    if isinstance(error, ConnectionRefusedError):
        return (f"cannot reach {where}: the connection was refused, nothing is listening there: "
                f"check [{section}] host and port, and that the server is running")
    if isinstance(error, (TimeoutError, socket.timeout)):
        return (f"cannot reach {where}: no answer within [{section}] timeout: "
                f"check [{section}] host and port, and any firewall between this machine and the server")
    if isinstance(error, OSError) and error.strerror:
        return (f"cannot reach {where}: {error.strerror}: check [{section}] host, port and security, "
                "and this machine's network")
    return (f"cannot reach {where}: the connection failed or was dropped: check [{section}] host, port and security "
            "(ssl, starttls or none must match the server)")
