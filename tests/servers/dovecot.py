"""A private Dovecot IMAP server for tests (needs root, ``dovecot`` and ``dovenull`` users).

A fixture is a with-block around a yield::

    @pytest.fixture
    def imap(tmp_path):
        with Dovecot(tmp_path / "imap") as server:
            yield server

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
"""

from __future__ import annotations

import contextlib
import imaplib
import os
import pwd
import re
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path

from gateway.demo.embedded import free_port

from .processes import LOCALHOST, session_pids, wait_until
from .tls import server_tls_context


class DovecotError(RuntimeError):
    """Dovecot did not start; the message carries its log."""


_DOVECOT_CONF = """\
# Written by tests/servers/dovecot.py: a self-contained test instance.
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

    def __enter__(self) -> Dovecot:
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
                self.port = free_port()
                if self.tls is not None:
                    self.ssl_port = free_port()
                    while self.ssl_port == self.port:
                        self.ssl_port = free_port()
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
        if not wait_until(lambda: not session_pids(proc.pid), timeout=5):
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
