"""The keyring: import keys/, find a recipient's key (the pinned one, else the one valid key), expiry,
encrypt, and decrypt safely.

python-gnupg logs the data it reads at DEBUG (decrypted text included): logs.py keeps its logger at
WARNING, whatever level the gateway runs at.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import gnupg

from .errors import (
    Damaged,
    DecryptedTooLarge,
    KeyringError,
    NoIntegrity,
    NotForUs,
    NotOpenPGP,
    NoUsableKey,
    OwnKeyLocked,
    Problem,
)

_STATUS = re.compile(r"^\[GNUPG:\] (\S+) ?(.*)$", re.MULTILINE)
_EMAIL_IN_UID = re.compile(r"<([^<>\s]+@[^<>\s]+)>|^([^<>\s]+@[^<>\s]+)$")
_UNUSABLE_TRUST = {"e", "r", "i", "d", "n"}
_MAX_OUTPUT_MARGIN = 1024 * 1024
# A key that needs a passphrase the gateway was not given fails at once, instead of gpg-agent starting a
# pinentry that waits for a person at a terminal (or fails later with a less clear error).
_NO_PINENTRY = ["--pinentry-mode", "loopback"]
# Each gpg run otherwise reads and rewrites the keyring's random_seed file under a lock: the pipeline's
# workers, encrypting at once, then wait on each other and a burst runs on one core. The kernel's random
# source seeds libgcrypt as well (the file only saves it the trouble), so no key or session key is weaker.
_SHARED = ["--no-random-seed-file"]


EXPIRY_WARNING_DAYS = 30  # a key this close to expiring is worth a warning (`gateway check`, status, jobs)

@dataclass(frozen=True)
class PublicKey:
    fingerprint: str
    addresses: tuple[str, ...]
    expires: int | None  # seconds since the epoch, None for never: when it can no longer encrypt
    usable: bool
    why_not: str = ""
    uids: tuple[str, ...] = ()  # the user IDs as written ("LDOR officer <ldor@islington.example>")

    def expires_within(self, seconds: float, now: float | None = None) -> bool:
        return self.expires is not None and self.expires - (now or time.time()) < seconds

    @property
    def expires_on(self) -> date | None:
        """The day (UTC) it stops working, for messages: "expires on 2026-05-31"."""
        return None if self.expires is None else datetime.fromtimestamp(self.expires, UTC).date()

    def trouble(self) -> str:
        """Why it cannot be used, in words an administrator can act on."""
        if self.why_not == "expired" and self.expires_on is not None:
            return f"expired on {self.expires_on:%Y-%m-%d}"
        return self.why_not


@dataclass(frozen=True)
class Signature:
    """What gpg said of a signature, if there was one."""

    present: bool = False
    signer: str | None = None  # primary-key fingerprint of a good signature by a current key
    bad: bool = False  # present, but does not match, or made by an expired or revoked key


NO_SIGNATURE = Signature()


@dataclass(frozen=True)
class Decrypted:
    data: bytes
    signature: Signature = Signature()

    @property
    def signer(self) -> str | None:
        return self.signature.signer


SELF_TEST = b"ldor-gateway: the gateway's own key decrypts what is encrypted to it"
# The agent keeps no unlocked key between two decryptions: a wrong passphrase shows at once (not once
# a cached one has timed out), and nothing stays unlocked for another process to use.
AGENT_CONF = "default-cache-ttl 0\nmax-cache-ttl 0\n"


class Keyring:
    """The gateway's GnuPG home: its own secret key plus the public keys administrators put in keys/."""

    def __init__(self, home: Path, passphrase: str | None = None, pins: Mapping[str, str] | None = None,
                 passphrase_env: str = "") -> None:
        """`pins`: recipient address -> the fingerprint of the key its packages must use (rules/boroughs.toml).
        `passphrase_env`: the variable `passphrase` came from ([gnupg] passphrase_env), named in messages."""
        self.home = Path(home)
        self.home.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.home, 0o700)
        _socket_folder(self.home)
        try:
            self._gpg = gnupg.GPG(gnupghome=str(self.home), options=_SHARED)
        except (OSError, ValueError) as error:  # python-gnupg runs `gpg --version` here: gpg missing or broken
            raise KeyringError(
                f"gpg cannot be run ({type(error).__name__}): nothing can be decrypted or encrypted, so no mail was "
                "taken from the mailbox. Install GnuPG 2 (apt-get install gnupg) or put it on the gateway's PATH, "
                "then run the gateway again; the returns are waiting in the mailbox.") from None
        self._gpg.encoding = "utf-8"
        self._passphrase = passphrase
        self._passphrase_env = passphrase_env
        self._pins = {address.lower(): fingerprint.upper() for address, fingerprint in (pins or {}).items()}
        self._from_folder: set[str] = set()
        self._sources: dict[str, list[Path]] = {}
        self._reader: gnupg.GPG | None = None
        self._decrypting = threading.Lock()

    # -- keys ---------------------------------------------------------------------------------
    def import_folder(self, folder: Path) -> list[Problem]:
        """Import every keys/*.asc; only keys found there count for recipients and providers."""
        problems = []
        self._from_folder = set()
        for path in sorted(Path(folder).glob("*.asc")):
            try:
                text = path.read_bytes()
            except OSError as error:
                problems.append(Problem(path, None, f"cannot read the key file ({type(error).__name__})"))
                continue
            result = self._gpg.import_keys(text)
            if not result.fingerprints:
                problems.append(Problem(path, None, "holds no OpenPGP public key gpg can import; export the key again in armoured form (.asc)"))
                continue
            self._from_folder.update(result.fingerprints)
            for fingerprint in result.fingerprints:
                self._sources.setdefault(fingerprint, []).append(path)
        return problems

    def files_of(self, fingerprint: str) -> list[Path]:
        """The files in keys/ that hold this key (import_folder)."""
        return self._sources.get(fingerprint, [])

    def import_key(self, armoured: str | bytes) -> str:
        """Import one public key (not from keys/: such a key is never a recipient's); return its fingerprint."""
        result = self._gpg.import_keys(armoured)
        if not result.fingerprints:
            raise KeyringError("the text holds no OpenPGP public key")
        return str(result.fingerprints[0])

    def scan(self, data: bytes) -> list[tuple[bool, PublicKey]]:
        """What a key file holds, without importing it: (is a secret key, the key) for each key in it."""
        return [(key.get("type") == "sec", _public_key(key)) for key in self._gpg.scan_keys_mem(data)]

    def public_keys(self) -> list[PublicKey]:
        """Keys imported from keys/, with whether each can be used to encrypt now."""
        return [_public_key(key) for key in self._gpg.list_keys() if key["fingerprint"] in self._from_folder]

    def own_key(self) -> PublicKey:
        """The gateway's own key (providers encrypt to it), described like the keys in keys/."""
        fingerprint = self.own_fingerprint()
        for key in self._gpg.list_keys():
            if key["fingerprint"] == fingerprint:
                return _public_key(key)
        raise KeyringError(f"the gateway's keyring {self.home} holds its secret key {fingerprint} but not the public half")

    def pinned(self, address: str) -> str | None:
        """The fingerprint rules/boroughs.toml pins for this recipient, if any."""
        return self._pins.get(address.lower())

    def key_for(self, address: str, keys: list[PublicKey] | None = None) -> str:
        """The fingerprint of the key for `address`: the pinned one, else the single usable one; NoUsableKey says why not."""
        address = address.lower()
        keys = self.public_keys() if keys is None else keys
        pinned = self.pinned(address)
        if pinned is not None:
            return _pinned_key(address, pinned, keys).fingerprint
        mine = [k for k in keys if address in k.addresses]
        usable = [k for k in mine if k.usable]
        if len(usable) == 1:
            return usable[0].fingerprint
        if not mine:
            raise NoUsableKey(f"no public key in keys/ has a user ID with {address}")
        if not usable:
            if all(k.why_not == "expired" for k in mine):
                latest = max(mine, key=lambda k: k.expires or 0)
                raise NoUsableKey(f"the key for {address} ({latest.fingerprint}) {latest.trouble()}; ask {address} for a renewed key")
            reasons = ", ".join(sorted({k.trouble() for k in mine}))
            raise NoUsableKey(f"the key for {address} cannot be used ({reasons})")
        raise NoUsableKey(f"{len(usable)} valid keys in keys/ are for {address}; keep exactly one, or pin one in rules/boroughs.toml")

    def generate(self, name: str, address: str, passphrase: str | None = None, expire: str | int = 0) -> str:
        """Create an ed25519/cv25519 key in this keyring (protected by `passphrase` when given, expiring
        after `expire` in gpg's syntax, e.g. "2y"); return its fingerprint."""
        protection = {"passphrase": passphrase} if passphrase else {"no_protection": True}
        spec = self._gpg.gen_key_input(
            name_real=name, name_email=address, key_type="EDDSA", key_curve="ed25519", key_usage="sign",
            subkey_type="ECDH", subkey_curve="cv25519", subkey_usage="encrypt", expire_date=expire, **protection,
        )
        result = self._gpg.gen_key(spec)
        if not result.fingerprint:
            raise KeyringError(f"gpg could not create a key in {self.home}")
        return str(result.fingerprint)

    def stop_agent(self) -> None:
        """Stop this keyring's gpg-agent (it would otherwise outlive a short-lived process)."""
        subprocess.run(["gpgconf", "--homedir", str(self.home), "--kill", "all"], capture_output=True, check=False)

    def own_fingerprint(self) -> str:
        secret = self._gpg.list_keys(secret=True)
        if len(secret) != 1:
            raise KeyringError(f"the gateway's keyring {self.home} must hold exactly one secret key, it holds {len(secret)}")
        return str(secret[0]["fingerprint"])

    def export_public(self, fingerprint: str) -> str:
        return str(self._gpg.export_keys(fingerprint))

    def prove_own_key(self) -> None:
        """Encrypt a short message to the gateway's own key and decrypt it; OwnKeyLocked says why not."""
        try:
            fingerprint = self.own_fingerprint()
        except KeyringError as error:
            raise OwnKeyLocked(f"the gateway cannot decrypt: {error}") from None
        try:
            sealed = self.encrypt(SELF_TEST, fingerprint)
        except KeyringError:
            return  # an expired key still decrypts; `gateway check` reports its expiry
        result = self._gpg.decrypt(sealed, passphrase=self._passphrase, always_trust=True, extra_args=_NO_PINENTRY)
        if result.data == SELF_TEST and "DECRYPTION_OKAY" in dict(_STATUS.findall(result.stderr or "")):
            return
        variable = self._passphrase_env
        if self._passphrase is None and variable:
            raise OwnKeyLocked(f"the gateway's own key {fingerprint} needs a passphrase and the variable {variable} "
                               "([gnupg] passphrase_env) is not set: set it to the key's passphrase in the gateway's environment")
        if self._passphrase is None:
            raise OwnKeyLocked(f"the gateway's own key {fingerprint} needs a passphrase: set [gnupg] passphrase_env = "
                               '"GATEWAY_GPG_PASSPHRASE" in config.toml and that variable to the key\'s passphrase')
        raise OwnKeyLocked(f"the gateway's own key {fingerprint} cannot be unlocked with the passphrase in "
                           f"{variable or '[gnupg] passphrase_env'}: it is wrong; set the variable to the key's passphrase")

    # -- crypto -------------------------------------------------------------------------------
    def encrypt(self, data: bytes, fingerprint: str, armour: bool = False) -> bytes:
        """OpenPGP ciphertext for exactly this key (the key was chosen by fingerprint, so trust it)."""
        result = self._gpg.encrypt(data, [fingerprint], always_trust=True, armor=armour)
        if not result.ok:
            raise KeyringError(f"gpg could not encrypt to key {fingerprint}: {result.status}")
        return bytes(result.data)

    def decrypt(self, data: bytes, limit: int | None = None) -> Decrypted:
        """Decrypt in memory; accept only a clean, integrity-protected decryption to the gateway's key.

        With `limit`, at most that many decrypted bytes are taken: OpenPGP compresses, so a few KB can
        expand to gigabytes. gpg itself stops writing just past the limit (--max-output), and what it
        wrote past the limit is not kept, so memory stays bounded whatever gpg does.
        """
        extra = None
        received = 0

        def count(chunk: bytes) -> bool:
            nonlocal received
            received += len(chunk)
            return limit is None or received <= limit  # False: python-gnupg drops the chunk

        if limit is not None:
            # gpg stops at the chunk that would pass --max-output without writing it, so the margin lets
            # the count pass the limit (proof the file is larger), and gpg's own complaint names the option.
            extra = ["--max-output", str(limit + _MAX_OUTPUT_MARGIN)]
        with self._decrypting:
            if self._reader is None:
                # Its own GPG object: on_data belongs to the object, and encryption elsewhere must not be counted.
                self._reader = gnupg.GPG(gnupghome=str(self.home), options=_SHARED)
                self._reader.encoding = "utf-8"
            self._reader.on_data = count
            try:
                result = self._reader.decrypt(data, passphrase=self._passphrase, always_trust=True,
                                              extra_args=_NO_PINENTRY + (extra or []))
            finally:
                self._reader.on_data = None
        if limit is not None and (received > limit or "--max-output" in _stderr(result)):
            raise DecryptedTooLarge(f"the decrypted file passed the limit of {limit} bytes")
        statuses = dict(_STATUS.findall(_stderr(result)))
        check_decryption(statuses, self.prove_own_key)
        return Decrypted(result.data, _signature(statuses))

    def verify_detached(self, data: bytes, signature: bytes) -> Signature:
        """Check a detached signature (PGP/MIME multipart/signed) over bytes held in memory."""
        with tempfile.NamedTemporaryFile(suffix=".sig") as handle:  # gpg reads the signature from a file; it is not personal data
            handle.write(signature)
            handle.flush()
            result = self._gpg.verify_data(handle.name, data)
        return _signature(dict(_STATUS.findall(_stderr(result))))


