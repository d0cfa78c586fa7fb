"""OAuth2 sign-in (issue 16) against real servers: Dovecot's oauth2 passdb validating JWTs locally, an aiosmtpd
relay taking AUTH XOAUTH2, and a token service in a thread issuing those JWTs and counting every request.

The servers are shared by the module; each test uses client ids of its own, so revoking one touches no other.
"""

from __future__ import annotations

import email
import email.policy
import json
import re
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from helpers import ADMIN, GATEWAY_ADDRESS, PROVIDER_SENDER, install, provider_message
from probe import wait_for
from servers import Dovecot, SmtpCapture, kill_agents
from tokenservice import TokenService, certificate_pem, make_rsa_key

from gateway import config as config_module
from gateway.cli import build, main
from gateway.delivery.send import sign_in
from gateway.demo.sample import people, workbook
from gateway.errors import Cause
from gateway.intake.inbox import Inbox
from gateway.scheduler import Daemon, Timing
from gateway.signin import HOLD_FIRST, MARGIN, SignInRefused, Tokens

MICROSOFT_SCOPE = "https://outlook.office365.com/.default"


@pytest.fixture(scope="module")
def service():
    with TokenService() as running:
        yield running


@pytest.fixture(scope="module")
def mailserver(tmp_path_factory, service):
    with Dovecot(tmp_path_factory.mktemp("oauth-imap"), user=GATEWAY_ADDRESS, password="imap-secret",
                 oauth2_key=service.public_pem) as server:
        yield server


@pytest.fixture(scope="module")
def relay(service):
    with SmtpCapture(xoauth2=service.verify) as server:
        yield server


@pytest.fixture
def app(request, service, monkeypatch):
    """A client registered with the token service for this test only, with a secret, granted the mailbox."""
    client_id = re.sub(r"\W", "-", request.node.name)[:60]
    service.add_client(client_id, secret="s3cret-" + client_id, mailbox=GATEWAY_ADDRESS)
    monkeypatch.setenv("TEST_OAUTH_SECRET", "s3cret-" + client_id)
    return client_id


def _oauth2(client_id: str, service: TokenService, **more: str) -> str:
    lines = {"auth": "oauth2", "token_url": service.url, "client_id": client_id, "scope": MICROSOFT_SCOPE}
    if not {"client_certificate", "service_account_file"} & set(more):
        lines["client_secret_env"] = "TEST_OAUTH_SECRET"
    lines.update(more)
    return "".join(f'{key} = "{value}"\n' for key, value in lines.items() if value)


def _install(root: Path, keys, mailserver, relay, service, imap_client: str | None, smtp_client: str | None,
             smtp_secret_env: str = "TEST_OAUTH_SECRET", **imap_more: str) -> Path:
    """An installation whose mailbox and relay sign in with OAuth2 (a side with client None keeps its password)."""
    config = install(root, keys, (mailserver.host, mailserver.port, mailserver.user, "TEST_IMAP_PASSWORD"),
                     (relay.host, relay.port), timeout=10)
    text = config.read_text()
    if imap_client is not None:
        text = text.replace('password_env = "TEST_IMAP_PASSWORD"\n', _oauth2(imap_client, service, **imap_more))
    if smtp_client is not None:
        text = text.replace("[smtp]\n", f'[smtp]\nuser = "{GATEWAY_ADDRESS}"\n'
                            + _oauth2(smtp_client, service, client_secret_env=smtp_secret_env))
    config.write_text(text)
    return config


@pytest.fixture
def installation(tmp_path, keys, mailserver, relay, service, app):
    root = tmp_path / "gateway"
    yield _install(root, keys, mailserver, relay, service, app, app)
    kill_agents(root / "var" / "gnupg")


def _return(directory, keys, seed: int) -> bytes:
    rows = [p.cells() for p in people(directory, {"E09000019": 2}, seed=seed)]
    return provider_message([("r.xlsx.gpg", keys.encrypt_for_gateway(workbook("Example College", "10001234", rows)))])


def _requests(service: TokenService, client_id: str) -> list[str]:
    return [outcome for who, _, outcome in service.requests if who == client_id]


def _check_connect(config: Path, capsys) -> tuple[int, list[str]]:
    code = main(["--config", str(config), "check", "--connect"])
    lines = capsys.readouterr().out.splitlines()
    return code, [line for line in lines if line.startswith(("mailbox:", "relay:"))]


# -- configuration ---------------------------------------------------------------------------------------

