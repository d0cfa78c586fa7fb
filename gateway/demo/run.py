"""`gateway demo`: the whole journey on servers embedded in this machine, with nothing to configure.

Three providers send returns to an IMAP mailbox (pymap), the gateway processes them once, and an
aiosmtpd relay keeps what it sends. Islington and Camden get one package per return; Hackney takes a
daily digest, which the demo sends at the end (as `gateway outbox --flush-digests` would) so that the
opened folder shows both kinds. Throwaway keys stand in for the boroughs' officers, so the demo
can open the packages and show what each borough received. The people in the returns are invented.
"""

from __future__ import annotations

import csv
import io
import os
import secrets
import shutil
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import cast

import pyzipper

from ..admin.scaffold import write_installation
from ..app import Gateway
from ..delivery.deliver import deliver
from ..delivery.digest import send_digests
from ..delivery.digest import waiting as waiting_rows
from ..intake.unpack import parse
from ..keys import Keyring
from ..pipeline import run_once
from ..reference.postcodes import Directory
from .embedded import ImapServer, Relay
from .sample import people, reason_csv, with_changes, workbook

MAILBOX = "ldor@gateway.demo"
ADMIN = "admin@gateway.demo"
BOROUGHS = {  # code: (name, recipient, format)
    "E09000019": ("Islington", "ldor@islington.demo", "xlsx"),
    "E09000007": ("Camden", "notifications@camden.demo", "xlsx"),
    "E09000012": ("Hackney", "data-unit@hackney.demo", "csv"),
}
DIGESTS = {"E09000012": "daily"}  # Hackney's rows wait for one package a day


@dataclass(frozen=True)
class DemoProvider:
    ukprn: str
    name: str
    sender: str
    form: str  # what the demo sends for it


PROVIDERS = (
    DemoProvider("10004321", "Northbank College", "mis@northbank.demo", "PGP-encrypted workbook (.xlsx.gpg)"),
    DemoProvider("10005678", "St Aidan's Sixth Form", "office@st-aidans.demo", "armoured PGP workbook (.asc), with mistakes"),
    DemoProvider("10007890", "Eastway Training", "returns@eastway.demo", "AES-256 zip (7-Zip style) of a csv export, password agreed with the administrator"),
)
STRANGER = "someone@unknown.demo"


def run_demo(folder: Path, build: Callable[[Path], Gateway], say: Callable[[str], None] = print) -> int:
    folder = _fresh(folder.absolute())
    directory = Directory()
    say(f"ldor-gateway demo: everything runs on this machine; files are in {folder}\n")
    with ImapServer(MAILBOX) as imap, Relay(folder / "relay") as relay:
        say(f"1. Mailbox: IMAP server (pymap) on {imap.host}:{imap.port}; mail relay (aiosmtpd) on {relay.host}:{relay.port}")
        gateway_keys, officers, senders = _keys(folder)
        gateway_fpr = gateway_keys.own_fingerprint()
        say(f"2. Keys: the gateway's own key {gateway_fpr}; one key per borough officer in {folder / 'keys'}")
        config = _configure(folder, imap, relay)
        say(f"3. Configuration written: {config} (rules in {folder / 'rules'})")

        say("4. Providers send their returns:")
        for provider, raw in _returns(directory, senders, gateway_keys.export_public(gateway_fpr)):
            imap.deliver(raw)
            say(f"     {provider.name} ({provider.ukprn}) from {provider.sender}: {provider.form}")
        imap.deliver(_message(STRANGER, "return.xlsx.gpg", b"-----BEGIN PGP MESSAGE-----\n\n-----END PGP MESSAGE-----\n"))
        say(f"     and a message from an address no provider registered ({STRANGER})")

        gateway = build(config)
        say("\n5. gateway run --once")
        result = run_once(gateway)
        say(f"     {result.seen} messages: {result.processed} processed, {result.quarantined} quarantined; "
            f"{result.delivery.sent} emails sent through the relay")
        say(f"     mailbox folders now: INBOX {imap.count('INBOX')}, Processed {imap.count('Processed')}, Quarantine {imap.count('Quarantine')}")
        _summaries(gateway, say)
        waiting = ", ".join(f"{BOROUGHS[w.code][0]} {w.rows} rows from {w.returns} returns" for w in waiting_rows(gateway.ledger))
        say(f"\n7. Rows waiting for a daily digest: {waiting or 'none'}; gateway outbox --flush-digests sends it now")
        made = send_digests(gateway, gateway.clock(), due_only=False)
        delivery = deliver(gateway).delivery
        say(f"     {made} digest built; {delivery.sent} email sent through the relay")
        _opened(folder, relay, officers, say)
        _receipts(relay, say)
        gateway.keyring.stop_agent()
        for keyring in [gateway_keys, *officers.values(), *senders.values()]:
            keyring.stop_agent()
    say(f"\nThe gateway's ledger (counts and ids only): {folder / 'var' / 'gateway.db'}")
    return 0


