"""Queued messages -> the SMTP relay (smtplib); each failure classed as retryable or permanent.

A deferred message is tried again with exponential backoff and jitter until [smtp] retry_for_hours
after it was queued; then, or at once on a permanent refusal (5xx), it is set aside in outbox/bad and
the administrator alerted once, through this same outbox. An alert that fails is only logged, so a
broken administrator's address cannot start a loop of alerts about alerts.
"""

from __future__ import annotations

import email
import email.message
import email.parser
import email.policy
import email.utils
import hashlib
import logging
import random
import smtplib
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from .. import config
from ..errors import RelayDown, SendError, SignInRefused, TokenServiceDown, unreachable
from ..ledger import Kind, Ledger, OutgoingRecord, OutgoingState
from ..mail import Outgoing
from ..signin import Tokens, server_refused, xoauth2
from .alerts import queue_once
from .notices import alert, not_delivered
from .outbox import Outbox

log = logging.getLogger(__name__)

ORPHAN_SECONDS = 3600
_NO_ALERTS_ABOUT = (Kind.ALERT,)  # an alert that cannot be delivered is logged, never alerted about


@dataclass(frozen=True)
class Delivery:
    sent: int = 0
    deferred: int = 0  # tried, and to be tried again later
    failed: int = 0  # set aside: refused, given up, or not what the ledger recorded
    waiting: int = 0  # not tried in this run: not yet due, or the relay was down


def verp_address(sender: str, item_id: str) -> str:
    """The envelope sender that names one message: ldor+<id>@example.org for ldor@example.org."""
    local, _, domain = sender.rpartition("@")
    return f"{local}+{item_id}@{domain}"


def send(raw: bytes, settings: config.Smtp, item_id: str = "", tokens: Tokens | None = None) -> None:
    """Hand one message to the relay in a session of its own; SendError.retryable tells whether trying later may help.

    `tokens`: the process's OAuth2 tokens (auth = "oauth2"), kept between messages and runs."""
    with Relay(settings, tokens) as relay:
        relay.send(raw, item_id)


def sign_in(settings: config.Smtp, tokens: Tokens | None = None) -> None:
    """Connect and sign in to the relay as a delivery does, send nothing (`gateway check --connect`)."""
    with Relay(settings, tokens) as relay:
        relay.converse(lambda session: session.noop())