def test_oauth2_settings_are_checked_each_problem_on_its_line(tmp_path, keys, mailserver, relay, service):
    config = _install(tmp_path / "gw", keys, mailserver, relay, service, "x", None)
    text = config.read_text()
    config.write_text(text.replace('client_secret_env = "TEST_OAUTH_SECRET"\n',
                                   'client_certificate = "missing.pem"\nclient_secret_env = "X"\n')
                      .replace(f'token_url = "{service.url}"', 'token_url = "http://login.example/token"')
                      .replace("[smtp]\n", '[smtp]\nscope = "x"\n'))
    _, problems = config_module.check(config)
    said = "\n".join(str(p) for p in problems)
    assert "needs exactly one of client_secret_env, client_certificate or service_account_file (not 2)" in said
    assert "token_url must be an https:// address" in said
    assert "client_certificate: no such file" in said
    assert 'scope is used only with auth = "oauth2"' in said
    assert all(re.search(r"config\.toml:\d+: ", line) for line in said.splitlines()), said
    config.write_text(text.replace('auth = "oauth2"', 'auth = "oauth"').replace('scope = "', 'scopes = "'))
    said = "\n".join(str(p) for p in config_module.check(config)[1])
    assert 'auth must be "password" or "oauth2"' in said and "scopes" in said


# -- sign-in works --------------------------------------------------------------------------------------

def test_a_return_flows_end_to_end_with_oauth2_on_both_sides_on_one_token(installation, mailserver, relay, service,
                                                                          app, directory, keys):
    mailserver.append(_return(directory, keys, seed=11))
    relay.clear()
    assert main(["--config", str(installation), "run", "--once"]) == 0
    got = relay.wait_for(2)
    assert {"ldor@islington.example", PROVIDER_SENDER} <= {r for m in got for r in m.rcpt_tos}
    assert mailserver.list_uids("INBOX") == []
    assert _requests(service, app) == ["issued"]  # one token served the IMAP and the SMTP sign-ins
    assert "method=XOAUTH2" in mailserver.log()


def test_check_connect_says_what_worked_and_what_a_revoked_client_needs(installation, service, app, capsys):
    code, lines = _check_connect(installation, capsys)
    assert code == 0, lines
    assert lines[0].startswith("mailbox: signed in to 127.0.0.1:") and "OAuth2 (a client secret" in lines[0]
    assert lines[1].startswith("relay: signed in to 127.0.0.1:") and f"as {GATEWAY_ADDRESS}" in lines[1]
    working = lines
    service.revoke(app)
    code, lines = _check_connect(installation, capsys)
    assert code == 1 and len(lines) == 2
    for line in lines:
        assert "FAILED" in line and Cause.SECRET.value in line and "invalid_client, AADSTS7000215" in line
        assert "create a new client secret in the app registration" in line and "TEST_OAUTH_SECRET" in line
    assert "s3cret" not in "".join(lines)
    with capsys.disabled():
        print("\n`gateway check --connect`, a working client:", *working, "and the same client revoked:", *lines, sep="\n")


def test_certificate_credentials_and_an_expired_certificate(tmp_path, mailserver, service):
    good, good_cert = certificate_pem(tmp_path, "good")
    (tmp_path / "good.pem").write_bytes(good)
    service.add_client("cert-app", certificate=good_cert, mailbox=GATEWAY_ADDRESS)
    settings = _mailbox(mailserver, service, "cert-app", client_certificate=tmp_path / "good.pem")
    with Inbox(settings):
        pass
    assert _requests(service, "cert-app") == ["issued"]
    old, old_cert = certificate_pem(tmp_path, "old", days=-1)
    (tmp_path / "old.pem").write_bytes(old)
    with pytest.raises(SignInRefused) as refused:
        Inbox(replace(settings, client_certificate=tmp_path / "old.pem")).__enter__()
    assert refused.value.cause is Cause.CERTIFICATE and "expired on" in str(refused.value)
    assert _requests(service, "cert-app") == ["issued"]  # an expired certificate is not even tried
    other, _ = certificate_pem(tmp_path, "other")  # a certificate never uploaded to the app registration
    (tmp_path / "other.pem").write_bytes(other)
    with pytest.raises(SignInRefused) as refused:
        Inbox(replace(settings, client_certificate=tmp_path / "other.pem")).__enter__()
    assert refused.value.cause is Cause.CERTIFICATE and "AADSTS700027" in str(refused.value)