def _fresh(folder: Path) -> Path:
    if folder.exists():
        if not (folder / ".ldor-demo").exists():
            raise SystemExit(f"{folder} exists and was not made by `gateway demo`; choose another --dir")
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    (folder / ".ldor-demo").write_text("made by gateway demo; deleted by the next run\n")
    return folder


def _keys(folder: Path) -> tuple[Keyring, dict[str, Keyring], dict[str, Keyring]]:
    gateway = Keyring(folder / "var" / "gnupg")
    gateway.generate("LDOR gateway (demo)", MAILBOX)
    (folder / "keys").mkdir()
    officers = {}
    for name, address, _ in BOROUGHS.values():
        keyring = Keyring(folder / "people" / name.lower() / "gnupg")
        fingerprint = keyring.generate(f"{name} LDOR officer (demo)", address)
        (folder / "keys" / f"{address}.asc").write_text(keyring.export_public(fingerprint))
        officers[address] = keyring
    senders = {}
    for provider in PROVIDERS:
        keyring = Keyring(folder / "people" / provider.ukprn / "gnupg")
        senders[provider.ukprn] = keyring
    return gateway, officers, senders


ZIP_PASSWORD_ENV = "LDOR_DEMO_PW_10007890"


def _configure(folder: Path, imap: ImapServer, relay: Relay) -> Path:
    os.environ["LDOR_DEMO_IMAP_PASSWORD"] = imap.password
    os.environ[ZIP_PASSWORD_ENV] = secrets.token_urlsafe(12)
    config = write_installation(
        folder, imap=(imap.host, imap.port, MAILBOX, "LDOR_DEMO_IMAP_PASSWORD"), smtp=(relay.host, relay.port),
        sender=MAILBOX, admin=ADMIN, boroughs=BOROUGHS, deliveries=DIGESTS,
        providers=[(p.ukprn, p.name, p.sender, "E09000019") for p in PROVIDERS],
    )
    providers = folder / "rules" / "providers.toml"  # Eastway protects its zips with an agreed password
    providers.write_text(providers.read_text() + f'password_env = "{ZIP_PASSWORD_ENV}"\n')
    return config


def _returns(directory: Directory, senders: dict[str, Keyring],
             gateway_key: str) -> Iterator[tuple[DemoProvider, bytes]]:
    """The three providers' messages, each encrypted to the gateway's key as its provider would."""
    northbank, aidans, eastway = PROVIDERS
    crowd = people(directory, {"E09000019": 7, "E09000007": 6, "E09000012": 5, "E09000028": 2}, seed=11)
    yield northbank, _message(northbank.sender, "November return.xlsx.gpg",
                              _encrypt(senders[northbank.ukprn], gateway_key, workbook(northbank.name, northbank.ukprn, [p.cells() for p in crowd])))

    mixed = people(directory, {"E09000019": 4, "E09000007": 4, "E09000012": 4}, seed=12)
    mistakes = [
        with_changes(mixed[0], postcode="N1 XYZ"),
        with_changes(mixed[1], family_name=""),
        with_changes(mixed[2], uln="9276308687"),
    ]
    sent = mistakes + mixed[3:]
    rows = [p.cells() for p in sent]
    rows[4][3] = sent[4].dob.strftime("%d/%m/%Y")  # a date typed as text: accepted
    rows[5][8] = rows[5][9] = "X"  # two reasons ticked: rejected
    yield aidans, _message(aidans.sender, "LDOR Nov.xlsx.asc",
                           _encrypt(senders[aidans.ukprn], gateway_key, workbook(aidans.name, aidans.ukprn, rows), armour=True))

    trainees = people(directory, {"E09000012": 4, "E09000019": 2}, seed=13)
    yield eastway, _message(eastway.sender, "export.zip", _aes_zip("export.csv", reason_csv(trainees), os.environ[ZIP_PASSWORD_ENV]))


def _encrypt(sender: Keyring, gateway_key: str, data: bytes, armour: bool = False) -> bytes:
    fingerprint = sender.import_key(gateway_key)
    return sender.encrypt(data, fingerprint, armour=armour)


