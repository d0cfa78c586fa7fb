"""Throwaway TLS certificates (trustme) and the server side of a TLS connection, for Dovecot and the SMTP relay.

    cert, key = make_tls_certificate(folder)     # P-256, a few ms
    # PEM files folder/cert.pem (the server's certificate, then its throwaway CA) and folder/key.pem
    # (0600); a client trusts it with cafile=cert; subjectAltName IP:127.0.0.1 and DNS:localhost.
    server_tls_context((cert, key)) -> ssl.SSLContext   # server side

    Beware: imaplib, imap_tools and smtplib do NOT verify certificates when
    given no context (they use ssl._create_unverified_context); only an
    explicit ssl.create_default_context() refuses an untrusted server.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import trustme

from .processes import LOCALHOST


def make_tls_certificate(folder: Path, hostname: str = LOCALHOST) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1, localhost and hostname, issued by a CA made for it alone.

    Returns (cert_path, key_path). cert.pem holds the certificate and then the CA's, so the server sends
    the chain and a client whose context is ssl.create_default_context(cafile=cert) trusts it and passes
    the hostname check (Python 3.13's VERIFY_X509_STRICT too). The key is unencrypted and 0600.
    """
    folder = Path(folder).absolute()
    folder.mkdir(parents=True, exist_ok=True)
    authority = trustme.CA(organization_name="ldor-gateway tests")
    issued = authority.issue_cert(*dict.fromkeys([LOCALHOST, "localhost", hostname]), common_name=hostname)
    cert, key = folder / "cert.pem", folder / "key.pem"
    cert.write_bytes(b"".join(pem.bytes() for pem in issued.cert_chain_pems) + authority.cert_pem.bytes())
    key.unlink(missing_ok=True)
    key.touch(mode=0o600)
    key.write_bytes(issued.private_key_pem.bytes())
    return cert, key


def server_tls_context(tls: tuple[Path, Path]) -> ssl.SSLContext:
    """A server-side context presenting tls = (cert_path, key_path)."""
    cert, key = tls
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(cert), str(key))
    return context