def test_a_google_service_account_signs_in_as_the_mailbox_user_it_is_delegated(tmp_path, mailserver, relay, service):
    key = make_rsa_key()
    email = "ldor-gateway@project.iam.gserviceaccount.test"
    service.add_service_account(email, key.public_key(), delegated=[GATEWAY_ADDRESS])
    account = tmp_path / "service-account.json"
    account.write_text(json.dumps({
        "type": "service_account", "client_email": email, "private_key_id": "k1", "token_uri": service.url,
        "private_key": key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()).decode()}))
    settings = replace(_mailbox(mailserver, service, "", service_account_file=account), token_url="",
                       scope="https://mail.google.com/")
    with Inbox(settings):
        pass
    sign_in(config_module.Smtp(relay.host, relay.port, security="none", from_address=GATEWAY_ADDRESS,
                               user=GATEWAY_ADDRESS, auth="oauth2", scope="https://mail.google.com/",
                               service_account_file=account))
    assert _requests(service, email) == ["issued", "issued"]  # separate processes' worth: no shared Tokens here
    with pytest.raises(SignInRefused) as refused:
        Inbox(replace(settings, user="someone-else@example.org")).__enter__()
    assert refused.value.cause is Cause.PERMISSION and "unauthorized_client" in str(refused.value)


def test_a_token_for_another_mailbox_is_permission_missing(mailserver, relay, service):
    service.add_client("no-grant", secret="x", mailbox="another@example.org")  # granted another mailbox only
    settings = _mailbox(mailserver, service, "no-grant")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TEST_OAUTH_SECRET", "x")
        with pytest.raises(SignInRefused) as refused:
            Inbox(settings).__enter__()
        assert refused.value.cause is Cause.PERMISSION and "IMAP.AccessAsApp" in str(refused.value)
        assert "Add-MailboxPermission" in str(refused.value)
        smtp = config_module.Smtp(relay.host, relay.port, security="none", from_address=GATEWAY_ADDRESS,
                                  user=GATEWAY_ADDRESS, auth="oauth2", token_url=service.url, client_id="no-grant",
                                  client_secret_env="TEST_OAUTH_SECRET", scope=MICROSOFT_SCOPE)
        with pytest.raises(Exception) as relay_refused:
            sign_in(smtp)
        assert "SMTP.SendAsApp" in str(relay_refused.value) and Cause.PERMISSION.value in str(relay_refused.value)


# -- the token cache ------------------------------------------------------------------------------------

def _mailbox(mailserver, service, client_id: str, **more) -> config_module.Mailbox:
    fields = {"token_url": service.url, "client_id": client_id, "scope": MICROSOFT_SCOPE}
    if not more:
        fields["client_secret_env"] = "TEST_OAUTH_SECRET"
    fields.update(more)
    return config_module.Mailbox(mailserver.host, mailserver.port, security="none", user=GATEWAY_ADDRESS,
                                 timeout=10, auth="oauth2", **fields)


def test_a_token_is_reused_until_shortly_before_it_expires_then_renewed_once(mailserver, service, app):
    now = [1_000_000.0]
    tokens = Tokens(clock=lambda: now[0])
    settings = _mailbox(mailserver, service, app)
    for _ in range(3):
        with Inbox(settings, tokens):
            pass
    assert _requests(service, app) == ["issued"]
    now[0] += service.expires_in - MARGIN - 1  # still more than MARGIN left
    with Inbox(settings, tokens):
        pass
    assert _requests(service, app) == ["issued"]
    now[0] += 2  # now within MARGIN of expiring
    for _ in range(3):
        with Inbox(settings, tokens):
            pass
    assert _requests(service, app) == ["issued", "issued"]


def test_a_revoked_client_is_refused_with_its_cause_and_asked_again_only_after_a_growing_wait(mailserver, service, app):
    now = [1_000_000.0]
    tokens = Tokens(clock=lambda: now[0])
    settings = _mailbox(mailserver, service, app)
    service.revoke(app)
    waits = []
    for _ in range(40):  # forty attempts, a second apart: what a daemon retrying at once would do
        with pytest.raises(SignInRefused) as refused:
            Inbox(settings, tokens).__enter__()
        assert refused.value.cause is Cause.SECRET
        waits.append(round(refused.value.retry_in))
        now[0] += 1
    assert _requests(service, app) == ["invalid_client"]
    assert waits[0] == HOLD_FIRST and waits[1] == HOLD_FIRST - 1
    now[0] += HOLD_FIRST
    for _ in range(5):
        with pytest.raises(SignInRefused) as refused:
            Inbox(settings, tokens).__enter__()
    assert _requests(service, app) == ["invalid_client"] * 2
    assert refused.value.retry_in == pytest.approx(2 * HOLD_FIRST)