class RunKeys:
    """What the keyring holds, looked up once for one mailbox run: each look is a gpg start, and a run's
    messages would otherwise repeat the same three for every message. A key put in keys/ counts from the next run."""

    def __init__(self, keyring: Keyring) -> None:
        self.keyring = keyring
        # Each kept once looked up; a failed look keeps nothing, and raises again for the next message.
        self._public: list[PublicKey] | None = None
        self._own: str | None = None
        self._exported: str | None = None

    def public_keys(self) -> list[PublicKey]:
        if self._public is None:
            self._public = self.keyring.public_keys()
        return self._public

    def own_fingerprint(self) -> str:
        if self._own is None:
            self._own = self.keyring.own_fingerprint()
        return self._own

    def own_public(self) -> str:
        """The gateway's own public key, armoured (attached to receipts)."""
        if self._exported is None:
            self._exported = self.keyring.export_public(self.own_fingerprint())
        return self._exported


def check_decryption(statuses: dict[str, str], prove_own_key: Callable[[], None]) -> None:
    """gpg's status lines -> nothing for a clean, integrity-protected decryption to the gateway's key, else
    the KeyringError subclass that says which outcome it was (OwnKeyLocked from `prove_own_key` when the
    gateway's own key may be at fault)."""
    # Not the exit code: gpg exits 2 when a signature's key is unknown, though decryption was clean.
    clean = (
        "DECRYPTION_OKAY" in statuses
        and "DECRYPTION_KEY" in statuses  # public-key decryption, not a shared passphrase
        and not {"DECRYPTION_FAILED", "BADMDC"} & statuses.keys()
    )
    mdc_method = statuses.get("DECRYPTION_INFO", "").split()[:1]
    if not clean:
        if "NO_SECKEY" in statuses and "DECRYPTION_KEY" not in statuses:
            raise NotForUs("the file is encrypted to a key that is not the gateway's")
        if "BEGIN_DECRYPTION" not in statuses and "ENC_TO" not in statuses:
            raise NotOpenPGP("the file is not OpenPGP encrypted data")
        if mdc_method == ["0"] and not _aead(statuses):
            raise NoIntegrity("the file is not integrity protected (no MDC), so it is refused")
        if "DECRYPTION_KEY" not in statuses:
            prove_own_key()  # the file's session key was not unlocked: the gateway's own key may be at fault
        raise Damaged("gpg could not decrypt the file: it is damaged or incomplete")
    if "GOODMDC" not in statuses and not _aead(statuses):
        raise NoIntegrity("the file is not integrity protected (no MDC), so it is refused")


