"""The IMAP mailbox (imap-tools): messages by UID with their exact bytes, and moves to Processed / Quarantine."""

from __future__ import annotations

import contextlib
import imaplib
import ssl
import time
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


@contextlib.contextmanager
def _dropped() -> Iterator[None]:
    """A connection lost mid-command (server restarted, network gone) becomes a retryable MailboxError."""
    try:
        yield
    except (OSError, EOFError, imaplib.IMAP4.error, imap_tools.errors.ImapToolsError) as error:
        raise MailboxError(f"the connection to the mailbox was lost ({type(error).__name__})") from None


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
        with _dropped():
            return int(self.box.folder.status(self.settings.folder, ["UIDVALIDITY"])["UIDVALIDITY"])

    def messages(self) -> Iterator[InboxMessage]:
        """Every message now in the folder, oldest first, fetched one at a time without marking it seen."""
        with _dropped():
            uids = sorted(int(u) for u in self.box.uids("ALL"))
        for uid in uids:
            with _dropped():
                raw = self._fetch(uid)
            if raw is not None:
                yield InboxMessage(uid, raw)

    def wait_for_mail(self, seconds: float) -> bool:
        """Block until the server reports a change in the folder (IMAP IDLE, RFC 2177) or `seconds`
        pass; True when something arrived. Without IDLE, sleep and say yes, so the caller polls."""
        with _dropped():
            # Mail that arrived between two IDLE sessions is announced to no one: look first.
            if int(self.box.folder.status(self.settings.folder, ["MESSAGES"])["MESSAGES"]):
                return True
        if "IDLE" not in self.box.client.capabilities:
            time.sleep(seconds)
            return True
        with _dropped():
            # Forget counts reported earlier (SELECT's "* 0 EXISTS"): only news from now on counts.
            self.box.client.untagged_responses.pop("EXISTS", None)
            idle = self.box.idle
            idle.start()
            try:
                # An EXISTS the server sent just before confirming IDLE was read and kept by imaplib:
                # waiting on the socket would not see it again.
                if self.box.client.untagged_responses.pop("EXISTS", None):
                    return True
                # RFC 2177: re-issue IDLE at least every 29 minutes, or the server may log us off.
                responses = idle.poll(timeout=min(seconds, 25 * 60))
            finally:
                idle.stop()
            early = self.box.client.untagged_responses.pop("EXISTS", None)
        return bool(early) or any(b"EXISTS" in line or b"RECENT" in line for line in responses)

    def move(self, uid: int, folder: str) -> None:
        with _dropped():
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