def _aes_zip(name: str, data: bytes, password: str) -> bytes:
    buffer = io.BytesIO()
    with pyzipper.AESZipFile(buffer, "w", compression=pyzipper.ZIP_DEFLATED, encryption=pyzipper.WZ_AES) as archive:
        archive.setpassword(password.encode())
        archive.writestr(name, data)
    return buffer.getvalue()


def _message(sender: str, filename: str, data: bytes) -> bytes:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = MAILBOX
    message["Subject"] = "Leavers and joiners return"
    message.set_content("Please find attached our return.\n")
    message.add_attachment(data, maintype="application", subtype="octet-stream", filename=filename)
    return message.as_bytes()


def _summaries(gateway: Gateway, say: Callable[[str], None]) -> None:
    say("\n6. What the gateway did with each message (from its ledger: counts only)")
    names = {p.ukprn: p.name for p in gateway.rules.providers.values()}
    say(f"     {'reference':<26}{'provider':<24}{'outcome':<13}{'read':>5}{'sent on':>9}{'rejected':>10}{'warnings':>10}")
    for row in gateway.ledger.messages():
        say(f"     {row.reference:<26}{names.get(row.provider or '', '(unknown sender)'):<24}{row.outcome or '':<13}"
            f"{row.rows_read or 0:>5}{row.rows_forwarded or 0:>9}{row.rows_rejected or 0:>10}{row.warnings or 0:>10}")


def _opened(folder: Path, relay: Relay, officers: dict[str, Keyring], say: Callable[[str], None]) -> None:
    say(f"\n8. What each borough received, opened with its officer's key (demo only) into {folder / 'opened'}")
    for code, (name, address, fmt) in BOROUGHS.items():
        rows, files, notes = 0, [], []
        for recipients, path in relay.received:
            if address not in recipients:
                continue
            message = parse(path.read_bytes())
            notes += [line for line in _plain(message).splitlines() if line.startswith("  LDOR-")]
            for part in message.iter_attachments():
                filename = part.get_filename()
                if filename is None:  # every package the gateway sends is named NAME.gpg
                    continue
                # An attachment is no multipart: decoded, its payload is bytes.
                plain = officers[address].decrypt(cast(bytes, part.get_payload(decode=True))).data
                target = folder / "opened" / name.lower() / filename[: -len(".gpg")]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(plain)
                files.append(target)
                rows += _count_rows(plain, fmt)
        kind = f"{DIGESTS[code]} digest" if code in DIGESTS else "one package per return"
        say(f"     {name:<10} {address:<28} {len(files)} package(s), {rows} young people ({kind})")
        for path in files:
            say(f"                {path.relative_to(folder)}")
        if code in DIGESTS:
            say("                its covering note lists the returns it holds:")
            for line in notes:
                say(f"                {line}")


def _count_rows(data: bytes, fmt: str) -> int:
    if fmt == "csv":
        return max(0, len(list(csv.reader(io.StringIO(data.decode("utf-8-sig"))))) - 1)
    import openpyxl  # openpyxl ships no type information

    sheet = openpyxl.load_workbook(io.BytesIO(data), read_only=True).worksheets[0]
    return max(0, sum(1 for _ in sheet.iter_rows()) - 1)


def _receipts(relay: Relay, say: Callable[[str], None]) -> None:
    say("\n9. Receipts and alerts (these travel in clear, so they hold no personal data):")
    for recipients, path in relay.received:
        message = parse(path.read_bytes())
        subject = str(message["Subject"])
        if not subject.startswith(("LDOR receipt", "LDOR return not accepted", "LDOR gateway:")):
            continue
        say(f"     to {', '.join(recipients):<28} {subject}  ({path.relative_to(relay.folder.parent)})")
        for line in _plain(message).splitlines():
            if " digest: your " in line:
                say(f"        {line.strip()}")
        for part in message.iter_attachments():
            if (part.get_filename() or "").endswith("findings.csv"):
                rows = list(csv.DictReader(io.StringIO(part.get_content().lstrip("\ufeff"))))
                counts = Counter((row["Severity"], row["Rule"]) for row in rows)
                say("        findings: " + ", ".join(f"{sev} {rule} x{n}" for (sev, rule), n in sorted(counts.items())))


def _plain(message: EmailMessage) -> str:
    """The message's plain-text body; "" if it has none."""
    body = message.get_body(("plain",))
    text: str = body.get_content() if body is not None else ""
    return text