def _stderr(result: object) -> str:
    """What gpg said. python-gnupg sets it when its reader thread ends normally; one that died on a malformed
    status line leaves none, and the file is then refused as not decrypted cleanly."""
    return getattr(result, "stderr", None) or ""


def _public_key(key: dict[str, Any]) -> PublicKey:
    """What gpg lists of one key, as the gateway judges it: its addresses, when it stops working, whether usable now."""
    addresses = tuple(sorted({a for uid in key.get("uids", []) for a in _addresses(uid)}))
    expires = _encryption_expiry(key)
    why = ""
    if key.get("trust") == "r":
        why = "revoked"
    elif key.get("trust") == "e" or (expires is not None and expires <= time.time()):
        why = "expired"
    elif key.get("trust") in _UNUSABLE_TRUST:
        why = "invalid"
    elif "E" not in key.get("cap", ""):
        why = "has no usable encryption subkey"
    return PublicKey(key["fingerprint"], addresses, expires, not why, why, tuple(key.get("uids", [])))


def _encryption_expiry(key: dict[str, Any]) -> int | None:
    """When the key can no longer encrypt: the primary key's expiry, or its encryption subkeys' when sooner.

    A key whose primary was extended but whose encryption subkey was not stops working on the subkey's date.
    """
    primary = int(key["expires"]) if key.get("expires") else None
    subkeys = [info for info in key.get("subkey_info", {}).values() if "e" in info.get("cap", "") and info.get("trust") != "r"]
    if not subkeys or any(not info.get("expires") for info in subkeys):
        return primary
    last = max(int(info["expires"]) for info in subkeys)
    return last if primary is None else min(primary, last)


