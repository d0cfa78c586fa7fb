"""Every letter the gateway writes to a person, other than the provider's receipt (receipt.py).

Alerts to the administrator, notes to boroughs' recipients about held packages, key-expiry warnings,
reminders to providers, the monthly report's mail and the short answer to an unregistered sender. Each
holds ids, counts, addresses and organisations' names only: they travel in clear. Whoever queues them
does it through alerts.queue_once (or, for mail that is part of one message's outcome, with that outcome),
under a deterministic id.
"""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING, NamedTuple

from ..ledger import Kind
from ..mail import Outgoing, compose, outgoing_id

if TYPE_CHECKING:
    from ..config import Config
    from ..errors import OwnKeyLocked, SignInRefused
    from ..keys import PublicKey
    from ..ledger import OutgoingRecord
    from ..rules import Borough, Provider
    from .held import HeldPackage


class Notice(NamedTuple):
    """An alert's subject and text, before it is addressed (alerts.notify_admin(..., *notice) addresses it)."""

    subject: str
    text: str


def alert(reference: str, to: str, sender: str, subject: str, text: str, key: str = "") -> Outgoing:
    """A notice to the administrator: ids and counts only, so it may travel in clear.

    `key` tells apart several alerts of one subject about one reference.
    """
    item_id = outgoing_id(reference, Kind.ALERT, subject, key)
    raw = compose(item_id=item_id, sender=sender, to=to, subject=f"LDOR gateway: {subject} [{reference}]", body=text)
    return Outgoing(item_id, Kind.ALERT, to, raw)


# -- the outbox -----------------------------------------------------------------------------------------
def not_delivered(record: OutgoingRecord, why: str) -> Notice:
    """A message set aside in outbox/bad/ (refused, given up, or its file damaged)."""
    what = record.kind + (f" for borough {record.borough}" if record.borough else "")
    return Notice("message not delivered", (
        f"A message from the gateway was NOT delivered and has been set aside.\n\n"
        f"Message id: {record.id}\nWhat: {what}, to {record.recipient}\n"
        f"Gateway reference: {record.reference}\nQueued: {record.queued_at}\n"
        f"Attempts: {record.attempts or 0}\nWhy: {why}.\n\n"
        f"It is kept in the outbox's bad/ folder as {record.id}.eml.\n\n"
        "What to do: fix the cause (the recipient's address in rules/, the relay settings in config.toml, "
        f"or the relay itself), then queue it again with: gateway outbox --retry {record.id}\n"
        "The command `gateway outbox` lists everything queued, held, failed and bounced."
    ))


def bounced(original: OutgoingRecord, status: str, action: str, reference: str) -> Notice:
    """A message the gateway sent came back as undeliverable (the bounce's status and action); `reference` is
    the bounce's own."""
    what = original.kind + (f" for borough {original.borough}" if original.borough else "")
    package = original.kind in (Kind.PACKAGE, Kind.DIGEST)
    where = "the borough's recipients in rules/boroughs.toml" if package else "the address in rules/"
    return Notice("message bounced", (
        "A message the gateway sent was returned as undeliverable by the receiving mail system.\n\n"
        f"Message id: {original.id}\nWhat: {what}, to {original.recipient}\n"
        f"Gateway reference: {original.reference}\n"
        f"Status: {status or 'not given'} ({action})\n"
        f"Bounce received as gateway reference: {reference}\n\n"
        f"What to do: check {where} with the recipient's organisation."
        + (" The rows in it have NOT reached the borough, and the gateway keeps no copy of a package once it is "
           "sent (it is encrypted to the recipient's key): once the address is right, ask the provider to send "
           "those rows again." if package else "")
    ))


# -- quarantine -----------------------------------------------------------------------------------------
HOSTILE = ("a message carrying a file built to do harm (for example a zip bomb)",
           "Do not open the attachment. The message is in the quarantine folder; ask the provider whether they sent "
           "it, as their mailbox may be compromised.")
UNKNOWN_SENDER = "a message from a sender not registered for any provider"  # the advice is UnknownSender's
NOT_HANDLED = "a message the gateway could not handle"


def not_handled(error: BaseException) -> str:
    return (f"Handling failed with {type(error).__name__}. The message is in the quarantine folder; the log has the "
            "place in the code. Report it to the gateway's maintainers.")


