"""`gateway keys import` and `gateway keys list`: the public keys in keys/, each with whose it is, what the
rules use it for and when it expires. Judged as `gateway check` judges them (keys.py, routing_check.py)."""

from __future__ import annotations

import time
from pathlib import Path

from .. import rules as rules_module
from ..config import Config
from ..errors import KeyFileError, NoUsableKey
from ..keys import EXPIRY_WARNING_DAYS, Keyring, PublicKey
from ..rules import Rules
from .check import table_label


def import_key_file(settings: Config, source: Path, replace: bool = False) -> str:
    """Copy one public key into keys/ as ADDRESS.asc; say whom it serves and when it expires."""
    try:
        data = Path(source).read_bytes()
    except OSError as error:
        raise KeyFileError(f"cannot read {source} ({error.strerror or type(error).__name__})") from None
    rules = _rules(settings)
    keyring = Keyring(settings.gnupg.home, pins=rules.pins())
    found = keyring.scan(data)
    if any(secret for secret, _ in found):
        raise KeyFileError(f"{source} holds a secret (private) key: nothing was copied. Never give the gateway anyone's "
                           "secret key; ask for the public key alone (gpg --armor --export ADDRESS, or Kleopatra's Export...)")
    if not found:
        raise KeyFileError(f"{source} holds no OpenPGP public key: nothing was copied. Ask for the key exported in "
                           "armoured form (gpg --armor --export ADDRESS > ADDRESS.asc, or Kleopatra's Export...)")
    if len(found) > 1:
        raise KeyFileError(f"{source} holds {len(found)} keys: import one key per file, so each has a clear name in keys/")
    key = found[0][1]
    target = settings.paths.keys / f"{_name(key, rules)}.asc"
    if target.exists():
        held = {k.fingerprint for _, k in keyring.scan(target.read_bytes())}
        if held != {key.fingerprint} and not replace:
            raise KeyFileError(f"{target} already holds another key ({', '.join(sorted(held)) or 'unreadable'}): if this "
                               "one replaces it, run again with --replace")
    # Armoured from the keyring: a binary export becomes a readable .asc.
    keyring.import_key(data)
    settings.paths.keys.mkdir(parents=True, exist_ok=True)
    target.write_text(keyring.export_public(key.fingerprint))
    keyring.import_folder(settings.paths.keys)
    keys = keyring.public_keys()
    lines = [f"Copied to {target}."] + describe(key, rules, keyring, keys)
    keyring.stop_agent()
    return "\n".join(lines)


def list_keys(settings: Config, now: float | None = None) -> str:
    """Every key in keys/: fingerprint, user IDs, expiry, uses; flagged when expired, expiring or unused."""
    rules = _rules(settings)
    keyring = Keyring(settings.gnupg.home, pins=rules.pins())
    problems = keyring.import_folder(settings.paths.keys)
    keys = keyring.public_keys()
    lines = [f"{problem}" for problem in problems]
    for key in sorted(keys, key=lambda k: [str(p) for p in keyring.files_of(k.fingerprint)]):
        files = ", ".join(str(p) for p in keyring.files_of(key.fingerprint))
        lines += ["", files] + describe(key, rules, keyring, keys, now)
    keyring.stop_agent()
    if not keys:
        lines.append(f"No public key in {settings.paths.keys}: add each recipient's with gateway keys import FILE.asc")
    return "\n".join(lines).strip("\n")


def describe(key: PublicKey, rules: Rules, keyring: Keyring, keys: list[PublicKey], now: float | None = None) -> list[str]:
    """A key in words: fingerprint, user IDs, expiry, and what the rules use it for (or that nothing does)."""
    now = time.time() if now is None else now
    uses = uses_of(key, rules, keyring, keys)
    if key.why_not:
        state = f"NOT USABLE: {key.trouble()}"
    elif key.expires_within(EXPIRY_WARNING_DAYS * 86400, now):
        state = f"EXPIRES SOON, on {key.expires_on:%Y-%m-%d}: ask its owner for a renewed key"
    else:
        state = f"expires on {key.expires_on:%Y-%m-%d}" if key.expires_on else "never expires"
    return [
        f"  fingerprint  {key.fingerprint}",
        f"  user IDs     {'; '.join(key.uids) or '(none)'}",
        f"  expiry       {state}",
    ] + [f"  used for     {use}" for use in uses] + ([] if uses else [
        "  used for     UNUSED: no borough's recipients, provider's senders or signing_keys name it"])


def uses_of(key: PublicKey, rules: Rules, keyring: Keyring, keys: list[PublicKey]) -> list[str]:
    """Which boroughs (recipients) and providers (signing keys, senders whose receipts are encrypted) it serves."""
    uses = []
    for borough in rules.receiving():
        for address in set(borough.recipients) & set(key.addresses):
            uses.append(f"{table_label(borough)}: recipient {address}{_unless_chosen(keyring, address, key, keys)}")
    for provider in rules.providers.values():
        who = f"provider {provider.ukprn} ({provider.name})"
        if key.fingerprint in provider.signing_keys:
            uses.append(f"{who}: signing key")
        for address in key.addresses:
            if address in provider.senders or address == provider.receipts_to:
                uses.append(f"{who}: its receipts to {address} are encrypted to it{_unless_chosen(keyring, address, key, keys)}")
    return uses


def _unless_chosen(keyring: Keyring, address: str, key: PublicKey, keys: list[PublicKey]) -> str:
    """Nothing when the gateway would encrypt to this key for the address; else why it would not."""
    try:
        chosen = keyring.key_for(address, keys)
    except NoUsableKey as why:
        return f" (but {why})"
    return "" if chosen == key.fingerprint else f" (but another key is used for it: {chosen})"


def _name(key: PublicKey, rules: Rules) -> str:
    """The file's name in keys/: the address the rules know it by, else its first address, else its fingerprint."""
    known = rules.recipients() | {a for p in rules.providers.values() for a in (*p.senders, p.receipts_to or "")}
    named = [a for a in key.addresses if a in known] or list(key.addresses)
    safe = [a for a in named if "/" not in a and not a.startswith(".")]  # a user ID is the key owner's text
    return safe[0] if safe else key.fingerprint


def _rules(settings: Config) -> Rules:
    """The rules as far as they can be read (problems in them are `gateway check`'s to report)."""
    return rules_module.check(settings.paths.rules)[0]
