"""Real (unmocked) servers and key helpers for ldor-gateway tests, one module per server.

Everything here starts real software bound to 127.0.0.1 on a free port and is meant to be used as a
context manager, so a failing test still stops what it started. Test modules import it as
``from servers import Dovecot`` (pytest's default "prepend" import mode puts tests/ on sys.path).

    dovecot.py    Dovecot, the IMAP server
    smtp.py       SmtpCapture, the SMTP relay (EVERY_CAPTURED: each message any of them accepted)
    tls.py        certificates (trustme) and the server side of TLS
    gnupg.py      GnuPG homedirs, keys and their agents
    processes.py  the /proc scan both Dovecot and gpg's agents are found with
"""

from gateway.demo.embedded import free_port

from .dovecot import Dovecot, DovecotError
from .gnupg import (
    export_public,
    gnupg_home,
    gpg_daemon_pids,
    gpg_daemons_under,
    kill_agents,
    make_key,
    prepare_gnupghome,
)
from .processes import session_pids
from .smtp import EVERY_CAPTURED, CapturedMessage, SmtpCapture
from .tls import make_tls_certificate, server_tls_context

__all__ = [
    "EVERY_CAPTURED",
    "CapturedMessage",
    "Dovecot",
    "DovecotError",
    "SmtpCapture",
    "export_public",
    "free_port",
    "gnupg_home",
    "gpg_daemon_pids",
    "gpg_daemons_under",
    "kill_agents",
    "make_key",
    "make_tls_certificate",
    "prepare_gnupghome",
    "server_tls_context",
    "session_pids",
]
