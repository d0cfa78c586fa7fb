"""Shared fixtures: real Dovecot, a real SMTP relay in a thread, real gpg keys, real SQLite files."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import GATEWAY_ADDRESS, Deployment, Keys, install, throwaway_keys
from servers import EVERY_CAPTURED, Dovecot, SmtpCapture, gpg_daemons_under, kill_agents

from gateway.reference.postcodes import Directory


@pytest.fixture(scope="session")
def directory() -> Directory:
    return Directory()


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


@pytest.fixture
def deployment(tmp_path, imap, smtp, keys, monkeypatch) -> Deployment:
    root = tmp_path / "gateway"
    config = install(root, keys, (imap.host, imap.port, imap.user, "TEST_IMAP_PASSWORD"), (smtp.host, smtp.port), timeout=10)
    monkeypatch.setenv("TEST_IMAP_PASSWORD", imap.password)
    yield Deployment(root, config, imap, smtp, keys)
    kill_agents(root / "var" / "gnupg")


@pytest.fixture(scope="session", autouse=True)
def agent_sockets_in_one_place():
    """gpg puts a homedir's agent sockets in /run/user/<uid> once that folder exists, which the gateway
    makes for a keyring path too long for a socket (gateway.keys). Made before the first test, it holds
    every agent's sockets, so no gpg call starts a second agent for a homedir whose agent began before."""
    with contextlib.suppress(PermissionError):  # not root and no login session: sockets in the homedir
        Path(f"/run/user/{os.getuid()}").mkdir(mode=0o700, parents=True, exist_ok=True)


@pytest.fixture(autouse=True)
def no_gpg_agent_left(request, tmp_path_factory):
    """Every gpg daemon a test started in its temporary folder is stopped when the test ends (a gateway run
    starts gpg-agent for the installation's keyring, and nothing else would stop it). The session's own
    keyrings (the `keys` fixture) are left: they serve the tests to come."""
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
    import tempfile

    from leaks import Recorder, Scan, personal_values

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
