"""The gateway over TLS: "ssl" and "starttls" for the mailbox and the relay, certificates checked."""

from __future__ import annotations

import threading
import time

import pytest
from helpers import GATEWAY_ADDRESS, PROVIDER_UKPRN, install, provider_message
from servers import Dovecot, SmtpCapture, make_tls_certificate

from gateway.cli import main
from gateway.config import load
from gateway.demo.sample import people, workbook
from gateway.intake.inbox import Inbox


@pytest.fixture
def certificate(tmp_path):
    return make_tls_certificate(tmp_path / "tls")


def _install(tmp_path, keys, imap, smtp, imap_security, smtp_security, ca_file):
    port = imap.ssl_port if imap_security == "ssl" else imap.port
    return install(tmp_path / "gateway", keys, (imap.host, port, imap.user, "TLS_IMAP_PW"), (smtp.host, smtp.port),
                   timeout=10, imap_security=imap_security, smtp_security=smtp_security, ca_file=ca_file)


@pytest.mark.parametrize("imap_security, smtp_security", [("ssl", "starttls"), ("starttls", "ssl")])
def test_the_journey_over_tls(tmp_path, keys, directory, certificate, monkeypatch, imap_security, smtp_security):
    cert, _ = certificate
    with Dovecot(tmp_path / "imap", user=GATEWAY_ADDRESS, password="pw", tls=certificate) as imap, \
            SmtpCapture(tls=certificate, implicit=smtp_security == "ssl") as smtp:
        monkeypatch.setenv("TLS_IMAP_PW", "pw")
        config = _install(tmp_path, keys, imap, smtp, imap_security, smtp_security, cert)
        rows = [p.cells() for p in people(directory, {"E09000019": 2, "E09000007": 1})]
        imap.append(provider_message([("r.xlsx.gpg", keys.encrypt_for_gateway(workbook("Example College", PROVIDER_UKPRN, rows)))]))
        assert main(["--config", str(config), "run", "--once"]) == 0
        assert len(imap.list_uids("Processed")) == 1
        assert len(smtp.messages) == 3 and all(m.tls for m in smtp.messages)
        # The daemon's watch over TLS (imaplib reads through the TLS layer): a quiet wait lasts its
        # time, and mail announced during IDLE ends the wait at once.
        with Inbox(load(config).mailbox) as inbox:
            assert inbox.wait_for_mail(1.0) is False
            timer = threading.Timer(0.3, imap.deliver_local, args=[b"From: a@b.example\r\nSubject: x\r\n\r\nx\r\n"])
            timer.start()
            start = time.monotonic()
            assert inbox.wait_for_mail(20) is True
            assert time.monotonic() - start < 5
            timer.join()


def test_a_server_certificate_the_gateway_does_not_trust_is_refused(tmp_path, keys, certificate, monkeypatch, capsys):
    with Dovecot(tmp_path / "imap", user=GATEWAY_ADDRESS, password="pw", tls=certificate) as imap, SmtpCapture() as smtp:
        monkeypatch.setenv("TLS_IMAP_PW", "pw")
        config = _install(tmp_path, keys, imap, smtp, "ssl", "none", None)  # no ca_file: the system's CAs only
        imap.append(b"From: a@b.example\r\nSubject: x\r\n\r\nx\r\n")
        assert main(["--config", str(config), "run", "--once"]) == 2
        assert "certificate this machine does not trust" in capsys.readouterr().err
        assert len(imap.list_uids("INBOX")) == 1
