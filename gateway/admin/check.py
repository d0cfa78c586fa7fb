"""`gateway check` once config.toml is read: the rule files, the routing, the keys and the secrets'
variables, each problem on its own line with its file, its line and what to do about it."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from .. import rules as rules_module
from ..config import Config, secret
from ..errors import KeyringError, NoUsableKey, OwnKeyLocked, Problem
from ..keys import EXPIRY_WARNING_DAYS, Keyring, PublicKey
from ..reference import authorities
from ..reference.postcodes import Directory
from ..rules import HOST_BOROUGH, OUTSIDE, Borough, Rules


@dataclass(frozen=True)
class Advisory(Problem):
    """Not wrong, but worth acting on (a key about to expire, a provider with no host_la): the gateway still works."""


def check_installation(settings: Config, directory: Directory | None = None, now: float | None = None) -> list[Problem]:
    """Every problem `gateway check` reports after config.toml's own. `now` (seconds since the epoch) is for tests."""
    directory = directory or Directory(cache_root=settings.paths.database.parent / "cache")
    rules, problems = rules_module.check(settings.paths.rules, rules_module.known_authorities(directory))
    problems += check_keys(settings, rules, now)
    problems += host_authorities(rules, settings.paths.rules / "providers.toml")
    problems += _empty_rules(rules, settings.paths.rules)
    problems += _unset_secrets(settings)
    problems += _unset_passwords(rules, settings.paths.rules / "providers.toml")
    return problems


def _empty_rules(rules: Rules, folder: Path) -> list[Problem]:
    """A new installation (gateway init) has no borough and no provider yet: say what that means."""
    problems: list[Problem] = []
    if not rules.boroughs:
        problems.append(Advisory(folder / "boroughs.toml", None, "warning: no borough yet, so no row can be forwarded: "
                                 "add one table per borough (its ONS code, recipients, format) and import each recipient's key "
                                 "with gateway keys import"))
    if not rules.providers:
        problems.append(Advisory(folder / "providers.toml", None, "warning: no provider yet, so every message would be "
                                 "quarantined: add one table per provider (its UKPRN, name, senders, host_la)"))
    return problems


def _unset_passwords(rules: Rules, providers_file: Path) -> list[Problem]:
    """A provider's password_env the gateway's environment does not set: its protected files could not be opened."""
    return [
        Problem(providers_file, provider.line,
                f"provider {provider.ukprn} ({provider.name}): the variable {provider.password_env} named by its password_env "
                "is not set in this environment, so its password-protected workbooks and zips cannot be opened (each would "
                f"be rejected as having no agreed password): set {provider.password_env} in the gateway's environment")
        for provider in rules.providers.values() if provider.password_env and secret(provider.password_env) is None
    ]


def host_authorities(rules: Rules, providers_file: Path) -> list[Problem]:
    """Providers whose rows with a postcode that cannot be placed would be held back rather than reach the
    authority the provider is in (routing.toml's unplaceable = "host_borough")."""
    if rules.routing.unplaceable != HOST_BOROUGH:
        return []
    tiers = authorities.load()
    problems: list[Problem] = []
    for provider in rules.providers.values():
        where = f"warning: provider {provider.ukprn} ({provider.name})"
        held = ("rows of its returns whose postcode is missing, malformed or not yet in the postcode directory "
                "will be held back instead of going to the authority it is in")
        if not provider.host_la:
            problems.append(Advisory(providers_file, provider.line, f"{where} has no host_la, so {held}: add "
                                     'host_la = "<ONS code of the authority it is in>", e.g. host_la = "E09000019"'))
            continue
        host = tiers.upper_tier(provider.host_la) or provider.host_la
        if host not in rules.boroughs:
            problems.append(Advisory(providers_file, provider.line, f"{where} has host_la = \"{provider.host_la}\" "
                                     f"({tiers.label(host)}), which has no table in boroughs.toml, so {held}"))
    return problems


def check_keys(settings: Config, rules: Rules, now: float | None = None) -> list[Problem]:
    """keys/ and the gateway's own key, judged against the rules: each recipient's key, pins, signing keys."""
    now = time.time() if now is None else now
    keyring = Keyring(settings.gnupg.home, secret(settings.gnupg.passphrase_env), pins=rules.pins(),
                      passphrase_env=settings.gnupg.passphrase_env)
    problems = keyring.import_folder(settings.paths.keys)
    problems += _own_key(keyring, settings, now)
    keys = keyring.public_keys()
    for address, tables in _tables_by_recipient(rules).items():
        problems += _recipient_key(keyring, keys, address, tables, settings.paths.rules, now)
    problems += _signing_keys(rules, keys, settings.paths.rules / "providers.toml", now)
    return problems