def _pinned_key(address: str, fingerprint: str, keys: list[PublicKey]) -> PublicKey:
    """The pinned key, used even when other keys in keys/ carry the address; never a substitute for it."""
    key = next((k for k in keys if k.fingerprint == fingerprint), None)
    if key is None:
        raise NoUsableKey(f"the key pinned for {address} ({fingerprint}) is not in keys/")
    if address not in key.addresses:
        holder = ", ".join(key.addresses) or "no email address"
        raise NoUsableKey(f"the key pinned for {address} ({fingerprint}) has a user ID with {holder}, not {address}: pin {address}'s own key")
    if key.why_not == "expired":
        raise NoUsableKey(f"the key pinned for {address} ({fingerprint}) {key.trouble()}; ask {address} for a renewed key and pin its fingerprint")
    if not key.usable:
        raise NoUsableKey(f"the key pinned for {address} ({fingerprint}) cannot be used ({key.trouble()})")
    return key


_SIGNATURE_STATUSES = {"GOODSIG", "BADSIG", "ERRSIG", "EXPSIG", "EXPKEYSIG", "REVKEYSIG"}


def _signature(statuses: dict[str, str]) -> Signature:
    if not _SIGNATURE_STATUSES & statuses.keys():
        return Signature()
    good = "GOODSIG" in statuses and "VALIDSIG" in statuses
    if not good:
        # ERRSIG alone means the key is not in keys/: present, not bad, but not anyone's we know.
        return Signature(present=True, bad=bool({"BADSIG", "EXPKEYSIG", "REVKEYSIG", "EXPSIG"} & statuses.keys()))
    # VALIDSIG <fingerprint> <date> <timestamp> <expires> <version> <reserved> <algo> <hash> <class> [<primary>]
    fields = statuses["VALIDSIG"].split()
    return Signature(present=True, signer=fields[9] if len(fields) > 9 else fields[0])


def _socket_folder(home: Path) -> None:
    """Let gpg-agent start for a keyring whose path is too long for a unix socket.

    gpg then puts the agent's sockets under /run/user/<uid>, but only if that folder exists; a login
    session creates it, a service or a container often does not.
    """
    if len(str(home.absolute())) + len("/S.gpg-agent.browser") < 100:
        return
    runtime = Path("/run/user") / str(os.getuid())
    try:
        runtime.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError:
        raise KeyringError(f"the keyring path {home} is too long for gpg's sockets; use a shorter [gnupg] home") from None


def _aead(statuses: dict[str, str]) -> bool:
    # DECRYPTION_INFO <mdc_method> <sym_algo> [<aead_algo>]: a non-zero AEAD algorithm protects integrity.
    parts = statuses.get("DECRYPTION_INFO", "").split()
    return len(parts) >= 3 and parts[2] != "0"


def _addresses(uid: str) -> set[str]:
    found = set()
    for match in _EMAIL_IN_UID.finditer(uid.strip()):
        found.add((match.group(1) or match.group(2)).lower())
    return found
