"""Queued messages -> the SMTP relay (smtplib); each failure classed as retryable or permanent."""

from __future__ import annotations

import email
import email.policy
import email.utils
import hashlib
import logging
import smtplib
import ssl
from dataclasses import dataclass

from . import config
from .errors import SendError
from .ledger import Ledger
from .outbox import Outbox

log = logging.getLogger(__name__)

ORPHAN_SECONDS = 3600


@dataclass(frozen=True)
class Delivery:
    sent: int = 0
    deferred: int = 0
    failed: int = 0


def send(raw: bytes, settings: config.Smtp) -> None:
    """Hand one message to the relay; SendError.retryable tells whether trying later may help."""
    message = email.message_from_bytes(raw, policy=email.policy.default)
    recipients = [address for _, address in email.utils.getaddresses(message.get_all("To", []))]
    if not recipients:
        raise SendError("the queued message has no recipient", retryable=False)
    try:
        with _connect(settings) as relay:
            if settings.user:
                relay.login(settings.user, config.secret(settings.password_env) or "")
            relay.sendmail(settings.from_address, recipients, raw)
    except smtplib.SMTPRecipientsRefused as error:
        codes = [code for code, _ in error.recipients.values()]
        raise SendError(f"the relay refused the recipient (SMTP {codes[0]})", retryable=all(400 <= c < 500 for c in codes)) from None
    except smtplib.SMTPResponseException as error:
        raise SendError(f"the relay answered SMTP {error.smtp_code}", retryable=400 <= error.smtp_code < 500) from None
    except ssl.SSLCertVerificationError:
        raise SendError(f"the relay at {settings.host}:{settings.port} presented a certificate this machine does not trust; "
                        "if it uses a private CA, name its certificate in [smtp] ca_file", retryable=True) from None
    except (smtplib.SMTPException, OSError) as error:
        raise SendError(f"cannot reach the relay at {settings.host}:{settings.port} ({type(error).__name__})", retryable=True) from None


def flush(outbox: Outbox, ledger: Ledger, settings: config.Smtp) -> Delivery:
    """Try every queued message once; sent ones leave the outbox, permanent failures are set aside."""
    sent = deferred = failed = 0
    for item_id in outbox.pending():
        raw = outbox.read(item_id)
        record = ledger.outgoing(item_id)
        if record is None:
            # Queued by a run that stopped before its ledger commit: that message is processed again
            # and this file replaced, so leave it unless it has been orphaned for long.
            if outbox.age(item_id) > ORPHAN_SECONDS:
                log.error("outbox item %s was never recorded in the ledger; set aside, not sent", item_id)
                outbox.set_aside(item_id)
                failed += 1
            continue
        if record["sha256"] != hashlib.sha256(raw).hexdigest():
            log.error("outbox item %s does not match the hash the ledger recorded; set aside, not sent", item_id)
            outbox.set_aside(item_id)
            failed += 1
            continue
        if record["state"] == "sent":  # sent, but the crash came before the file was removed
            outbox.remove(item_id)
            continue
        try:
            send(raw, settings)
        except SendError as error:
            ledger.mark_failed(item_id, str(error), permanent=not error.retryable)
            if error.retryable:
                deferred += 1
                log.warning("outbox item %s deferred: %s", item_id, error)
            else:
                failed += 1
                outbox.set_aside(item_id)
                log.error("outbox item %s failed permanently: %s", item_id, error)
            continue
        ledger.mark_sent(item_id)
        outbox.remove(item_id)
        sent += 1
        log.info("outbox item %s sent (%s)", item_id, record["kind"])
    return Delivery(sent, deferred, failed)


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
