"""GnuPG homedirs and throwaway keys for tests (no passphrases, ed25519/cv25519 keys, ~30 ms each).

    with gnupg_home(tmp_path / "alice") as home:      # 0700 dir; agents killed on exit
        fpr = make_key(home, "Alice", "alice@example.org", expire="0")
        armored = export_public(home, fpr)
    prepare_gnupghome(path) -> Path                   # what gnupg_home does on enter
    kill_agents(path)                                 # what gnupg_home does on exit
    gpg_daemon_pids(path) -> list[int]                # agents still alive for it
    gpg_daemons_under(folder) -> {pid: homedir}       # agents of every homedir in a test's folder
    make_key raises RuntimeError with gpg's output when generation fails.

    Homedirs of any length work: prepare_gnupghome applies the gateway's own rule (gateway.keys), which
    makes /run/user/<uid> for a homedir too long for a unix socket path (107 bytes), and gpg then puts
    the agent's sockets there.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

from gateway.keys import _socket_folder

from .processes import gpg_daemons, wait_until


def _gpg(gnupghome: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["gpg", "--batch", "--no-tty", "--homedir", str(gnupghome), *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=60,
    )


def prepare_gnupghome(path: Path) -> Path:
    """Create a GnuPG homedir (0700, as gpg insists) that gpg-agent can use, as the gateway's Keyring does."""
    path = Path(path).absolute()
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    _socket_folder(path)
    return path


def kill_agents(gnupghome: Path) -> None:
    """Stop gpg-agent (and any other daemon) of this homedir and wait for it."""
    home = str(Path(gnupghome).absolute())
    if not os.path.isdir(home):
        return
    subprocess.run(["gpgconf", "--homedir", home, "--kill", "all"], capture_output=True, timeout=30)
    # gpgconf only asks the agent to quit; wait so tests never leave one behind.
    if not wait_until(lambda: not gpg_daemon_pids(home), timeout=5):
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
    return [pid for pid, argv in gpg_daemons() if home in argv]


def gpg_daemons_under(folder: Path | str) -> dict[int, str]:
    """gpg daemons whose homedir lies in `folder` (a test's temporary folder): pid -> homedir."""
    prefix = str(Path(folder).absolute()).encode() + b"/"
    found = {}
    for pid, argv in gpg_daemons():
        homes = [arg for arg in argv if arg.startswith(prefix)]
        if homes:
            found[pid] = homes[0].decode()
    return found


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
