"""Real (unmocked) servers and key helpers for ldor-gateway tests.

Everything here starts real software bound to 127.0.0.1 on a free port and
is meant to be used as a context manager, so a failing test still stops what
it started.  Test modules next to this one import it as ``from servers
import Dovecot`` (pytest's default "prepend" import mode puts tests/ on
sys.path).  A fixture is a with-block around a yield::

    @pytest.fixture
    def imap(tmp_path):
        with Dovecot(tmp_path / "imap") as server:
            yield server

Dovecot IMAP server (needs root, ``dovecot`` and ``dovenull`` users)::

    with Dovecot(tmp_path / "imap") as imap:          # started on enter
        imap.host, imap.port, imap.user, imap.password
        imap.append(raw_bytes, folder="INBOX")        # deliver a message
        imap.list_uids("INBOX") -> list[int]
        imap.fetch_all("INBOX") -> list[bytes]        # raw, by ascending UID
        imap.create_folder("Quarantine")
        imap.restart()                                # same port, same mail
        imap.stop(); imap.start()                     # same, in two steps
        imap.stop(graceful=False)                     # SIGKILL: a server crash
        imap.log() -> str                             # dovecot's log so far
        imap.master_pid; session_pids(imap.master_pid) # its processes ([] once stopped)
        imap.home                                     # mail is in home / "Maildir"
    # on exit: every dovecot process is gone and the mail is deleted

    Dovecot(root, user="ldor@example.org", password="secret",
            autocreate=())   # folder names Dovecot creates for the user on login
    .start(timeout=15) / .stop(graceful=True) / .restart() / .close() for
    manual use; stop() and close() are idempotent.  start() raises
    DovecotError carrying the Dovecot log when the server does not come up.

    Config, state and logs (dovecot.log, dovecot.stderr) go under root;
    mail, sockets and the passwd file go to a /tmp/ldor-dovecot-* folder,
    linked as root/"runtime" (Dovecot's unprivileged processes cannot enter
    pytest's 0700 tmp_path) and deleted by close().

    Clients log in with plain LOGIN, no TLS (imap_tools: MailBoxUnencrypted;
    imap_tools.MailBox is the IMAPS class).  The namespace separator is "/".
    Failed logins are answered in ~0.5 s and never slow down later logins
    (auth penalty off).

    With OAuth2 (tests/tokenservice.py issues the tokens)::

        Dovecot(root, oauth2_key=service.public_pem)  # also offers AUTH=XOAUTH2 and OAUTHBEARER: the
        # oauth2 passdb validates RS256 JWTs locally (kid "test"), claim `email` = the user
        imap.log().count("method=XOAUTH2")            # sign-ins with a token

    With TLS (ssl = yes; plain LOGIN without TLS still allowed on port)::

        cert, key = make_tls_certificate(tmp_path / "tls")
        with Dovecot(tmp_path / "imap", tls=(cert, key)) as imap:
            imap.port                                 # plain + STARTTLS
            imap.ssl_port                             # implicit TLS (IMAPS)
            ctx = imap.client_tls_context()           # = create_default_context(cafile=cert)
            MailBoxStartTls(imap.host, imap.port, ssl_context=ctx)
            MailBox(imap.host, imap.ssl_port, ssl_context=ctx)
    Without tls, ssl_port is None and ssl = no.  restart() keeps both ports.
    Dovecot counts every 127.0.0.1 connection as "secured", so even
    disable_plaintext_auth = yes would not refuse a plaintext login here: a
    test cannot rely on Dovecot to catch a client that skipped STARTTLS.

SMTP sink::

    with SmtpCapture() as smtp:                       # started on enter
        smtp.host, smtp.port
        smtp.messages -> list[CapturedMessage]        # mail_from, rcpt_tos, data
        smtp.wait_for(count, timeout=10) -> list[CapturedMessage]
        smtp.fail_with = "451 4.3.0 Try again later"  # reply instead of 250
        smtp.fail_on = "data"                         # or "rcpt"
        smtp.fail_with = None                         # back to accepting
        smtp.clear()
    SmtpCapture(xoauth2=service.verify)               # AUTH XOAUTH2 required (no TLS needed on
                                                      # the loopback); smtp.auth_attempts counts tries
    # data: bytes as received (CRLF, dot-stuffing undone); a refused message
    # is not captured; SmtpCapture().start() / .stop() for manual use.
    # CapturedMessage.tls: whether that session was encrypted.

    SmtpCapture(tls=(cert, key))                 # offers STARTTLS, not required
    SmtpCapture(tls=(cert, key), implicit=True)  # the whole connection is TLS
    smtp.client_tls_context()                    # = create_default_context(cafile=cert)

TLS certificates::

    cert, key = make_tls_certificate(folder)     # self-signed P-256, ~10 ms
    # PEM files folder/cert.pem, folder/key.pem (0600); usable as its own CA
    # (cafile=cert); subjectAltName IP:127.0.0.1 and DNS:localhost.
    server_tls_context((cert, key)) -> ssl.SSLContext   # server side

    Beware: imaplib, imap_tools and smtplib do NOT verify certificates when
    given no context (they use ssl._create_unverified_context); only an
    explicit ssl.create_default_context() refuses an untrusted server.

GnuPG (no passphrases, throwaway ed25519/cv25519 keys, ~30 ms each)::

    with gnupg_home(tmp_path / "alice") as home:      # 0700 dir; agents killed on exit
        fpr = make_key(home, "Alice", "alice@example.org", expire="0")
        armored = export_public(home, fpr)
    prepare_gnupghome(path) -> Path                   # what gnupg_home does on enter
    kill_agents(path)                                 # what gnupg_home does on exit
    gpg_daemon_pids(path) -> list[int]                # agents still alive for it
    make_key raises RuntimeError with gpg's output when generation fails.

    Homedirs of any length work: prepare_gnupghome makes sure /run/user/<uid>
    exists, where gpg then puts the agent sockets (a unix socket path in a
    long homedir would exceed 107 bytes).
"""

