"""Smoke tests proving the real test servers in tests/servers/ work."""

from __future__ import annotations

import smtplib
import socket
import ssl
import stat
import time
from email.message import EmailMessage

import gnupg
import pytest
from imap_tools import MailBox, MailboxLoginError, MailBoxStartTls, MailBoxUnencrypted
from servers import (
    Dovecot,
    DovecotError,
    SmtpCapture,
    export_public,
    gnupg_home,
    gpg_daemon_pids,
    gpg_daemons_under,
    kill_agents,
    make_key,
    make_tls_certificate,
    prepare_gnupghome,
    session_pids,
)


def _message(subject: str, sender="a@example.org", to="ldor@example.org") -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg.set_content(f"Body of {subject}\n")
    return msg.as_bytes().replace(b"\n", b"\r\n")


# ---------------------------------------------------------------- Dovecot


def test_dovecot_append_login_move(tmp_path):
    with Dovecot(tmp_path / "imap") as imap:
        imap.append(_message("hello"))
        assert imap.list_uids("INBOX") == [1]

        with MailBoxUnencrypted(imap.host, imap.port).login(imap.user, imap.password) as box:
            subjects = [(m.uid, m.subject) for m in box.fetch(mark_seen=False)]
            assert subjects == [("1", "hello")]
            box.folder.create("Processed")
            box.move(["1"], "Processed")
            assert list(box.fetch(mark_seen=False)) == []
            box.folder.set("Processed")
            assert [m.subject for m in box.fetch(mark_seen=False)] == ["hello"]

        assert imap.list_uids("INBOX") == []
        assert imap.list_uids("Processed") == [1]
        [raw] = imap.fetch_all("Processed")
        assert b"Subject: hello" in raw and b"Body of hello" in raw
        master_pid = imap.master_pid
    assert not imap.running
    assert session_pids(master_pid) == [], "dovecot processes survived stop()"


def test_dovecot_wrong_password_is_refused(tmp_path):
    with Dovecot(tmp_path / "imap", password="right") as imap:
        started = time.monotonic()
        with pytest.raises(MailboxLoginError):
            MailBoxUnencrypted(imap.host, imap.port).login(imap.user, "wrong")
        # auth_failure_delay = 0: a refused login must not cost tests seconds.
        assert time.monotonic() - started < 1.5
        with MailBoxUnencrypted(imap.host, imap.port).login(imap.user, "right") as box:
            assert box.folder.get() == "INBOX"


def test_dovecot_autocreate_restart_and_fetch_order(tmp_path):
    with Dovecot(tmp_path / "imap", autocreate=("Processed", "Quarantine")) as imap:
        with MailBoxUnencrypted(imap.host, imap.port).login(imap.user, imap.password) as box:
            names = {f.name for f in box.folder.list()}
            assert {"INBOX", "Processed", "Quarantine"} <= names
            assert {f.delim for f in box.folder.list()} == {"/"}

        for n in range(3):
            imap.append(_message(f"m{n}"), folder="Quarantine")
        port = imap.port
        imap.restart()
        assert imap.port == port, "restart must keep the address clients know"
        raws = imap.fetch_all("Quarantine")
        assert [r.split(b"Subject: ")[1].split(b"\r\n")[0] for r in raws] == [b"m0", b"m1", b"m2"]
        assert imap.list_uids("Quarantine") == [1, 2, 3]
        assert imap.fetch_all("INBOX") == []

        imap.stop(graceful=False)  # a crash must not lose delivered mail
        assert not imap.running
        imap.start()
        assert imap.list_uids("Quarantine") == [1, 2, 3]
        runtime = (tmp_path / "imap" / "runtime").resolve()
        assert (runtime / "home" / imap.user / "Maildir").is_dir()
    assert not runtime.exists(), "close() must delete the runtime folder"


def test_dovecot_idle_reports_new_mail(tmp_path):
    with Dovecot(tmp_path / "imap") as imap:
        with MailBoxUnencrypted(imap.host, imap.port).login(imap.user, imap.password) as box:
            with box.idle as idle:
                imap.append(_message("wake up"))
                responses = idle.poll(timeout=10)
            assert any(b"EXISTS" in r for r in responses), responses


def test_dovecot_long_root_path(tmp_path):
    # Deep enough that sockets under root would exceed sun_path.
    root = tmp_path / ("d" * 60) / ("e" * 60) / "imap"
    with Dovecot(root) as imap:
        imap.append(_message("deep"))
        assert imap.list_uids() == [1]
        assert (imap.home / "Maildir").is_dir()


def test_dovecot_start_failure_raises_with_log(tmp_path):
    imap = Dovecot(tmp_path / "imap")
    with imap:
        port = imap.port
    # restart() keeps its port; occupy it so Dovecot cannot bind.
    with socket.socket() as blocker:
        # The port may be in TIME_WAIT from the readiness check's connection.
        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        blocker.bind((imap.host, port))
        blocker.listen()
        with pytest.raises(DovecotError, match="Address already in use"):
            imap.start()
    assert not imap.running