def stopped_on(attempts: int) -> tuple[str, str]:
    """What and what to do for a message the process died on `attempts` times."""
    return (f"a message on which the gateway stopped {attempts} times while handling it "
            "(a crash, or the memory limit of the machine)",
            "Do not open the attachment on a working machine. The message is in the quarantine folder; "
            "report it to the gateway's maintainers with the gateway reference, and keep it until they have looked.")


def quarantined(config: Config, reference: str, uid: int, sender: str, what: str, todo: str,
                replied: bool) -> Outgoing:
    """The administrator told what arrived, from which address, and what to do. The sender's address is no
    young person's data; the subject and the attachments' names may be, and are never quoted."""
    return alert(
        reference, config.admin.email, config.smtp.from_address, "message quarantined",
        f"The gateway received {what}.\n\nSender's address: {sender}\nGateway reference: {reference}\n"
        f"Mailbox UID: {uid}\n"
        f"Moved to the folder: {config.mailbox.quarantine_folder}\n\nWhat to do: {todo}\n\n"
        + ("The sender, a registered provider, was sent a rejection saying the file was not accepted and what to do."
           if replied else "No reply was sent to the sender."),
    )


def stranger_reply(config: Config, reference: str, address: str) -> Outgoing:
    """A short answer to an unregistered sender (only when the configuration asks for it)."""
    text = (
        "Your email reached the secure mailbox for leavers and joiners returns, but your address is not "
        "registered for any provider, so nothing in it has been opened or forwarded.\n\n"
        f"Gateway reference: {reference}\n\n"
        "If you send returns for a school, college or training provider, ask the gateway administrator "
        f"({config.admin.email}) to register this address, then send the return again."
    )
    item_id = outgoing_id(reference, Kind.STRANGER_REPLY, address)
    body = compose(item_id=item_id, sender=config.smtp.from_address, to=address,
                   subject=f"LDOR return not accepted: address not registered [{reference}]", body=text)
    return Outgoing(item_id, Kind.RECEIPT, address, body)


# -- the gateway's own key ------------------------------------------------------------------------------
def own_key_locked(config: Config, reference: str, locked: OwnKeyLocked) -> Notice:
    return Notice("the gateway's own key cannot decrypt", (
        f"The gateway could not decrypt a return with its own key: {locked}.\n\n"
        f"Gateway reference of the first message waiting: {reference}\n\n"
        "No provider has been answered: the encrypted returns stay in the mailbox folder "
        f"{config.mailbox.folder}, unopened, and are handled at the first run after the key works again. "
        f"What to do: {locked.advice}\n\n"
        "This alert is sent once; the next is sent only if the key fails again after working."
    ))


# -- held packages --------------------------------------------------------------------------------------
def held_notices(held: list[HeldPackage], config: Config) -> list[Outgoing]:
    """For each held package an alert to the administrator, and a note to the borough's other recipients
    (ids and counts only: both travel in clear)."""
    notices = []
    for package in held:
        borough = package.borough
        notices.append(alert(
            package.reference, config.admin.email, config.smtp.from_address,
            f"package for {borough.name} held: no usable key",
            f"A package of {package.rows} notification(s) for {borough.name} ({borough.code}), recipient "
            f"{package.recipient}, from gateway reference {package.reference} is held and has NOT been sent.\n\n"
            f"Why: {package.why}.\n\n"
            f"It is kept in the outbox encrypted to the gateway's own key (package id {package.id}), and is sent "
            "by itself at the first run after a usable key for the recipient is in keys/.\n\n"
            "What to do: put the recipient's current public key (one .asc file) in keys/, run `gateway check`, "
            "and tell the borough. Nothing is ever sent unencrypted. The provider's receipt says these rows "
            "are accepted but not yet sent.",
            key=package.recipient,
        ))
    by_borough: dict[tuple[str, str], list[HeldPackage]] = {}
    for package in held:
        by_borough.setdefault((package.reference, package.borough.code), []).append(package)
    for (reference, code), packages in by_borough.items():
        borough, waiting = packages[0].borough, {p.recipient for p in packages}
        for to in borough.recipients:
            others = sorted(waiting - {to})
            if not others:
                continue
            own = ("Your own copy is held too, for the same reason: please send the administrator your current "
                   "public key."
                   if to in waiting else "Your own copy has been sent to you separately.")
            text = (
                f"A package of {packages[0].rows} notification(s) for {borough.name} ({code}), gateway reference "
                f"{reference}, could not yet be sent to: {', '.join(others)}.\n\n"
                "Why: the gateway holds no usable encryption key for that address. The package is kept encrypted "
                "and will be sent by itself as soon as a current key is in place; nothing is ever sent unencrypted.\n\n"
                f"{own}\n\nThe gateway's administrator ({config.admin.email}) has been told. This message holds no "
                "personal data."
            )
            item_id = outgoing_id(reference, Kind.NOTICE, code, to)
            raw = compose(item_id=item_id, sender=config.smtp.from_address, to=to,
                          subject=f"LDOR notifications for {borough.name}: a copy is held [{reference}]", body=text)
            notices.append(Outgoing(item_id, Kind.NOTICE, to, raw, code))
    return notices