class Relay:
    """One SMTP session for a whole flush: opened at the first message, signed in once, kept for the rest.

    A relay may drop a session it has kept open (an idle timeout, a limit of messages a session, a 421):
    a message whose send finds the kept session gone is tried once more on a new one. Should the relay
    have taken it before dropping the session, that is at most an identical resend (its Message-ID is
    deterministic), as after a crash between the relay's 250 and the ledger's commit.
    """

    def __init__(self, settings: config.Smtp, tokens: Tokens | None = None) -> None:
        self.settings = settings
        self.tokens = tokens or Tokens()
        self.sessions = 0  # sessions opened (one a flush, more when the relay dropped one)
        self._session: smtplib.SMTP | None = None

    def __enter__(self) -> Relay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            try:
                session.quit()
            except (smtplib.SMTPException, OSError):  # already gone: nothing to say goodbye to
                session.close()

    def send(self, raw: bytes, item_id: str = "") -> None:
        """Hand one message to the relay; SendError.retryable tells whether trying later may help."""
        recipients = [address for _, address in email.utils.getaddresses(_headers(raw).get_all("To", []))]
        if not recipients:
            raise SendError("the queued message has no recipient", retryable=False)
        settings = self.settings
        envelope = verp_address(settings.from_address, item_id) if settings.verp and item_id else settings.from_address
        self.converse(lambda session: session.sendmail(envelope, recipients, raw))

    def converse(self, act: Callable[[smtplib.SMTP], object]) -> None:
        """`act` on the kept session (opened if need be); on a kept session found dropped, once more on a new one."""
        kept = self._session is not None
        try:
            self._act(act)
        except RelayDown:
            if not kept:
                raise
            self._act(act)

    def _act(self, act: Callable[[smtplib.SMTP], object]) -> None:
        settings = self.settings
        where = f"{settings.host}:{settings.port}"
        try:
            if self._session is None:
                self._session = self._open(where)
            act(self._session)
        except smtplib.SMTPRecipientsRefused as error:
            codes = [code for code, _ in error.recipients.values()]
            raise SendError(f"the relay refused the recipient (SMTP {codes[0]})", retryable=all(400 <= c < 500 for c in codes)) from None
        except (smtplib.SMTPAuthenticationError, smtplib.SMTPHeloError) as error:
            self._drop()
            # About the gateway's own settings, not this message: every message would fail alike, so none is set aside.
            raise RelayDown(f"the relay at {where} refused the gateway's login or greeting (SMTP {error.smtp_code}): "
                            "check [smtp] user and password_env") from None
        except smtplib.SMTPResponseException as error:
            if error.smtp_code == 421:  # the relay is closing the session (RFC 5321 3.8): this one is no more use
                self._drop()
            raise SendError(f"the relay answered SMTP {error.smtp_code}", retryable=400 <= error.smtp_code < 500) from None
        except ssl.SSLCertVerificationError:
            self._drop()
            raise RelayDown(f"the relay at {where} presented a certificate this machine does not trust; "
                            "if it uses a private CA, name its certificate in [smtp] ca_file") from None
        except (smtplib.SMTPException, OSError) as error:
            self._drop()
            # Refused, timed out (a relay that accepts and never answers), or dropped mid-way.
            raise RelayDown(unreachable("the relay", "smtp", settings.host, settings.port, error)) from None

    def _open(self, where: str) -> smtplib.SMTP:
        settings = self.settings
        token = _token(settings, self.tokens, where) if settings.auth == "oauth2" else None
        session = _connect(settings)
        self.sessions += 1
        try:
            if token is not None:
                _xoauth2(session, settings, self.tokens, token, where)
            elif settings.user:
                session.login(settings.user, config.secret(settings.password_env) or "")
        except BaseException:
            session.close()
            raise
        return session

    def _drop(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            session.close()


def _headers(raw: bytes) -> email.message.Message:
    """The headers alone: the recipients are all a send needs, and the body may be megabytes of ciphertext."""
    return email.parser.BytesHeaderParser(policy=email.policy.default).parsebytes(raw)


def flush(outbox: Outbox, ledger: Ledger, settings: config.Smtp, *, admin: str = "",
          now: datetime | None = None, retry_now: bool = False, tokens: Tokens | None = None) -> Delivery:
    """Try every queued message that is due; sent ones leave the outbox, failed ones are set aside.

    `now` (UTC) lets tests move time on. `retry_now` tries deferred messages before their time (an
    administrator's `run --once`). `admin`, when given, is told once of each message set aside. `tokens`:
    the process's OAuth2 tokens, one for the whole run.
    """
    with Flush(outbox, ledger, settings, admin=admin, now=now, retry_now=retry_now, tokens=tokens) as flushing:
        while flushing.step():
            pass
    return flushing.delivery()


class Flush:
    """One flush of the outbox through one relay session, a message at a time: `flush` takes them all in turn;
    a burst's run takes them while its workers work (each message queued meanwhile joins), then the rest.
    Each message is tried at most once a flush."""

    def __init__(self, outbox: Outbox, ledger: Ledger, settings: config.Smtp, *, admin: str = "",
                 now: datetime | None = None, retry_now: bool = False, tokens: Tokens | None = None) -> None:
        self.outbox, self.ledger, self.settings, self.admin = outbox, ledger, settings, admin
        self.now = now or datetime.now(UTC)
        self.retry_now = retry_now
        self.relay = Relay(settings, tokens or Tokens())
        self.counts = {"sent": 0, "deferred": 0, "failed": 0, "waiting": 0}
        self._work: list[str] = []
        self._taken: set[str] = set()
        self._down: SendError | None = None  # the relay's failure, once it is down: one wait for it a flush

    def __enter__(self) -> Flush:
        return self

    def __exit__(self, *exc: object) -> None:
        self.relay.close()

    def step(self) -> bool:
        """Take the next queued message not yet taken (sent, deferred, set aside or left waiting); False if none."""
        if not self._work:
            self._work = [item_id for item_id in self.outbox.pending() if item_id not in self._taken]
            if not self._work:
                return False
        self._take()
        return True

    def delivery(self) -> Delivery:
        return Delivery(**self.counts)

    def _take(self) -> None:
        """Try the first id of the work (more may be added: alerts); once the relay is down, the rest wait."""
        item_id = self._work.pop(0)
        self._taken.add(item_id)
        outbox, ledger, settings, admin = self.outbox, self.ledger, self.settings, self.admin
        now, counts = self.now, self.counts
        record = ledger.outgoing(item_id)
        if record is None:
            # Queued by a run that stopped before its ledger commit: that message is processed again
            # and this file replaced, so leave it unless it has been orphaned for long.
            if _age(outbox, item_id) > ORPHAN_SECONDS:
                log.error("outbox item %s was never recorded in the ledger; set aside, not sent", item_id)
                outbox.set_aside(item_id)
                counts["failed"] += 1
            return
        if record.state == OutgoingState.HELD:
            return  # a release stopped half-way: the next release builds and replaces this file
        try:
            raw = outbox.read(item_id)
        except FileNotFoundError:
            return
        if record.sha256 != hashlib.sha256(raw).hexdigest():
            log.error("outbox item %s does not match the hash the ledger recorded; set aside, not sent", item_id)
            outbox.set_aside(item_id)
            counts["failed"] += 1
            if record.state == OutgoingState.QUEUED:
                ledger.give_up(item_id, "the outbox file is not the message that was queued (hash differs); not sent")
                self._work += _alert(outbox, ledger, settings, admin, record, "its file in the outbox was changed or damaged")
            return
        if record.state == OutgoingState.SENT:  # sent, but the crash came before the file was removed
            outbox.remove(item_id)
            return
        if record.state != OutgoingState.QUEUED:  # failed or bounced, but the crash came before it was set aside
            outbox.set_aside(item_id)
            return
        # Too old to keep trying; but never before a first try has failed (a gateway that was itself
        # stopped for days gives its queue a chance before giving up on it).
        expired = bool(record.attempts) and _queued_at(record) + timedelta(hours=settings.retry_for_hours) <= now
        if self._down is not None or not (self.retry_now or _due(record, now)):
            if self._down is not None and expired:
                self._work += _give_up(outbox, ledger, settings, admin, record, self._down, counts)
            else:
                counts["waiting"] += 1
            return
        try:
            self.relay.send(raw, item_id)
        except SendError as error:
            if isinstance(error, RelayDown):
                self._down = error  # one wait for the timeout per run, not one per queued message
            if not error.retryable:
                ledger.mark_failed(item_id, str(error), permanent=True)
                outbox.set_aside(item_id)
                counts["failed"] += 1
                log.error("outbox item %s failed permanently: %s", item_id, error)
                self._work += _alert(outbox, ledger, settings, admin, record, f"the relay refused it: {error}")
            elif expired:
                ledger.mark_failed(item_id, str(error), permanent=False)
                self._work += _give_up(outbox, ledger, settings, admin, record, error, counts)
            else:
                later = now + _backoff(record.attempts + 1, settings)
                ledger.mark_failed(item_id, str(error), permanent=False, next_attempt_at=_iso(later))
                counts["deferred"] += 1
                log.warning("outbox item %s deferred until %s: %s", item_id, _iso(later), error)
            return
        ledger.mark_sent(item_id)
        outbox.remove(item_id)
        counts["sent"] += 1
        log.info("outbox item %s sent (%s)", item_id, record.kind)


def requeue(outbox: Outbox, ledger: Ledger, item_id: str) -> bool:
    """Queue a set-aside message again (the administrator fixed its cause); False if there is no such message.

    The file must still match the ledger's hash, or flush sets it aside again.
    """
    record = ledger.outgoing(item_id)
    if record is None or record.state not in (OutgoingState.FAILED, OutgoingState.BOUNCED) or not outbox.restore(item_id):
        return False
    ledger.requeue(item_id)
    log.info("outbox item %s queued again by the administrator", item_id)
    return True


def outbox_report(ledger: Ledger, outbox: Outbox, settings: config.Smtp, now: datetime | None = None,
                  recent_days: int = 7) -> str:
    """What is queued (attempts, next try), held (and why), set aside, bounced and recently sent: for an
    administrator, ids and counts only."""
    now = now or datetime.now(UTC)
    lines = [f"Outbox at {now:%Y-%m-%d %H:%M} UTC", ""]

    def section(title: str, rows: list[OutgoingRecord], describe: Callable[[OutgoingRecord], str]) -> None:
        lines.append(f"{title}: {len(rows)}")
        for row in rows:
            where = f" {row.borough}" if row.borough else ""
            lines.append(f"  {row.id}  {row.kind}{where}  ref {row.reference}  {describe(row)}")
        lines.append("")

    def queued(row: OutgoingRecord) -> str:
        due = row.next_attempt_at
        if not row.attempts:
            return "not tried yet"
        when = "now" if not due or datetime.fromisoformat(due) <= now else f"{datetime.fromisoformat(due):%Y-%m-%d %H:%M} UTC"
        gives_up = _queued_at(row) + timedelta(hours=settings.retry_for_hours)
        return (f"{row.attempts} attempt(s), next try {when}, given up after {gives_up:%Y-%m-%d %H:%M} UTC; "
                f"last error: {row.last_error}")

    kept = set(outbox.held_ids())

    def held(row: OutgoingRecord) -> str:
        copy = "" if row.id in kept else " [NO COPY KEPT: held before packages were kept; ask the provider to send again]"
        return f"{row.rows} row(s), held since {row.queued_at}: {row.last_error}{copy}"

    section("Queued", ledger.outgoing_in(OutgoingState.QUEUED), queued)
    section("Held, waiting for the recipient's key (sent by itself once a usable key is in keys/)",
            ledger.outgoing_in(OutgoingState.HELD), held)
    section("Set aside in bad/, not sent (gateway outbox --retry ID queues one again)", ledger.outgoing_in(OutgoingState.FAILED),
            lambda row: f"{row.attempts} attempt(s): {row.last_error}")
    section("Bounced after sending", ledger.outgoing_in(OutgoingState.BOUNCED),
            lambda row: f"sent {row.sent_at}, status {row.status or 'not given'}")
    since = now - timedelta(days=recent_days)
    sent = ledger.sent_since(_iso(since))
    kinds: dict[str, int] = {}
    for row in sent:
        kinds[row.kind] = kinds.get(row.kind, 0) + 1
    lines.append(f"Sent in the last {recent_days} days: {len(sent)}"
                 + (f" ({', '.join(f'{kind} {count}' for kind, count in sorted(kinds.items()))})" if sent else ""))
    strays = [i for i in outbox.pending() if ledger.outgoing(i) is None]
    if strays:
        lines.append(f"Files in the outbox the ledger does not know (left by a crash; set aside after an hour): {len(strays)}")
    return "\n".join(lines) + "\n"


def _give_up(outbox: Outbox, ledger: Ledger, settings: config.Smtp, admin: str, record: OutgoingRecord, error: SendError,
             counts: dict[str, Any]) -> list[str]:
    item_id = record.id
    ledger.give_up(item_id, f"given up after {settings.retry_for_hours:g} hours: {error}")
    outbox.set_aside(item_id)
    counts["failed"] += 1
    log.error("outbox item %s given up after %g hours: %s", item_id, settings.retry_for_hours, error)
    return _alert(outbox, ledger, settings, admin, record,
                  f"the relay did not take it for {settings.retry_for_hours:g} hours; the last answer was: {error}")


def _alert(outbox: Outbox, ledger: Ledger, settings: config.Smtp, admin: str, record: OutgoingRecord, why: str) -> list[str]:
    """Queue one alert about a message set aside; return its id so this run sends it too."""
    if record.kind in _NO_ALERTS_ABOUT or not admin:
        log.error("outbox item %s (%s) was set aside; no alert is sent about it", record.id, record.kind)
        return []
    record = ledger.outgoing(record.id) or record  # with this run's attempt counted
    notice: Outgoing = alert(record.reference, admin, settings.from_address, *not_delivered(record, why), key=record.id)
    return [notice.id] if queue_once(ledger, outbox, record.reference, notice) else []


def _backoff(attempts: int, settings: config.Smtp) -> timedelta:
    """About retry_first_minutes after the first failure, doubling to retry_max_minutes; jitter spreads a
    burst of deferred messages so they do not all come back in the same second."""
    ceiling = min(settings.retry_first_minutes * 2 ** min(attempts - 1, 30), settings.retry_max_minutes)
    return timedelta(minutes=ceiling * random.uniform(0.5, 1.0))


def _due(record: OutgoingRecord, now: datetime) -> bool:
    return not record.next_attempt_at or datetime.fromisoformat(record.next_attempt_at) <= now


def _queued_at(record: OutgoingRecord) -> datetime:
    return datetime.fromisoformat(record.queued_at or "")  # every queued row has its time


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds")


def _age(outbox: Outbox, item_id: str) -> float:
    try:
        return outbox.age(item_id)
    except FileNotFoundError:
        return 0.0


def _token(settings: config.Smtp, tokens: Tokens, where: str) -> str:
    try:
        return tokens.token(settings, "relay")
    except (SignInRefused, TokenServiceDown) as error:
        raise RelayDown(f"the relay at {where}: {error}") from None


def _xoauth2(relay: smtplib.SMTP, settings: config.Smtp, tokens: Tokens, token: str, where: str) -> None:
    """AUTH XOAUTH2 (an error challenge is answered empty, as the mechanism asks); a refusal of a token the
    service issued is a missing permission."""
    relay.ehlo_or_helo_if_needed()  # smtplib's auth, unlike its login, does not greet by itself
    try:
        relay.auth("XOAUTH2", lambda challenge=None: "" if challenge else xoauth2(settings.user, token))
    except smtplib.SMTPAuthenticationError:
        error = tokens.refused(settings, "relay", server_refused(settings, f"the relay at {where}"))
        raise RelayDown(str(error)) from None
    tokens.accepted(settings, "relay")


def _connect(settings: config.Smtp) -> smtplib.SMTP:
    if settings.security == "ssl":
        return smtplib.SMTP_SSL(settings.host, settings.port, timeout=settings.timeout, context=config.tls_context(settings.ca_file))
    relay = smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout)
    if settings.security == "starttls":
        try:
            relay.starttls(context=config.tls_context(settings.ca_file))
        except BaseException:
            relay.close()
            raise
    return relay