from __future__ import annotations

import base64
import collections
import contextlib
import dataclasses
import imaplib
import ipaddress
import os
import pwd
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import warnings
import weakref
from pathlib import Path
from typing import Iterator, Sequence

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP

__all__ = [
    "CapturedMessage",
    "Dovecot",
    "DovecotError",
    "SmtpCapture",
    "export_public",
    "free_port",
    "gnupg_home",
    "gpg_daemon_pids",
    "kill_agents",
    "make_key",
    "make_tls_certificate",
    "prepare_gnupghome",
    "server_tls_context",
    "session_pids",
]

LOCALHOST = "127.0.0.1"


def free_port(host: str = LOCALHOST) -> int:
    """A port that was free a moment ago.

    The socket is closed before the server binds, so another process may grab
    the port in between; the servers below retry with a new port when that
    happens.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _wait_until(predicate, timeout: float, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


# --------------------------------------------------------------------------
# TLS
# --------------------------------------------------------------------------

_OPENSSL_REQ_CONF = """\
[req]
distinguished_name = dn
x509_extensions = ext
prompt = no
[dn]
CN = {cn}
O = ldor-gateway tests
[ext]
# Self-signed and CA-usable, so a client trusts it with cafile=cert alone.
# keyUsage, the key identifiers and serverAuth keep it valid under
# VERIFY_X509_STRICT too (the default from Python 3.13 on).
basicConstraints = critical, CA:TRUE
keyUsage = critical, digitalSignature, keyCertSign
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
subjectAltName = {san}
"""


def make_tls_certificate(folder: Path, hostname: str = LOCALHOST) -> tuple[Path, Path]:
    """A throwaway self-signed certificate and its key, via the openssl command.

    Returns (cert_path, key_path): PEM files in folder, the key unencrypted and
    0600.  The subjectAltName holds IP:127.0.0.1 and DNS:localhost (plus
    hostname), so a client whose context is
    ssl.create_default_context(cafile=cert) passes the default hostname check
    for either name.  P-256 keys: generated in a few milliseconds.
    """
    folder = Path(folder).absolute()
    folder.mkdir(parents=True, exist_ok=True)
    names = ["IP:127.0.0.1", "DNS:localhost"]
    try:
        extra = f"IP:{ipaddress.ip_address(hostname)}"
    except ValueError:
        extra = f"DNS:{hostname}"
    if extra not in names:
        names.append(extra)
    conf = folder / "openssl-req.cnf"
    conf.write_text(_OPENSSL_REQ_CONF.format(cn=hostname, san=", ".join(names)))
    cert, key = folder / "cert.pem", folder / "key.pem"
    key.unlink(missing_ok=True)
    result = subprocess.run(
        [
            "openssl", "req", "-x509", "-new",
            "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-sha256", "-days", "30",
            "-config", str(conf),
            "-keyout", str(key), "-out", str(cert),
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=30,
    )
    if result.returncode != 0 or not cert.exists() or not key.exists():
        raise RuntimeError(
            f"openssl certificate generation failed ({result.returncode}):\n"
            f"{result.stdout.decode(errors='replace')}{result.stderr.decode(errors='replace')}"
        )
    os.chmod(key, 0o600)  # openssl already writes it so; make sure
    return cert, key


def server_tls_context(tls: tuple[Path, Path]) -> ssl.SSLContext:
    """A server-side context presenting tls = (cert_path, key_path)."""
    cert, key = tls
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(cert), str(key))
    return context


# --------------------------------------------------------------------------
# Dovecot
# --------------------------------------------------------------------------


class DovecotError(RuntimeError):
    """Dovecot did not start; the message carries its log."""


def session_pids(sid: int) -> list[int]:
    """Live (non-zombie) processes whose session id is sid, from /proc."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                raw = fh.read()
        except OSError:
            continue  # exited meanwhile
        # The command name is in parentheses and may contain spaces; the
        # fields after the last ")" are: state ppid pgrp session ...
        fields = raw[raw.rindex(b")") + 2 :].split()
        if int(fields[3]) == sid and fields[0] != b"Z":
            pids.append(int(entry))
    return pids