# -- key expiry -----------------------------------------------------------------------------------------
def key_warning_to_recipient(config: Config, key: PublicKey, when: str, expired: bool, recipient: str,
                             boroughs: list[Borough], name: str) -> Outgoing:
    """`when`: "expired on ..." or "expires on ... (in N days)"; `name`: the job's name for the key and stage."""
    effect = ("Since then, notifications for you are held, encrypted, and NOT sent: they go out by themselves as "
              "soon as the administrator has put your renewed key in place."
              if expired else
              "After that date the gateway cannot encrypt to this key: notifications for you would be held, "
              "encrypted, until the administrator has your renewed key. Nothing is ever sent unencrypted.")
    text = "\n".join([
        "The gateway that sends you leavers and joiners notifications encrypts them to your OpenPGP key.",
        "",
        f"Key fingerprint: {key.fingerprint}",
        f"Your address:    {recipient}",
        f"Receiving for:   {', '.join(f'{b.name} ({b.code})' for b in boroughs)}",
        f"The key {when}.",
        "",
        effect,
        "",
        "What to do: extend the key's expiry date, the key's and its encryption subkey's:",
        f"    gpg --quick-set-expire {key.fingerprint} 2y",
        f"    gpg --quick-set-expire {key.fingerprint} 2y '*'",
        "or make a new key; then send the public key (gpg --armor --export "
        f"{recipient}) to the gateway's administrator, {config.admin.email}.",
        "",
        "This message holds no personal data.",
    ]) + "\n"
    item_id = outgoing_id(name, recipient)
    subject = f"LDOR gateway: your encryption key {when}"
    raw = compose(item_id=item_id, sender=config.smtp.from_address, to=recipient, subject=subject, body=text)
    return Outgoing(item_id, Kind.NOTICE, recipient, raw, boroughs[0].code)


def key_warning_to_admin(key: PublicKey, when: str, expired: bool,
                         recipients: dict[str, list[Borough]]) -> Notice:
    who = [f"  {recipient}, for {', '.join(f'{b.name} ({b.code})' for b in boroughs)}"
           for recipient, boroughs in sorted(recipients.items())]
    text = "\n".join([
        f"The key {key.fingerprint} {when}. Packages are encrypted to it for:",
        *who,
        "",
        ("Packages for these recipients are held (encrypted, never sent in clear) until a usable key is in keys/."
         if expired else "After that date their packages will be held until a renewed key is in keys/."),
        "Each recipient has been sent the same warning, asking for a renewed key.",
        "",
        "What to do: put each recipient's renewed public key in keys/ (replacing the old .asc file) and run "
        "`gateway check`; held packages are then sent by themselves.",
    ]) + "\n"
    names = ", ".join(sorted({b.name for boroughs in recipients.values() for b in boroughs}))
    return Notice(f"encryption key for {names} {when.split(' (')[0]}", text)


def own_key_expiring(config: Config, key: PublicKey, when: str) -> Notice:
    """Providers encrypt their returns to the gateway's own key: once it expires they cannot."""
    return Notice(f"the gateway's own key {when.split(' (')[0]}", (
        f"The gateway's own key {key.fingerprint}, which providers encrypt their returns to, {when}.\n\n"
        "Once it has expired, providers' encryption programs refuse it, and returns stop arriving.\n\n"
        f"What to do: extend it (gpg --homedir {config.gnupg.home} --quick-set-expire {key.fingerprint} 2y, "
        "and again with '*' after it for its encryption subkey), then restart the gateway. Its receipts carry "
        "the public key, so providers pick up the new date from their next receipt.\n"
    ))