def test_dovecot_without_tls_has_no_ssl_port(tmp_path):
    with Dovecot(tmp_path / "imap") as imap:
        assert imap.ssl_port is None
        assert "ssl = no" in imap.conf_path.read_text()


# ---------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    return make_tls_certificate(tmp_path_factory.mktemp("tls"))


def test_tls_certificate_files(tmp_path):
    started = time.monotonic()
    cert, key = make_tls_certificate(tmp_path / "tls")
    assert time.monotonic() - started < 2
    assert b"BEGIN CERTIFICATE" in cert.read_bytes()
    assert b"PRIVATE KEY" in key.read_bytes()
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)


@pytest.fixture
def imap_tls(tmp_path, tls):
    with Dovecot(tmp_path / "imap", tls=tls) as server:
        yield server


def test_dovecot_starttls_login(imap_tls, tls):
    imap = imap_tls
    imap.append(_message("over starttls"))
    context = ssl.create_default_context(cafile=tls[0])
    with MailBoxStartTls(imap.host, imap.port, ssl_context=context).login(
        imap.user, imap.password
    ) as box:
        assert box.client.sock.version() in ("TLSv1.2", "TLSv1.3")
        assert [m.subject for m in box.fetch(mark_seen=False)] == ["over starttls"]
    # Plain LOGIN without TLS still works on the same port.
    with MailBoxUnencrypted(imap.host, imap.port).login(imap.user, imap.password) as box:
        assert box.folder.get() == "INBOX"


def test_dovecot_imaps_login(imap_tls, tls):
    imap = imap_tls
    assert imap.ssl_port not in (None, imap.port)
    context = ssl.create_default_context(cafile=tls[0])
    with MailBox(imap.host, imap.ssl_port, ssl_context=context).login(
        imap.user, imap.password
    ) as box:
        assert box.client.sock.version() in ("TLSv1.2", "TLSv1.3")
        assert box.folder.get() == "INBOX"
    # "localhost" is in the subjectAltName too.
    with MailBox("localhost", imap.ssl_port, ssl_context=imap.client_tls_context()).login(
        imap.user, imap.password
    ):
        pass
    ports = (imap.port, imap.ssl_port)
    imap.stop(graceful=False)  # a graceful stop costs a second
    imap.start()
    assert (imap.port, imap.ssl_port) == ports, "restart must keep both ports"
    with MailBox(imap.host, imap.ssl_port, ssl_context=context).login(imap.user, imap.password):
        pass


def test_dovecot_tls_refuses_untrusted_client(imap_tls):
    imap = imap_tls
    # An explicit default context: given none, imaplib does not verify at all.
    with pytest.raises(ssl.SSLCertVerificationError):
        MailBox(imap.host, imap.ssl_port, ssl_context=ssl.create_default_context())
    with pytest.raises(ssl.SSLCertVerificationError):
        MailBoxStartTls(imap.host, imap.port, ssl_context=ssl.create_default_context())


def test_smtp_starttls_delivers(tls):
    with SmtpCapture(tls=tls) as smtp:
        context = ssl.create_default_context(cafile=tls[0])
        with smtplib.SMTP(smtp.host, smtp.port, timeout=10) as client:
            client.ehlo()
            assert client.has_extn("starttls")
            client.starttls(context=context)
            client.sendmail("from@example.org", ["to@example.org"], _message("starttls"))
        # STARTTLS is offered, not required: plain delivery still works.
        with smtplib.SMTP(smtp.host, smtp.port, timeout=10) as client:
            client.sendmail("from@example.org", ["to@example.org"], _message("plain"))
        first, second = smtp.wait_for(2)
        assert b"Subject: starttls" in first.data and first.tls is True
        assert b"Subject: plain" in second.data and second.tls is False

        with smtplib.SMTP(smtp.host, smtp.port, timeout=10) as client:
            with pytest.raises(ssl.SSLCertVerificationError):
                client.starttls(context=ssl.create_default_context())


def test_smtp_implicit_tls_delivers(tls):
    with SmtpCapture(tls=tls, implicit=True) as smtp:
        context = ssl.create_default_context(cafile=tls[0])
        # The certificate passes the stricter checks Python 3.13 turns on.
        context.verify_flags |= ssl.VERIFY_X509_STRICT
        with smtplib.SMTP_SSL(smtp.host, smtp.port, context=context, timeout=10) as client:
            client.sendmail("from@example.org", ["to@example.org"], _message("implicit"))
        [captured] = smtp.wait_for(1)
        assert b"Subject: implicit" in captured.data and captured.tls is True
        assert captured.rcpt_tos == ["to@example.org"]

        with pytest.raises(ssl.SSLCertVerificationError):
            smtplib.SMTP_SSL(smtp.host, smtp.port, context=ssl.create_default_context(),
                             timeout=10)
        # A plaintext client gets no SMTP greeting from a TLS-only port.
        with pytest.raises(OSError):  # socket timeout or a disconnect
            smtplib.SMTP(smtp.host, smtp.port, timeout=0.5)


def test_smtp_implicit_needs_tls():
    with pytest.raises(ValueError):
        SmtpCapture(implicit=True)


# ---------------------------------------------------------------- SMTP