def _own_key(keyring: Keyring, settings: Config, now: float) -> list[Problem]:
    home = settings.gnupg.home
    try:
        own = keyring.own_key()
    except KeyringError as error:
        return [Problem(home, None, f"{error}: create it with gpg --homedir {home} --quick-gen-key ADDRESS")]
    extend = (f"extend it (gpg --homedir {home} --quick-set-expire {own.fingerprint} 2y, then the same with '*' "
              "added for its subkeys) and send providers the new public key")
    if own.why_not == "expired":
        return [Problem(home, None, f"the gateway's own key {own.fingerprint} {own.trouble()}, so providers cannot encrypt returns to it: {extend}")]
    if not own.usable:
        return [Problem(home, None, f"the gateway's own key {own.fingerprint} cannot be used ({own.trouble()}): make a new one and send providers its public key")]
    try:
        keyring.prove_own_key()  # decrypts a test message: a missing or wrong passphrase shows here, not on a return
    except OwnKeyLocked as locked:
        return [Problem(settings.path, None, str(locked))]
    if _expires_soon(own, now):
        return [Advisory(home, None, f"warning: the gateway's own key {own.fingerprint} expires on {own.expires_on:%Y-%m-%d}; {extend}")]
    return []


def _tables_by_recipient(rules: Rules) -> dict[str, list[Borough]]:
    """Each recipient address with every table that lists it (a sub-regional unit is listed in several)."""
    tables: dict[str, list[Borough]] = {}
    for borough in rules.receiving():
        for address in borough.recipients:
            tables.setdefault(address, []).append(borough)
    return tables


def _recipient_key(keyring: Keyring, keys: list[PublicKey], address: str, tables: list[Borough], rules_folder: Path,
                   now: float) -> list[Problem]:
    """At most one line per address, however many tables list it."""
    where = _where(address, tables, keyring.pinned(address) is not None, rules_folder)
    label = ", ".join(table_label(b) for b in tables)
    try:
        fingerprint = keyring.key_for(address, keys)
    except NoUsableKey as why:
        return [Problem(*where, f"{label}: {why}; its packages would be held")]
    key = next(k for k in keys if k.fingerprint == fingerprint)
    if _expires_soon(key, now):
        return [Advisory(*where, f"{label}: warning: the key for {address} ({fingerprint}) expires on {key.expires_on:%Y-%m-%d}; ask {address} for a renewed key")]
    return []


def _where(address: str, tables: list[Borough], pinned: bool, rules_folder: Path) -> tuple[Path, int | None]:
    """The line to point at: the pin, when the address has one, else where the address is first listed."""
    if pinned:
        pinning = next((b for b in tables if address in dict(b.pins)), tables[0])
        return rules_folder / "boroughs.toml", pinning.pins_line
    first = tables[0]
    return rules_folder / ("routing.toml" if first.code == OUTSIDE else "boroughs.toml"), first.line


def table_label(borough: Borough) -> str:
    return "outside_recipient" if borough.code == OUTSIDE else f"[{borough.code}] {borough.name}"


def _signing_keys(rules: Rules, keys: list[PublicKey], providers_file: Path, now: float) -> list[Problem]:
    known = {k.fingerprint: k for k in keys}
    problems: list[Problem] = []
    for provider in rules.providers.values():
        for fingerprint in provider.signing_keys:
            key = known.get(fingerprint)
            where = f"provider {provider.ukprn}: signing key {fingerprint}"
            if key is None:
                problems.append(Problem(providers_file, provider.line, f"{where} is not in keys/"))
            elif key.why_not in ("expired", "revoked", "invalid"):
                problems.append(Problem(providers_file, provider.line, f"{where} {key.trouble()}: its signatures no longer count; ask {provider.name} for its current key"))
            elif _expires_soon(key, now):
                problems.append(Advisory(providers_file, provider.line, f"warning: {where} expires on {key.expires_on:%Y-%m-%d}; ask {provider.name} for its renewed key"))
    return problems


def _expires_soon(key: PublicKey, now: float) -> bool:
    return key.expires_within(EXPIRY_WARNING_DAYS * 86400, now)


def _unset_secrets(settings: Config) -> list[Problem]:
    variables = [(settings.mailbox.password_env, "mailbox password")] if settings.mailbox.auth == "password" else []
    if settings.smtp.password_env and settings.smtp.auth == "password":
        variables.append((settings.smtp.password_env, "SMTP password"))
    variables += [(section.client_secret_env, f"{name} client secret") for name, section in
                  (("mailbox", settings.mailbox), ("SMTP", settings.smtp)) if section.auth == "oauth2" and section.client_secret_env]
    # [gnupg] passphrase_env is judged by decrypting with the key (_own_key): a key without a passphrase needs none.
    return [
        Problem(settings.path, None, f"the {what} variable {variable} is not set in this environment (the daemon will need it)")
        for variable, what in variables if secret(variable) is None
    ]