# -- reminders ------------------------------------------------------------------------------------------
def _day(moment: date) -> str:
    return f"{moment.day} {moment:%B %Y}"


def reminder(config: Config, provider: Provider, to: str, month: str, today: date, due: date,
             name: str) -> Outgoing:
    first = date.fromisoformat(f"{month}-01")
    late = today > due
    text = "\n".join([
        "Leavers and joiners return: reminder",
        "",
        f"Provider: {provider.name} (UKPRN {provider.ukprn})",
        f"Month:    {first:%B %Y}",
        f"Due by:   {_day(due)}",
        "",
        ("The gateway has not received an accepted return from you this month, and it was due by "
         f"{_day(due)}. Please send it as soon as you can." if late else
         f"The gateway has not yet received an accepted return from you this month. Please send it by {_day(due)}."),
        "",
        f"Send it as before: the return attached, encrypted to the gateway's key, to {config.smtp.from_address}. "
        "If you sent one and its receipt says NOT ACCEPTED, please correct it and send it again: a return "
        "counts once it has been accepted. If you sent it in the last few hours, please disregard this reminder.",
        "",
        f"Questions: the gateway's administrator, {config.admin.email}.",
        "This message holds no personal data.",
    ]) + "\n"
    item_id = outgoing_id(name, to)
    subject = f"LDOR return for {first:%B %Y}: {'overdue' if late else 'reminder'} (UKPRN {provider.ukprn})"
    raw = compose(item_id=item_id, sender=config.smtp.from_address, to=to, subject=subject, body=text)
    return Outgoing(item_id, Kind.REMINDER, to, raw)


def not_reminded(providers: list[Provider], month: str) -> Notice:
    lines = [f"  {p.ukprn}  {p.name}" for p in sorted(providers, key=lambda p: p.ukprn)]
    return Notice(f"providers not reminded for {month}", (
        f"These providers have not returned for {month}, but could not be reminded: rules/providers.toml gives "
        "them only @domain senders and no receipts_to address.\n\n" + "\n".join(lines) + "\n\n"
        "What to do: remind them yourself, and give each an exact sender address or receipts_to.\n"
    ))


# -- the monthly report ---------------------------------------------------------------------------------
def report_mail(config: Config, name: str, month: str, report_text: str, audit_check: str, xlsx: bytes) -> Outgoing:
    """The monthly report to the administrator: the text in the body, the xlsx attached, the audit trail's head."""
    text = report_text + "\nThe gateway's audit trail (gateway audit verify):\n" + audit_check
    item_id = outgoing_id(name, config.admin.email)
    raw = compose(item_id=item_id, sender=config.smtp.from_address, to=config.admin.email,
                  subject=f"LDOR monitoring report for {month} [{name}]", body=text,
                  attachments=((f"ldor-report-{month}.xlsx",
                                "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", xlsx),))
    return Outgoing(item_id, Kind.REPORT, config.admin.email, raw)


# -- the daemon -----------------------------------------------------------------------------------------
def signin_refused(error: SignInRefused, hold_minutes: float) -> Notice:
    """The mailbox refused the app's sign-in."""
    return Notice("mailbox sign-in refused", (
        f"The gateway cannot sign in to the mailbox, so returns wait there unread.\n\n{error}.\n\n"
        f"It tries again by itself, at most every {hold_minutes:.0f} minutes; {error.advice}"
    ))


def mailbox_not_checked(config: Config, minutes: int) -> Notice:
    return Notice("mailbox not checked", (
        f"The gateway has not managed to check the mailbox for {minutes} minutes. Returns may be waiting.\n\n"
        f"What to do: check that the mail server {config.mailbox.host} is up and that the gateway's "
        "password is still valid; the gateway's log says what went wrong. It keeps trying by itself."
    ))


def rules_refused(error: BaseException) -> Notice:
    return Notice("edited rules refused", (
        "The rule files or keys were edited, but the new version has problems, so the gateway goes on "
        f"with the previous rules.\n\nWhat `gateway check` says:\n{error}\n\n"
        "What to do: correct the files and save them again; the gateway picks them up by itself."
    ))