def test_smtp_capture_receives_and_refuses():
    with SmtpCapture() as smtp:
        with smtplib.SMTP(smtp.host, smtp.port, timeout=10) as client:
            client.sendmail("from@example.org", ["to@example.org", "cc@example.org"],
                            _message("via smtp"))
        [captured] = smtp.wait_for(1)
        assert captured.tls is False
        assert captured.mail_from == "from@example.org"
        assert captured.rcpt_tos == ["to@example.org", "cc@example.org"]
        assert b"Subject: via smtp" in captured.data

        smtp.fail_with = "451 4.3.0 Try again later"
        with smtplib.SMTP(smtp.host, smtp.port, timeout=10) as client:
            with pytest.raises(smtplib.SMTPDataError) as err:
                client.sendmail("from@example.org", ["to@example.org"], _message("deferred"))
        assert err.value.smtp_code == 451

        smtp.fail_on = "rcpt"
        smtp.fail_with = "550 5.1.1 No such user"
        with smtplib.SMTP(smtp.host, smtp.port, timeout=10) as client:
            with pytest.raises(smtplib.SMTPRecipientsRefused) as err:
                client.sendmail("from@example.org", ["nobody@example.org"], _message("bounced"))
        assert err.value.recipients["nobody@example.org"][0] == 550

        assert len(smtp.messages) == 1, "refused messages must not be captured"
        smtp.fail_with = None
        with smtplib.SMTP(smtp.host, smtp.port, timeout=10) as client:
            client.sendmail("from@example.org", ["to@example.org"], _message("accepted again"))
        assert b"accepted again" in smtp.wait_for(2)[1].data


def test_smtp_wait_for_times_out_and_rejects_bad_stage():
    with SmtpCapture() as smtp:
        with pytest.raises(TimeoutError):
            smtp.wait_for(1, timeout=0.2)
        with pytest.raises(ValueError):
            smtp.fail_on = "mail"


# ---------------------------------------------------------------- GnuPG


def test_gpg_keys_encrypt_and_decrypt(tmp_path):
    with gnupg_home(tmp_path / "alice") as alice_home, gnupg_home(tmp_path / "bob") as bob_home:
        started = time.monotonic()
        alice = make_key(alice_home, "Alice", "alice@example.org")
        bob = make_key(bob_home, "Bob", "bob@example.org")
        keygen_seconds = time.monotonic() - started
        assert len(alice) == 40 and alice != bob
        assert keygen_seconds < 2, f"two keys took {keygen_seconds:.2f}s"

        alice_gpg = gnupg.GPG(gnupghome=str(alice_home))
        bob_gpg = gnupg.GPG(gnupghome=str(bob_home))
        [key] = alice_gpg.list_keys(secret=True)
        assert key["fingerprint"] == alice and "alice@example.org" in key["uids"][0]
        assert key["expires"] == ""

        imported = bob_gpg.import_keys(export_public(alice_home, alice))
        assert imported.fingerprints == [alice]
        encrypted = bob_gpg.encrypt(b"secret payload", alice, always_trust=True, armor=True)
        assert encrypted.ok, encrypted.status
        assert "BEGIN PGP MESSAGE" in str(encrypted)

        decrypted = alice_gpg.decrypt(str(encrypted))
        assert decrypted.ok, decrypted.stderr
        assert decrypted.data == b"secret payload"

        wrong = bob_gpg.decrypt(str(encrypted))
        assert not wrong.ok
        assert wrong.data == b""
    for home in (alice_home, bob_home):
        assert gpg_daemon_pids(home) == [], "gpg-agent survived kill_agents()"


def test_gpg_long_homedir(tmp_path):
    # Longer than a unix socket path allows: agent sockets must go elsewhere.
    home_path = tmp_path / ("g" * 80) / "gnupg"
    assert len(str(home_path / "S.gpg-agent.browser")) > 107
    with gnupg_home(home_path) as home:
        fpr = make_key(home, "", "long@example.org", expire="1y")
        gpg = gnupg.GPG(gnupghome=str(home))
        encrypted = gpg.encrypt(b"x", fpr, always_trust=True)
        decrypted = gpg.decrypt(str(encrypted))
        assert decrypted.ok and decrypted.data == b"x", decrypted.stderr
        [key] = gpg.list_keys()
        assert key["expires"] != ""
    assert gpg_daemon_pids(home) == []


def test_an_agent_a_test_left_is_found_in_its_folder_and_stopped(tmp_path):
    # What conftest's no_gpg_agent_left and none_at_the_end rely on: a gpg-agent nobody stopped is found by
    # the homedir its command line names, and kill_agents ends it.
    home = prepare_gnupghome(tmp_path / "forgotten")
    fpr = make_key(home, "", "forgotten@example.org")
    gpg = gnupg.GPG(gnupghome=str(home))
    assert gpg.decrypt(str(gpg.encrypt(b"x", fpr, always_trust=True))).ok  # the agent holds the secret key
    assert set(gpg_daemons_under(tmp_path).values()) == {str(home)}
    assert gpg_daemons_under(tmp_path / "forgotten" / "elsewhere") == {}
    kill_agents(home)
    assert gpg_daemons_under(tmp_path) == {}
