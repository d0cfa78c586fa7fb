"""What test modules share besides fixtures: the fixtures' people and addresses, the throwaway keys, an
installation wired to the test servers, and readers for what the gateway sends."""

from __future__ import annotations

import contextlib
import email
import email.policy
import io
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import gnupg
import openpyxl
from servers import Dovecot, SmtpCapture, export_public, gnupg_home, make_key

from gateway.admin.scaffold import write_installation

BOROUGHS = {
    "E09000019": ("Islington", "ldor@islington.example", "xlsx"),
    "E09000007": ("Camden", "ldor@camden.example", "xlsx"),
    "E09000012": ("Hackney", "ldor@hackney.example", "csv"),
}
PROVIDER_UKPRN = "10001234"
PROVIDER_SENDER = "mis@example-college.example"
ADMIN = "admin@example.org"
GATEWAY_ADDRESS = "ldor@example.org"


@dataclass
class Keys:
    """Throwaway keys: the gateway's (secret in its own keyring), the provider's, and one per borough."""

    gateway_home: Path
    gateway_fpr: str
    gateway_public: str
    provider_home: Path
    borough_homes: dict[str, Path]  # recipient address -> gnupg home holding its secret key
    borough_public: dict[str, str]  # recipient address -> armoured public key

    def gpg(self, home: Path) -> gnupg.GPG:
        return gnupg.GPG(gnupghome=str(home))

    def encrypt_for_gateway(self, data: bytes, extra: list[str] | None = None) -> bytes:
        gpg = self.gpg(self.provider_home)
        result = gpg.encrypt(data, [self.gateway_fpr], always_trust=True, armor=False, extra_args=extra)
        assert result.ok, result.status
        return result.data


@contextlib.contextmanager
def throwaway_keys(root: Path) -> Iterator[Keys]:
    """The gateway's, the provider's and each borough officer's keys, made in `root`; agents stopped after."""
    with contextlib.ExitStack() as homes:
        gateway = homes.enter_context(gnupg_home(root / "gateway"))
        provider = homes.enter_context(gnupg_home(root / "provider"))
        gateway_fpr = make_key(gateway, "LDOR gateway", GATEWAY_ADDRESS)
        make_key(provider, "Example College MIS", PROVIDER_SENDER)
        gateway_public = export_public(gateway, gateway_fpr)
        gnupg.GPG(gnupghome=str(provider)).import_keys(gateway_public)
        officers, public = {}, {}
        for _, address, _ in BOROUGHS.values():
            home = homes.enter_context(gnupg_home(root / address.split("@")[1].split(".")[0]))
            officers[address] = home
            public[address] = export_public(home, make_key(home, f"LDOR officer {address}", address))
        yield Keys(gateway, gateway_fpr, gateway_public, provider, officers, public)


@dataclass
class Deployment:
    """A gateway installation in a temporary folder, wired to the test servers."""

    root: Path
    config: Path
    imap: Dovecot
    smtp: SmtpCapture
    keys: Keys

    def run_once(self, *extra: str) -> int:
        from gateway.cli import main

        return main(["--config", str(self.config), *extra, "run", "--once"])

    def deliver(self, raw: bytes) -> None:
        self.imap.append(raw)

    def captured(self) -> list[EmailMessage]:
        return [email.message_from_bytes(m.data, policy=email.policy.default) for m in self.smtp.messages]


def install(root: Path, keys: Keys, imap: tuple[str, int, str, str], smtp: tuple[str, int], **options) -> Path:
    """An installation in `root` for the test servers: the session's gateway keyring (copied, so each
    test starts from the same keys), the boroughs' public keys, and config and rules; its config path."""
    (root / "keys").mkdir(parents=True)
    shutil.copytree(keys.gateway_home, root / "var" / "gnupg", ignore=shutil.ignore_patterns("S.*", "*.lock"))
    for address, public in keys.borough_public.items():
        (root / "keys" / f"{address}.asc").write_text(public)
    return write_installation(
        root, imap=imap, smtp=smtp, sender=GATEWAY_ADDRESS, admin=ADMIN, boroughs=BOROUGHS,
        providers=[(PROVIDER_UKPRN, "Example College", PROVIDER_SENDER, "E09000019")], **options,
    )


def provider_message(attachments: list[tuple[str, bytes]], sender: str = PROVIDER_SENDER, subject: str = "LDOR return") -> bytes:
    """An email as a provider's mail client sends it: a short note and the encrypted return attached."""
    message = EmailMessage()
    message["From"] = f"College MIS <{sender}>"
    message["To"] = GATEWAY_ADDRESS
    message["Subject"] = subject
    message.set_content("Please find our return attached.\n")
    for name, data in attachments:
        message.add_attachment(data, maintype="application", subtype="octet-stream", filename=name)
    return message.as_bytes()


def attachments_of(message: EmailMessage) -> dict[str, bytes]:
    return {part.get_filename(): part.get_payload(decode=True) for part in message.iter_attachments()}


def read_xlsx(data: bytes) -> list[list[object]]:
    book = openpyxl.load_workbook(io.BytesIO(data), read_only=True)
    return [list(row) for row in book.worksheets[0].iter_rows(values_only=True)]
