"""The gateway's errors: one base class, one subclass per step of the journey.

Every message here is safe to log: it carries ids, UIDs, row numbers and column names, never a value
taken from a return, a subject or a file name.
"""


class GatewayError(Exception):
    """Base class for every failure the gateway reports."""

    retryable = False


class ConfigError(GatewayError):
    """config.toml is missing, unreadable or wrong."""


class RulesError(GatewayError):
    """A rule file cannot be read."""


class KeyringError(GatewayError):
    """The gateway's keyring or a key in keys/ cannot be used."""


class MailboxError(GatewayError):
    """The IMAP mailbox cannot be reached or refused an operation."""

    retryable = True


class UnpackError(GatewayError):
    """A message holds no return the gateway can open (file-level, severity F).

    `advice` is the sentence the provider reads in the rejection receipt.
    """

    def __init__(self, message: str, advice: str) -> None:
        super().__init__(message)
        self.advice = advice


class HostileFile(UnpackError):
    """A file built to harm its reader (zip bomb, lying sizes, oversized): quarantine it, never retry."""


class UnknownSender(UnpackError):
    """The sender is not registered for any provider."""


class ReadError(UnpackError):
    """The decrypted file is not a return the gateway can read (file-level, severity F)."""


class PackError(GatewayError):
    """A borough package could not be built or encrypted."""


class NoUsableKey(PackError):
    """A recipient has no single valid public key; the package must be held, never sent in clear."""


class OutboxError(GatewayError):
    """The outbox folder cannot be written (disk full, read-only, permissions): nothing leaves INBOX."""

    retryable = True


class SendError(GatewayError):
    """The SMTP relay refused or failed a message."""

    def __init__(self, message: str, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


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