_DOVECOT_CONF = """\
# Written by tests/servers.py: a self-contained test instance.
instance_name = {instance}
protocols = imap
listen = {host}
base_dir = {base_dir}
state_dir = {state_dir}
log_path = {log}
info_log_path = {log}
debug_log_path = {log}
auth_verbose = yes

{ssl_settings}
disable_plaintext_auth = no
auth_mechanisms = plain login{oauth2_mechanisms}
# Dovecot waits 2 s before answering a failed login; tests want it now.
auth_failure_delay = 0

# Running as root, but every process that touches mail or clients drops to
# these users.  The default first_valid_uid (500) would reject system users.
default_login_user = dovenull
default_internal_user = dovecot
first_valid_uid = {uid}
last_valid_uid = {uid}

{oauth2_passdb}passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {passwd}
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={homes}/%u
}}
mail_location = maildir:~/Maildir

namespace inbox {{
  inbox = yes
  separator = /
  prefix =
{mailboxes}}}

service imap-login {{
  chroot =
  inet_listener imap {{
    address = {host}
    port = {port}
  }}
  inet_listener imaps {{
{imaps_listener}
  }}
}}
service anvil {{
  chroot =
  # Dovecot's documented switch to turn off the per-IP auth penalty, which
  # would otherwise delay every login after a failed one by 2-15 s.
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
"""


_LDA = "/usr/lib/dovecot/dovecot-lda"  # in dovecot-core, which dovecot-imapd depends on


