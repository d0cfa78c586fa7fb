"""The IMAP mailbox (imap-tools): messages by UID with their exact bytes, and moves to Processed / Quarantine."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Iterator

import imap_tools
from imap_tools import MailBox, MailBoxStartTls, MailBoxUnencrypted

from . import config
from .errors import MailboxError


@dataclass(frozen=True)
class InboxMessage:
    uid: int
    raw: bytes  # exactly as the server holds it: its hash identifies the message


class Inbox:
    """One logged-in session on the secure mailbox; use as a context manager."""

    def __init__(self, settings: config.Mailbox) -> None:
        self.settings = settings
        self._box: imap_tools.BaseMailBox | None = None

    def __enter__(self) -> "Inbox":
        settings = self.settings
        password = config.secret(settings.password_env)
        if password is None:
            raise MailboxError(f"the mailbox password is not set: put it in the environment variable {settings.password_env}")
        try:
            if settings.security == "none":
                box = MailBoxUnencrypted(settings.host, settings.port, timeout=settings.timeout)
            else:
                kind = MailBox if settings.security == "ssl" else MailBoxStartTls
                box = kind(settings.host, settings.port, timeout=settings.timeout, ssl_context=config.tls_context(settings.ca_file))
            box.login(settings.user, password, initial_folder=settings.folder)
        except ssl.SSLCertVerificationError:
            raise MailboxError(
                f"the mailbox at {settings.host}:{settings.port} presented a certificate this machine does not trust; "
                "if it uses a private CA, name its certificate in [mailbox] ca_file"
            ) from None
        except imap_tools.errors.MailboxLoginError:
            raise MailboxError(f"the mailbox at {settings.host}:{settings.port} refused the login for the configured user") from None
        except (OSError, imap_tools.errors.ImapToolsError) as error:
            raise MailboxError(f"cannot reach the mailbox at {settings.host}:{settings.port} ({type(error).__name__})") from None
        self._box = box
        for folder in (settings.processed_folder, settings.quarantine_folder):
            if not box.folder.exists(folder):
                box.folder.create(folder)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._box is not None:
            try:
                self._box.logout()
            except Exception:  # the connection may already be gone; nothing to keep
                pass
            self._box = None

    @property
    def box(self) -> imap_tools.BaseMailBox:
        if self._box is None:
            raise MailboxError("the mailbox is not connected")
        return self._box

    def uidvalidity(self) -> int:
        return int(self.box.folder.status(self.settings.folder, ["UIDVALIDITY"])["UIDVALIDITY"])

    def messages(self) -> Iterator[InboxMessage]:
        """Every message now in the folder, oldest first, fetched one at a time without marking it seen."""
        for uid in sorted(int(u) for u in self.box.uids("ALL")):
            raw = self._fetch(uid)
            if raw is not None:
                yield InboxMessage(uid, raw)

    def move(self, uid: int, folder: str) -> None:
        self.box.move(str(uid), folder)

    def _fetch(self, uid: int) -> bytes | None:
        # imap-tools parses what it fetches; the ledger needs the exact bytes, so ask imaplib for them.
        status, data = self.box.client.uid("FETCH", str(uid), "(BODY.PEEK[])")
        if status != "OK":
            raise MailboxError(f"the mailbox refused to fetch UID {uid}")
        for part in data:
            if isinstance(part, tuple) and len(part) == 2:
                return bytes(part[1])
        return None  # expunged meanwhile
