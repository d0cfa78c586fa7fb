"""The IMAP mailbox (imap-tools): messages by UID with their exact bytes, and moves to Processed / Quarantine."""

from __future__ import annotations

import contextlib
import imaplib
import io
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

import imap_tools
from imap_tools import BaseMailBox, MailBox, MailBoxStartTls, MailBoxUnencrypted

from .. import config
from ..errors import (
    MailboxError,
    MailboxSignInRefused,
    SignInRefused,
    TokenServiceDown,
    unreachable,
)
from ..signin import Tokens, server_refused


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
        why = "it timed out" if isinstance(error, TimeoutError) else "the server closed it or the network failed"
        raise MailboxError(f"the connection to the mailbox was lost mid-command ({why}): the next run or reconnection "
                           "tries again; if it keeps happening, check the mail server's log and the network") from None


class Inbox:
    """One logged-in session on the secure mailbox; use as a context manager.

    The daemon keeps one for as long as the server lets it: the same session watches the folder and
    handles what arrives, so a quiet mailbox costs one login, not one per look. New mail is told by
    UID (RFC 3501 2.3.1.1: UIDs only grow), never by a count: a count may include a message this
    session has just moved away, and STATUS must not be asked of the selected folder (6.3.10).
    """

    def __init__(self, settings: config.Mailbox, tokens: Tokens | None = None) -> None:
        """`tokens`: the process's OAuth2 tokens (auth = "oauth2"); each login asks it for one still fresh."""
        self.settings = settings
        self.tokens = tokens or Tokens()
        self._box: imap_tools.BaseMailBox | None = None
        self._uidvalidity: int | None = None
        self.last_uid = 0  # the highest UID `messages` has listed in this session

    def __enter__(self) -> Inbox:
        settings = self.settings
        where = f"the mailbox at {settings.host}:{settings.port}"
        token = self._token(where) if settings.auth == "oauth2" else None
        password = config.secret(settings.password_env)
        if password is None and token is None:
            raise MailboxError(f"the mailbox password is not set: put it in the environment variable {settings.password_env}")
        try:
            box: BaseMailBox
            if settings.security == "none":
                box = MailBoxUnencrypted(settings.host, settings.port, timeout=settings.timeout)
            else:
                kind = MailBox if settings.security == "ssl" else MailBoxStartTls
                box = kind(settings.host, settings.port, timeout=settings.timeout, ssl_context=config.tls_context(settings.ca_file))
            if token is not None:
                self._xoauth2(box, token, where)
            else:
                box.login(settings.user, password or "", initial_folder=settings.folder)  # set: checked above
        except ssl.SSLCertVerificationError:
            raise MailboxError(
                f"the mailbox at {settings.host}:{settings.port} presented a certificate this machine does not trust; "
                "if it uses a private CA, name its certificate in [mailbox] ca_file"
            ) from None
        except imap_tools.errors.MailboxLoginError:
            raise MailboxError(f"the mailbox at {settings.host}:{settings.port} refused the login for the configured user") from None
        except (OSError, imap_tools.errors.ImapToolsError) as error:
            raise MailboxError(unreachable("the mailbox", "mailbox", settings.host, settings.port, error)) from None
        self._box = box
        with _dropped():
            # SELECT announced the folder's UIDVALIDITY (RFC 3501 6.3.1); it holds for the whole session.
            announced = box.client.untagged_responses.get("UIDVALIDITY")
            last = announced[-1] if announced else None
            self._uidvalidity = int(last) if isinstance(last, (bytes, str)) else None
            for folder in (settings.processed_folder, settings.quarantine_folder):
                if not box.folder.exists(folder):
                    box.folder.create(folder)
        return self

    def _token(self, where: str) -> str:
        try:
            return self.tokens.token(self.settings, "mailbox")
        except SignInRefused as error:
            raise MailboxSignInRefused(f"{where}: {error}", error.cause, error.retry_in) from None
        except TokenServiceDown as error:
            raise MailboxError(f"{where}: {error}") from None

    def _xoauth2(self, box: imap_tools.BaseMailBox, token: str, where: str) -> None:
        """AUTHENTICATE XOAUTH2; a refusal of a token the service issued is a missing permission."""
        try:
            box.xoauth2(self.settings.user, token, initial_folder=None)
        except (imap_tools.errors.MailboxLoginError, imaplib.IMAP4.error) as refusal:
            with contextlib.suppress(Exception):
                box.client.shutdown()
            if "UNAVAILABLE" in str(refusal):  # RFC 5530: the server could not check it now, a passing fault
                raise MailboxError(f"{where} could not check the app's token now ([UNAVAILABLE])") from None
            error = self.tokens.refused(self.settings, "mailbox", server_refused(self.settings, where))
            raise MailboxSignInRefused(str(error), error.cause, error.retry_in) from None
        self.tokens.accepted(self.settings, "mailbox")
        box.folder.set(self.settings.folder)

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
        if self._uidvalidity is None:  # a server that did not announce it at SELECT
            with _dropped():
                self._uidvalidity = int(self.box.folder.status(self.settings.folder, ["UIDVALIDITY"])["UIDVALIDITY"])
        return self._uidvalidity

    def waiting(self) -> list[int]:
        """The UIDs of every message now in the folder, oldest first."""
        with _dropped():
            uids = sorted(int(u) for u in self.box.uids("ALL"))
        if uids:
            self.last_uid = max(self.last_uid, uids[-1])
        return uids

    def messages(self, uids: list[int] | None = None) -> Iterator[InboxMessage]:
        """Every message now in the folder (or those of `uids`), oldest first, fetched one at a time without
        marking it seen."""
        for uid in self.waiting() if uids is None else uids:
            with _dropped():
                raw = self._fetch(uid)
            if raw is not None:
                yield InboxMessage(uid, raw)

    def has_new(self) -> bool:
        """Whether a message with a UID above `last_uid` is in the folder now (UID SEARCH on this session)."""
        with _dropped():
            # Some servers (pymap among them) show a session new messages only at a NOOP (RFC 3501 6.1.2).
            self.box.client.noop()
            # "n:*" also matches the highest UID when every UID is below n (RFC 3501 6.4.8): compare.
            uids = self.box.uids(f"UID {self.last_uid + 1}:*")
            self.box.client.untagged_responses.clear()  # what NOOP reported, kept by imaplib otherwise
        return any(int(uid) > self.last_uid for uid in uids)

    def wait_for_mail(self, seconds: float) -> bool:
        """Block until the server reports a change in the folder (IMAP IDLE, RFC 2177) or `seconds`
        pass, then say whether a message arrived since the last `messages`. Without IDLE, sleep and
        look (NOOP, then UID SEARCH)."""
        if self.has_new():  # arrived while the last messages were being handled: nobody will announce it
            return True
        client = self.box.client
        if "IDLE" not in client.capabilities:
            time.sleep(seconds)
            return self.has_new()
        with _dropped():
            idle: Any = self.box.idle  # imap-tools' IDLE helper is not annotated
            idle.start()
            try:
                # Mail that arrived between the search above and IDLE is announced with, or just after,
                # the server's "+ idling": either parsed already, or read from the socket into imaplib's
                # buffer, where waiting on the socket would never see it.
                announced = bool(client.untagged_responses.get("EXISTS"))
                while not announced and _buffered(client):
                    announced = _announces_mail(client._get_line())
                if not announced:
                    # RFC 2177: re-issue IDLE at least every 29 minutes, or the server may log us off.
                    idle.poll(timeout=min(seconds, 25 * 60))
            finally:
                idle.stop()
            client.untagged_responses.clear()
        return self.has_new()

    def move(self, uids: int | list[int], folder: str) -> None:
        """Move one message, or several in one command (a burst's round trips add up)."""
        with _dropped():
            self.box.move([str(uid) for uid in uids] if isinstance(uids, list) else str(uids), folder)

    def _fetch(self, uid: int) -> bytes | None:
        # imap-tools parses what it fetches; the ledger needs the exact bytes, so ask imaplib for them.
        status, data = self.box.client.uid("FETCH", str(uid), "(BODY.PEEK[])")
        if status != "OK":
            raise MailboxError(f"the mailbox refused to fetch UID {uid}")
        for part in data:
            if isinstance(part, tuple) and len(part) == 2:
                return bytes(part[1])
        return None  # expunged meanwhile


def _announces_mail(line: bytes) -> bool:
    return line.startswith(b"* ") and (line.endswith(b" EXISTS") or line.endswith(b" RECENT"))


def _buffered(client: imaplib.IMAP4) -> bool:
    """Whether the server has said something not yet read: in imaplib's buffer, or on the socket."""
    sock = client.sock
    timeout = sock.gettimeout()
    sock.settimeout(0)  # look, never wait
    try:
        return bool(cast(io.BufferedReader, client.file).peek(1))
    except (BlockingIOError, ssl.SSLWantReadError):
        return False
    finally:
        sock.settimeout(timeout)