class Dovecot:
    """A private Dovecot IMAP server.

    Configuration, state and logs are written under root.  The mail homes,
    the socket directory and the passwd file are in a runtime folder under
    /tmp, linked from root/"runtime" (see _runtime_dir for why), removed by
    close() / leaving the with-block, or at interpreter exit at the latest.
    """

    def __init__(
        self,
        root: Path,
        user: str = "ldor@example.org",
        password: str = "secret",
        autocreate: Sequence[str] = (),
        tls: tuple[Path, Path] | None = None,
        oauth2_key: bytes | None = None,
    ) -> None:
        for field in (user, password):
            if ":" in field or "\n" in field:
                raise ValueError("user and password may not contain ':' or newlines")
        self.root = Path(root).absolute()
        self.user = user
        self.password = password
        self.autocreate = tuple(autocreate)
        # A PEM public key: XOAUTH2 and OAUTHBEARER are offered too, the oauth2 passdb validating
        # tokens locally (RS256 JWTs with kid "test", signed by its private key; the claim `email`
        # must be the user). Plain LOGIN with the password keeps working.
        self.oauth2_key = oauth2_key
        self.tls = None if tls is None else (Path(tls[0]).absolute(), Path(tls[1]).absolute())
        self.host = LOCALHOST
        self.port = 0
        # The implicit-TLS (IMAPS) port; None without tls.
        self.ssl_port: int | None = None
        self._proc: subprocess.Popen | None = None
        # Kept after stop() so a test can check session_pids(master_pid) == [].
        self.master_pid: int | None = None
        self._runtime: Path | None = None
        self._finalizer: weakref.finalize | None = None

    # -- lifecycle ---------------------------------------------------------

    def __enter__(self) -> "Dovecot":
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def start(self, timeout: float = 15.0) -> None:
        if self._proc is not None:
            raise RuntimeError("Dovecot is already running")
        if os.geteuid() != 0:
            raise RuntimeError("Dovecot tests need root (Dovecot drops to dovecot/dovenull)")
        keep_port = self.port != 0  # a restart keeps the address clients know
        attempts = 1 if keep_port else 5
        for attempt in range(attempts):
            if not keep_port:
                self.port = free_port(self.host)
                if self.tls is not None:
                    self.ssl_port = free_port(self.host)
                    while self.ssl_port == self.port:
                        self.ssl_port = free_port(self.host)
            self._write_files()
            try:
                self._launch(timeout)
                return
            except DovecotError as err:
                lost_race = "Address already in use" in str(err)
                if not lost_race or attempt == attempts - 1:
                    raise

    def stop(self, graceful: bool = True) -> None:
        """Stop the master and every child; mail is kept.  Idempotent.

        graceful=False SIGKILLs everything at once: faster (a graceful master
        waits about a second for its children) and a way to simulate a server
        crash.  Maildir delivery is atomic, so no mail is lost either way.
        """
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None and graceful:
            proc.terminate()  # the master stops its children on SIGTERM
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
        # The master ran in a session of its own (pid == sid); a child that
        # outlived it (e.g. a stuck imap process) is still in that session.
        for pid in session_pids(proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if not _wait_until(lambda: not session_pids(proc.pid), timeout=5):
            raise RuntimeError(f"Dovecot processes survived: {session_pids(proc.pid)}")

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop at once and delete the runtime folder (mail included)."""
        self.stop(graceful=False)
        if self._finalizer is not None:
            self._finalizer()  # removes the runtime folder, once
            self._finalizer = None
            self._runtime = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- files -------------------------------------------------------------

    @property
    def conf_path(self) -> Path:
        return self.root / "dovecot.conf"

    @property
    def log_path(self) -> Path:
        return self.root / "dovecot.log"

    @property
    def stderr_path(self) -> Path:
        return self.root / "dovecot.stderr"

    @property
    def home(self) -> Path:
        """The user's home (valid while started/stopped, until close())."""
        return self._runtime_dir() / "home" / self.user

    def log(self) -> str:
        """Dovecot's stderr and log file so far, for assertion messages."""
        parts = []
        for path in (self.stderr_path, self.log_path):
            if path.exists():
                parts.append(f"--- {path}\n{path.read_text(errors='replace')}")
        return "\n".join(parts) or "(no dovecot log written)"

    def _runtime_dir(self) -> Path:
        """The folder that Dovecot's unprivileged processes must reach.

        The imap and auth processes (uid dovecot) need search permission on
        every ancestor of the mail home and the passwd file.  pytest's tmp_path is below
        /tmp/pytest-of-root, which is 0700, and pytest resets it to 0700 at
        the start of every session, so loosening it breaks as soon as two
        pytest runs overlap.  A short folder directly under /tmp avoids that
        and also keeps the unix sockets in base_dir well below the 107-byte
        sun_path limit, however long root is.
        """
        if self._runtime is None:
            self._runtime = Path(tempfile.mkdtemp(prefix="ldor-dovecot-", dir="/tmp"))
            os.chmod(self._runtime, 0o755)
            self._finalizer = weakref.finalize(
                self, shutil.rmtree, str(self._runtime), ignore_errors=True
            )
            link = self.root / "runtime"
            self.root.mkdir(parents=True, exist_ok=True)
            if link.is_symlink():
                link.unlink()
            link.symlink_to(self._runtime)  # so a failed test's mail can be found
        return self._runtime

    def _write_files(self) -> None:
        entry = pwd.getpwnam("dovecot")
        uid, gid = entry.pw_uid, entry.pw_gid
        (self.root / "state").mkdir(parents=True, exist_ok=True)
        runtime = self._runtime_dir()
        homes = runtime / "home"
        # Created here, owned by dovecot, so the imap process can make the
        # Maildir itself and nothing depends on Dovecot creating parents.
        self.home.mkdir(parents=True, exist_ok=True)
        os.chown(homes, uid, gid)
        os.chmod(homes, 0o755)
        os.chown(self.home, uid, gid)
        os.chmod(self.home, 0o700)

        # Read by the auth process, which runs as dovecot, so it lives in
        # the runtime folder too; a test password needs no secrecy.
        passwd = runtime / "passwd"
        passwd.write_text(f"{self.user}:{self.password}\n")
        os.chmod(passwd, 0o644)

        oauth2_passdb = oauth2_mechanisms = ""
        if self.oauth2_key is not None:
            # Dovecot 2.3's local validation reads the key at <prefix>/<azp or default>/<alg>/<kid>.
            keys = runtime / "oauth2-keys" / "default" / "RS256"
            keys.mkdir(parents=True, exist_ok=True)
            (keys / "test").write_bytes(self.oauth2_key)
            for folder in (runtime / "oauth2-keys", keys.parent, keys):
                os.chmod(folder, 0o755)
            os.chmod(keys / "test", 0o644)
            oauth2_conf = runtime / "dovecot-oauth2.conf.ext"
            oauth2_conf.write_text(
                "introspection_mode = local\n"
                f"local_validation_key_dict = fs:posix:prefix={runtime / 'oauth2-keys'}/\n"
                "username_attribute = email\n"
            )
            os.chmod(oauth2_conf, 0o644)
            oauth2_mechanisms = " xoauth2 oauthbearer"
            oauth2_passdb = (
                f"passdb {{\n  driver = oauth2\n  mechanisms = xoauth2 oauthbearer\n  args = {oauth2_conf}\n}}\n"
            )
        mailboxes = "".join(
            f'  mailbox "{name}" {{\n    auto = create\n  }}\n' for name in self.autocreate
        )
        if self.tls is None:
            ssl_settings = "ssl = no"
            imaps_listener = "    port = 0"
        else:
            # Copies next to the config, so a restart does not depend on the
            # caller's files.  The "<file" values are read by Dovecot's
            # config process, which runs as root: a 0600 root key is fine.
            # No ssl_dh: Dovecot 2.3 then simply offers no DHE suites, and
            # every client negotiates ECDHE (or TLS 1.3) anyway.
            # A key that does not match the cert would only show as failed
            # handshakes (start() timing out); loading the pair fails now.
            server_tls_context(self.tls)
            tls_dir = self.root / "tls"
            tls_dir.mkdir(exist_ok=True)
            os.chmod(tls_dir, 0o700)
            cert, key = tls_dir / "cert.pem", tls_dir / "key.pem"
            shutil.copyfile(self.tls[0], cert)
            key.unlink(missing_ok=True)
            key.touch(mode=0o600)
            shutil.copyfile(self.tls[1], key)
            ssl_settings = f"ssl = yes\nssl_cert = <{cert}\nssl_key = <{key}"
            imaps_listener = (
                f"    address = {self.host}\n    port = {self.ssl_port}\n    ssl = yes"
            )
        self.conf_path.write_text(
            _DOVECOT_CONF.format(
                instance=f"ldor-test-{self.port}",
                host=self.host,
                port=self.port,
                base_dir=runtime / "run",
                state_dir=self.root / "state",
                log=self.log_path,
                uid=uid,
                gid=gid,
                passwd=passwd,
                homes=homes,
                mailboxes=mailboxes,
                ssl_settings=ssl_settings,
                imaps_listener=imaps_listener,
                oauth2_passdb=oauth2_passdb,
                oauth2_mechanisms=oauth2_mechanisms,
            )
        )

    # -- process -----------------------------------------------------------

    def _launch(self, timeout: float) -> None:
        # A fresh log per attempt, so errors shown are this attempt's.
        self.log_path.unlink(missing_ok=True)
        with open(self.stderr_path, "wb") as stderr:
            # -F keeps the master in the foreground so Popen owns it; its own
            # session lets stop() find every child, however it was reparented.
            self._proc = subprocess.Popen(
                ["dovecot", "-F", "-c", str(self.conf_path)],
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                start_new_session=True,
            )
        self.master_pid = self._proc.pid
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self.stop()
                raise DovecotError(f"dovecot exited with {code}\n{self.log()}")
            try:
                client = imaplib.IMAP4(self.host, self.port, timeout=2)
            except OSError as err:
                last_error = err
                time.sleep(0.05)
                continue
            try:
                client.login(self.user, self.password)
                client.logout()
                if self.tls is not None:
                    self._check_imaps()
                return
            except (imaplib.IMAP4.error, OSError) as err:
                # An auth process still starting can fail the very first login.
                last_error = err
                with contextlib.suppress(Exception):
                    client.shutdown()
                time.sleep(0.1)
        self.stop(graceful=False)
        raise DovecotError(
            f"dovecot on {self.host}:{self.port} not ready after {timeout}s "
            f"(last error: {last_error!r})\n{self.log()}"
        )

    def client_tls_context(self) -> ssl.SSLContext:
        """A verifying client context that trusts this server's certificate."""
        if self.tls is None:
            raise RuntimeError("this Dovecot was started without tls")
        return ssl.create_default_context(cafile=str(self.tls[0]))

    def _check_imaps(self) -> None:
        # Both listeners are bound by the master before any child starts, but
        # a certificate Dovecot cannot use only shows in a TLS handshake.
        # An ssl.SSLError is an OSError: start() retries, then reports the log.
        conn = imaplib.IMAP4_SSL(
            self.host, self.ssl_port, ssl_context=self.client_tls_context(), timeout=2
        )
        conn.logout()

    # -- IMAP helpers (plain imaplib, independent of the code under test) --

    @contextlib.contextmanager
    def client(self) -> Iterator[imaplib.IMAP4]:
        """A logged-in imaplib client, logged out afterwards."""
        conn = imaplib.IMAP4(self.host, self.port, timeout=10)
        try:
            conn.login(self.user, self.password)
            yield conn
        finally:
            with contextlib.suppress(Exception):
                conn.logout()

    @staticmethod
    def _quote(folder: str) -> str:
        # imaplib sends mailbox names verbatim; quote so spaces work.
        return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'

    def _check(self, typ: str, data, what: str) -> None:
        if typ != "OK":
            # "NO [SERVERBUG]" says nothing by itself; the reason is in the log.
            raise RuntimeError(f"IMAP {what} failed: {typ} {data!r}\n{self.log()}")

    def create_folder(self, folder: str) -> None:
        with self.client() as conn:
            typ, data = conn.create(self._quote(folder))
            self._check(typ, data, f"CREATE {folder}")

    def append(self, raw: bytes, folder: str = "INBOX", flags: str | None = None) -> None:
        """Deliver a message the way a client or MDA would, via IMAP APPEND.

        flags is imaplib's form, e.g. r"(\\Seen)"; None appends it unread.
        """
        if isinstance(raw, str):
            raw = raw.encode()
        with self.client() as conn:
            typ, data = conn.append(self._quote(folder), flags, None, raw)
            self._check(typ, data, f"APPEND to {folder}")

    def deliver_local(self, raw: bytes, sender: str = "mailer-daemon@example.org") -> None:
        """Deliver into INBOX the way the mail server's own MTA does (dovecot-lda), without an IMAP
        login: a test counting the logins in the log sees only its client's."""
        done = subprocess.run([_LDA, "-c", str(self.conf_path), "-d", self.user, "-f", sender],
                              input=raw if isinstance(raw, bytes) else raw.encode(), capture_output=True, timeout=30)
        if done.returncode != 0:
            raise RuntimeError(f"dovecot-lda failed ({done.returncode}): {done.stderr!r}\n{self.log()}")

    def logins(self) -> int:
        """How many IMAP logins Dovecot has logged since it started (this run's log)."""
        if not self.log_path.exists():
            return 0
        return self.log_path.read_text(errors="replace").count("imap-login: Info: Login:")

    def list_uids(self, folder: str = "INBOX") -> list[int]:
        with self.client() as conn:
            typ, data = conn.select(self._quote(folder), readonly=True)
            self._check(typ, data, f"SELECT {folder}")
            typ, data = conn.uid("SEARCH", "ALL")
            self._check(typ, data, "UID SEARCH")
            return sorted(int(uid) for uid in data[0].split())

    def fetch_all(self, folder: str = "INBOX") -> list[bytes]:
        """Raw messages by ascending UID; BODY.PEEK leaves \\Seen untouched."""
        with self.client() as conn:
            typ, data = conn.select(self._quote(folder), readonly=True)
            self._check(typ, data, f"SELECT {folder}")
            typ, data = conn.uid("FETCH", "1:*", "(UID BODY.PEEK[])")
            self._check(typ, data, "UID FETCH")
        messages = []
        for item in data:
            # Literal responses come as (b'1 (UID 5 BODY[] {123}', b'raw'),
            # interleaved with b')' closers; an empty folder gives [None].
            if isinstance(item, tuple):
                match = re.search(rb"UID (\d+)", item[0])
                messages.append((int(match.group(1)), item[1]))
        return [raw for _, raw in sorted(messages)]


# --------------------------------------------------------------------------
# SMTP
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CapturedMessage:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    # Whether the session was encrypted when the message came (STARTTLS or
    # implicit TLS).
    tls: bool = False
    # time.monotonic() when the relay accepted it (for latency measurements).
    accepted_at: float = 0.0


class _CaptureHandler:
    """aiosmtpd handler; runs in the controller's event-loop thread."""

    def __init__(self, owner: "SmtpCapture") -> None:
        self.owner = owner

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        reply = self.owner._failure("rcpt")
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        reply = self.owner._failure("data")
        if reply:
            return reply
        self.owner._capture(
            CapturedMessage(
                mail_from=envelope.mail_from,
                rcpt_tos=list(envelope.rcpt_tos),
                # With decode_data=False (the default) this is the bytes as
                # received, CRLF line ends, dot-stuffing already undone.
                data=bytes(envelope.original_content),
                tls=_encrypted(server, session),
                accepted_at=time.monotonic(),
            )
        )
        return "250 OK"


class _XOAuth2Handler(_CaptureHandler):
    """A relay that takes mail only after AUTH XOAUTH2 with a token its `xoauth2(user, token)` accepts."""

    async def auth_XOAUTH2(self, server, args):
        from aiosmtpd.smtp import MISSING, AuthResult

        if len(args) == 2:
            blob = base64.b64decode(args[1])
        else:
            blob = await server.challenge_auth("")
            if blob is MISSING:
                return AuthResult(success=False, handled=True)
        fields = dict(part.split("=", 1) for part in blob.decode(errors="replace").split("\x01") if "=" in part)
        user, bearer = fields.get("user", ""), fields.get("auth", "")
        token = bearer[len("Bearer "):] if bearer.startswith("Bearer ") else ""
        self.owner.auth_attempts += 1
        if self.owner.xoauth2(user, token):
            return AuthResult(success=True, auth_data=user)
        return AuthResult(success=False, handled=False, message="535 5.7.3 Authentication unsuccessful")


class _LongAuthSMTP(SMTP):
    """RFC 4954 4 lets an AUTH line run to 12288 octets (a JWT is longer than the 512 of other commands)."""

    command_size_limit = 16384
    line_length_limit = 16384

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.command_size_limits = collections.defaultdict(lambda: self.command_size_limit)


class _XOAuth2Controller(Controller):
    def factory(self):
        with warnings.catch_warnings():  # AUTH without TLS: on the loopback, on purpose
            warnings.simplefilter("ignore")
            return _LongAuthSMTP(self.handler, **self.SMTP_kwargs)


def _encrypted(server, session) -> bool:
    # aiosmtpd fills session.ssl after STARTTLS only; with implicit TLS the
    # transport asyncio built for the connection is the TLS one from the start.
    if session.ssl is not None:
        return True
    transport = server.transport
    return transport is not None and transport.get_extra_info("ssl_object") is not None


EVERY_CAPTURED: list[bytes] = []  # every message any SmtpCapture accepted in this test session


class SmtpCapture:
    """An SMTP sink on 127.0.0.1 that records or refuses every message."""

    def __init__(
        self,
        host: str = LOCALHOST,
        tls: tuple[Path, Path] | None = None,
        implicit: bool = False,
        xoauth2=None,
    ) -> None:
        if implicit and tls is None:
            raise ValueError("implicit=True needs tls=(cert_path, key_path)")
        self.host = host
        self.port = 0
        self.tls = None if tls is None else (Path(tls[0]).absolute(), Path(tls[1]).absolute())
        self.implicit = implicit
        # xoauth2(user, token) -> bool: AUTH XOAUTH2 is then offered (without TLS too: loopback) and
        # required before MAIL; auth_attempts counts the tries.
        self.xoauth2 = xoauth2
        self.auth_attempts = 0
        # When set, this reply replaces "250 OK" at fail_on ("data" or "rcpt")
        # and nothing is captured.  Read in the server thread at each command,
        # so it can be flipped while the server runs.
        self.fail_with: str | None = None
        self.fail_on = "data"
        self.messages: list[CapturedMessage] = []
        self._cond = threading.Condition()
        self._controller: Controller | None = None

    def __enter__(self) -> "SmtpCapture":
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def start(self) -> None:
        if self._controller is not None:
            raise RuntimeError("SmtpCapture is already running")
        for attempt in range(5):
            port = free_port(self.host)
            auth = {} if self.xoauth2 is None else {"auth_require_tls": False, "auth_required": True}
            handler = (_CaptureHandler if self.xoauth2 is None else _XOAuth2Handler)(self)
            kind = Controller if self.xoauth2 is None else _XOAuth2Controller
            controller = kind(handler, hostname=self.host, port=port, **self._tls_kwargs(), **auth)
            try:
                controller.start()
            except OSError:
                # Someone took the port between free_port() and bind().
                with contextlib.suppress(Exception):
                    controller.stop()
                if attempt == 4:
                    raise
                continue
            self._controller, self.port = controller, port
            return

    def _tls_kwargs(self) -> dict:
        if self.tls is None:
            return {}
        context = server_tls_context(self.tls)
        if self.implicit:
            # The listening socket itself is TLS.  Controller's ready check
            # (_trigger_server) then connects with TLS too, unverified.
            return {"ssl_context": context}
        # STARTTLS offered in EHLO, not required: a plain client still works.
        return {"tls_context": context, "require_starttls": False}

    def client_tls_context(self) -> ssl.SSLContext:
        """A verifying client context that trusts this server's certificate."""
        if self.tls is None:
            raise RuntimeError("this SmtpCapture was started without tls")
        return ssl.create_default_context(cafile=str(self.tls[0]))

    def stop(self) -> None:
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()

    @property
    def fail_on(self) -> str:
        return self._fail_on

    @fail_on.setter
    def fail_on(self, stage: str) -> None:
        # A typo would otherwise silently never fail, passing the wrong test.
        if stage not in ("data", "rcpt"):
            raise ValueError(f"fail_on must be 'data' or 'rcpt', not {stage!r}")
        self._fail_on = stage

    def _failure(self, stage: str) -> str | None:
        reply = self.fail_with
        if reply and self.fail_on == stage:
            return reply
        return None

    def _capture(self, message: CapturedMessage) -> None:
        EVERY_CAPTURED.append(message.data)  # for the leak scan after the suite (tests/leaks.py)
        with self._cond:
            self.messages.append(message)
            self._cond.notify_all()

    def clear(self) -> None:
        with self._cond:
            self.messages.clear()

    def wait_for(self, count: int, timeout: float = 10) -> list[CapturedMessage]:
        """Block until at least count messages arrived; return a copy of them."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.messages) >= count, timeout):
                raise TimeoutError(
                    f"expected {count} message(s) within {timeout}s, got {len(self.messages)}"
                )
            return list(self.messages)


# --------------------------------------------------------------------------
# GnuPG
# --------------------------------------------------------------------------


def _gpg(gnupghome: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["gpg", "--batch", "--no-tty", "--homedir", str(gnupghome), *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=60,
    )


def prepare_gnupghome(path: Path) -> Path:
    """Create a GnuPG homedir (0700, as gpg insists) that gpg-agent can use.

    gpg puts the agent's sockets into the homedir unless /run/user/<uid>
    exists, in which case it uses /run/user/<uid>/gnupg/d.<hash> for every
    non-default homedir.  Without systemd-logind nobody creates that folder,
    and a homedir longer than a unix socket path allows (pytest tmp_path
    with a long test name) makes key generation and decryption fail with
    "No agent running".  Creating it always, not only for long paths, keeps
    the socket location the same for every test (and for the gateway's own
    gpg calls), so kill_agents finds every agent.
    """
    path = Path(path).absolute()
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    run_user = Path(f"/run/user/{os.getuid()}")
    if not run_user.is_dir():
        with contextlib.suppress(PermissionError):  # non-root: homedir sockets
            Path("/run/user").mkdir(mode=0o755, exist_ok=True)
            run_user.mkdir(mode=0o700, exist_ok=True)
    return path


def kill_agents(gnupghome: Path) -> None:
    """Stop gpg-agent (and any other daemon) of this homedir and wait for it."""
    home = str(Path(gnupghome).absolute())
    if not os.path.isdir(home):
        return
    subprocess.run(["gpgconf", "--homedir", home, "--kill", "all"], capture_output=True, timeout=30)
    # gpgconf only asks the agent to quit; wait so tests never leave one behind.
    if not _wait_until(lambda: not gpg_daemon_pids(home), timeout=5):
        for pid in gpg_daemon_pids(home):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    # Drops /run/user/<uid>/gnupg/d.<hash> if gpg used one; harmless otherwise.
    subprocess.run(
        ["gpgconf", "--homedir", home, "--remove-socketdir"], capture_output=True, timeout=30
    )


def gpg_daemon_pids(gnupghome: Path | str) -> list[int]:
    """gpg daemons started for this homedir (their command line names it)."""
    home = str(Path(gnupghome).absolute()).encode()
    return [pid for pid, argv in _gpg_daemons() if home in argv]


def gpg_daemons_under(folder: Path | str) -> dict[int, str]:
    """gpg daemons whose homedir lies in `folder` (a test's temporary folder): pid -> homedir."""
    prefix = str(Path(folder).absolute()).encode() + b"/"
    found = {}
    for pid, argv in _gpg_daemons():
        homes = [arg for arg in argv if arg.startswith(prefix)]
        if homes:
            found[pid] = homes[0].decode()
    return found


def _gpg_daemons() -> list[tuple[int, list[bytes]]]:
    daemons = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                argv = fh.read().split(b"\0")
        except OSError:
            continue
        if argv and os.path.basename(argv[0]) in (b"gpg-agent", b"dirmngr", b"keyboxd"):
            daemons.append((int(entry), argv))
    return daemons


@contextlib.contextmanager
def gnupg_home(path: Path) -> Iterator[Path]:
    """A prepared homedir whose agents are killed on exit, even on failure."""
    home = prepare_gnupghome(path)
    try:
        yield home
    finally:
        kill_agents(home)


def make_key(gnupghome: Path, name: str, email: str, expire: str = "0") -> str:
    """Generate a passphrase-less key; return its fingerprint.

    "future-default" in gpg 2.2 is an ed25519 signing primary key with a
    cv25519 encryption subkey: both are generated in milliseconds, unlike RSA.
    expire uses gpg's syntax: "0" (never), "1d", "2y", "seconds=5", ...
    """
    home = prepare_gnupghome(gnupghome)
    uid = f"{name} <{email}>" if name else f"<{email}>"
    result = _gpg(
        home,
        "--status-fd", "1",
        "--pinentry-mode", "loopback",
        "--passphrase", "",
        "--quick-gen-key", uid, "future-default", "default", expire,
    )
    match = re.search(rb"^\[GNUPG:\] KEY_CREATED \S+ ([0-9A-F]{40})", result.stdout, re.M)
    if result.returncode != 0 or not match:
        raise RuntimeError(
            f"gpg key generation failed ({result.returncode}):\n"
            f"{result.stdout.decode(errors='replace')}{result.stderr.decode(errors='replace')}"
        )
    return match.group(1).decode()


def export_public(gnupghome: Path, fingerprint: str) -> str:
    """The ASCII-armoured public key (for importing into another keyring)."""
    result = _gpg(Path(gnupghome), "--armor", "--export", fingerprint)
    armored = result.stdout.decode()
    if result.returncode != 0 or "BEGIN PGP PUBLIC KEY BLOCK" not in armored:
        raise RuntimeError(
            f"gpg export of {fingerprint} failed: {result.stderr.decode(errors='replace')}"
        )
    return armored
