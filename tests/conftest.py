"""Shared fixtures: real Dovecot, a real SMTP relay in a thread, real gpg keys, real SQLite files."""

from __future__ import annotations

import contextlib
import email
import email.policy
import io
import os
import signal
import time
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Iterator

import gnupg
import pytest

from servers import Dovecot, SmtpCapture, export_public, gnupg_home, make_key

from gateway.postcodes import Directory
from gateway.scaffold import write_installation

BOROUGHS = {
    "E09000019": ("Islington", "ldor@islington.example", "xlsx"),
    "E09000007": ("Camden", "ldor@camden.example", "xlsx"),
    "E09000012": ("Hackney", "ldor@hackney.example", "csv"),
}
PROVIDER_UKPRN = "10001234"
PROVIDER_SENDER = "mis@example-college.example"
ADMIN = "admin@example.org"
GATEWAY_ADDRESS = "ldor@example.org"


@pytest.fixture(scope="session")
def directory() -> Directory:
    return Directory()


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
    with gnupg_home(root / "gateway") as gateway, gnupg_home(root / "provider") as provider:
        homes = {}
        stack = []
        try:
            gateway_fpr = make_key(gateway, "LDOR gateway", GATEWAY_ADDRESS)
            make_key(provider, "Example College MIS", PROVIDER_SENDER)
            gateway_public = export_public(gateway, gateway_fpr)
            gnupg.GPG(gnupghome=str(provider)).import_keys(gateway_public)
            public = {}
            for _, address, _ in BOROUGHS.values():
                cm = gnupg_home(root / address.split("@")[1].split(".")[0])
                home = cm.__enter__()
                stack.append(cm)
                fpr = make_key(home, f"LDOR officer {address}", address)
                homes[address] = home
                public[address] = export_public(home, fpr)
            yield Keys(gateway, gateway_fpr, gateway_public, provider, homes, public)
        finally:
            for cm in stack:
                cm.__exit__(None, None, None)


@pytest.fixture(scope="session")
def keys(tmp_path_factory) -> Iterator[Keys]:
    with throwaway_keys(tmp_path_factory.mktemp("keys")) as made:
        yield made


@pytest.fixture
def ring(tmp_path):
    """A fresh gateway keyring holding its own new secret key."""
    from gateway.keys import Keyring

    keyring = Keyring(tmp_path / "gateway-keyring")
    keyring.generate("LDOR gateway", GATEWAY_ADDRESS)
    yield keyring
    keyring.stop_agent()


@pytest.fixture
def imap(tmp_path) -> Dovecot:
    with Dovecot(tmp_path / "imap", user=GATEWAY_ADDRESS, password="imap-secret") as server:
        yield server


@pytest.fixture
def smtp() -> SmtpCapture:
    with SmtpCapture() as server:
        yield server


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
    import shutil

    (root / "keys").mkdir(parents=True)
    shutil.copytree(keys.gateway_home, root / "var" / "gnupg", ignore=shutil.ignore_patterns("S.*", "*.lock"))
    for address, public in keys.borough_public.items():
        (root / "keys" / f"{address}.asc").write_text(public)
    return write_installation(
        root, imap=imap, smtp=smtp, sender=GATEWAY_ADDRESS, admin=ADMIN, boroughs=BOROUGHS,
        providers=[(PROVIDER_UKPRN, "Example College", PROVIDER_SENDER, "E09000019")], **options,
    )


@pytest.fixture
def deployment(tmp_path, imap, smtp, keys, monkeypatch) -> Deployment:
    root = tmp_path / "gateway"
    config = install(root, keys, (imap.host, imap.port, imap.user, "TEST_IMAP_PASSWORD"), (smtp.host, smtp.port), timeout=10)
    monkeypatch.setenv("TEST_IMAP_PASSWORD", imap.password)
    yield Deployment(root, config, imap, smtp, keys)
    from servers import kill_agents

    kill_agents(root / "var" / "gnupg")


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
    import openpyxl

    book = openpyxl.load_workbook(io.BytesIO(data), read_only=True)
    return [list(row) for row in book.worksheets[0].iter_rows(values_only=True)]


@pytest.fixture(autouse=True)
def no_gpg_agent_left(request, tmp_path_factory):
    """Every gpg daemon a test started in its temporary folder is stopped when the test ends (a gateway run
    starts gpg-agent for the installation's keyring, and nothing else would stop it). The session's own
    keyrings (the `keys` fixture) are left: they serve the tests to come."""
    from servers import gpg_daemons_under, kill_agents

    yield
    session = str(tmp_path_factory.getbasetemp() / "keys")
    for pid, home in gpg_daemons_under(tmp_path_factory.getbasetemp()).items():
        if home.startswith(session):
            continue
        if Path(home).is_dir():
            kill_agents(Path(home))
        else:  # its folder is gone already: nothing to ask it through
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)


@pytest.fixture(scope="session", autouse=True)
def none_at_the_end(tmp_path_factory):
    """After the last test, no gpg daemon of the suite's is left running."""
    from servers import gpg_daemons_under, kill_agents

    yield
    for home in set(gpg_daemons_under(tmp_path_factory.getbasetemp()).values()):
        kill_agents(Path(home))
    time.sleep(0.2)
    left = gpg_daemons_under(tmp_path_factory.getbasetemp())
    assert not left, f"gpg daemons still running: {sorted(left.values())}"


@pytest.fixture(scope="session", autouse=True)
def leak_scan(tmp_path_factory):
    """Issue 9 (e): after the suite, no personal value of the fixtures in clear in any installation's ledger,
    outbox or logs, any new file in the temp folder, any gateway log record, or any captured mail."""
    import logging
    import os
    import tempfile

    from leaks import Recorder, Scan, personal_values
    from servers import EVERY_CAPTURED

    recorder = Recorder()
    logging.getLogger("gateway").addHandler(recorder)
    temp = Path(tempfile.gettempdir())
    before = set(temp.iterdir())
    yield
    logging.getLogger("gateway").removeHandler(recorder)
    if os.environ.get("LDOR_NO_LEAK_SCAN"):
        return
    scan = Scan(personal_values())
    for config in tmp_path_factory.getbasetemp().rglob("config.toml"):
        scan.installation(config.parent)
    scan.mails(EVERY_CAPTURED)
    scan.records(recorder.records)
    scan.temp_files([p for p in set(temp.iterdir()) - before if p.is_file() and not p.name.startswith("pytest-")])
    print(f"\nleak scan: {len(scan.values)} personal values looked for in {scan.looked} places "
          f"({len(EVERY_CAPTURED)} captured mails, {len(recorder.records)} log records): {len(scan.found)} found in clear")
    assert not scan.found, "personal data in clear: " + "; ".join(scan.found[:20])