# -- the daemon -----------------------------------------------------------------------------------------

def _signins(mailserver: Dovecot) -> int:
    """The XOAUTH2 logins in the mail server's log since it (re)started: the gateway's, not the test's own."""
    return mailserver.log().count("method=XOAUTH2")


class _Running:
    """The daemon's watch loop in a thread, with tokens on a clock the test moves."""

    def __init__(self, config: Path, now: list[float]) -> None:
        self.config = config
        self.tokens = Tokens(clock=lambda: now[0])
        self.built = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        # Built in its thread: the ledger's SQLite connection belongs to the thread that made it.
        self.daemon = Daemon(self.config, lambda path: replace(build(path), tokens=self.tokens),
                             Timing(wait=1, outbox_every=3600, reconnect_max=2))
        self.built.set()
        self.daemon._watch()

    def __enter__(self) -> _Running:
        self.thread.start()
        assert self.built.wait(30)
        return self

    def __exit__(self, *exc) -> None:
        self.daemon.stop()
        self.thread.join(timeout=15)
        assert not self.thread.is_alive()


def test_the_daemon_keeps_its_idle_watch_across_a_renewal_and_reconnects_with_a_fresh_token(
        installation, mailserver, relay, service, app, directory, keys):
    now = [time.time()]
    relay.clear()
    before = _signins(mailserver)
    with _Running(installation, now):
        wait_for(lambda: _signins(mailserver) == before + 1, 10, "the daemon's sign-in")
        assert _requests(service, app) == ["issued"]
        mailserver.deliver_local(_return(directory, keys, seed=21))
        wait_for(lambda: len(relay.messages) >= 2, 20, "the first return's mail")
        assert _requests(service, app) == ["issued"]  # the relay signed in with the same token
        now[0] += service.expires_in - MARGIN + 1  # the token is now about to expire
        mailserver.deliver_local(_return(directory, keys, seed=22))
        wait_for(lambda: len(relay.messages) >= 4, 20, "the second return's mail")
        assert _signins(mailserver) == before + 1  # handled on the same IDLE session: no new IMAP sign-in
        assert _requests(service, app) == ["issued", "issued"]  # renewed once, for the relay
        # A dropped connection: the reconnection signs in with the renewed token, asking for none.
        mailserver.restart()
        mailserver.deliver_local(_return(directory, keys, seed=23))
        wait_for(lambda: len(relay.messages) >= 6, 30, "the third return's mail")
        assert _signins(mailserver) == 1  # the daemon's reconnection (the restart began a new log)
        assert _requests(service, app) == ["issued", "issued"]
    assert "method=XOAUTH2" in mailserver.log()


def test_a_refused_mailbox_sign_in_alerts_the_administrator_through_the_relay_and_backs_off(
        tmp_path, keys, mailserver, relay, service, app, monkeypatch, caplog):
    service.add_client("relay-app", secret="relay-secret", mailbox=GATEWAY_ADDRESS)
    monkeypatch.setenv("TEST_RELAY_SECRET", "relay-secret")
    root = tmp_path / "gw"
    config = _install(root, keys, mailserver, relay, service, app, "relay-app", smtp_secret_env="TEST_RELAY_SECRET")
    service.revoke(app)
    relay.clear()
    try:
        with _Running(config, [time.time()]) as running:
            alert = relay.wait_for(1, 20)[0]
            time.sleep(2)  # attempts the daemon would make meanwhile are held off
            assert running.daemon._stopping is False
        assert alert.rcpt_tos == [ADMIN]
        message = email.message_from_bytes(alert.data, policy=email.policy.default)
        text = message["Subject"] + "\n" + message.get_content()
        assert "mailbox sign-in refused" in text and Cause.SECRET.value in text
        assert _requests(service, app) == ["invalid_client"]  # once: the daemon waits, it does not loop
        assert _requests(service, "relay-app") == ["issued"]
        lines = [r.getMessage() for r in caplog.records if Cause.SECRET.value in r.getMessage()]
        assert lines and all("\n" not in line for line in lines)
        assert "trying again in 60 s" in lines[0]
    finally:
        kill_agents(root / "var" / "gnupg")
