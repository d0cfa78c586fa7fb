"""config.toml -> frozen dataclasses; paths made absolute, secrets read from the environment."""

from __future__ import annotations

import os
import ssl
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from .errors import ConfigError, Problem, TomlError
from .tomlfile import TomlFile

SECURITY = ("ssl", "starttls", "none")

# [schedule] hour, months and days are London time (jobs, digests, the monthly report). The zone database
# comes from the system or the tzdata package (a dependency): never a silent fall back to UTC, which would
# move the end of every month and the hour of every digest.
LOCAL = ZoneInfo("Europe/London")


@dataclass(frozen=True, kw_only=True)
class SignIn:
    """How the gateway signs in to [mailbox] and to [smtp]: "password" (password_env), or "oauth2" (Microsoft 365,
    Google Workspace; gateway/signin.py): a token from token_url for client_id with client_secret_env or
    client_certificate (a PEM file holding the certificate and its key), or from a Google service_account_file
    (its JSON key), for `scope`."""

    auth: str = "password"
    token_url: str = ""
    client_id: str = ""
    client_secret_env: str = ""
    client_certificate: Path | None = None
    scope: str = ""
    service_account_file: Path | None = None


@dataclass(frozen=True)
class Mailbox(SignIn):
    host: str
    port: int = 993
    security: str = "ssl"
    user: str = ""
    password_env: str = "GATEWAY_IMAP_PASSWORD"
    folder: str = "INBOX"
    processed_folder: str = "Processed"
    quarantine_folder: str = "Quarantine"
    timeout: float = 60.0
    ca_file: Path | None = None  # trust this CA certificate (a private CA) instead of the system's


@dataclass(frozen=True)
class Smtp(SignIn):
    host: str
    port: int = 587
    security: str = "starttls"
    from_address: str = ""
    user: str = ""
    password_env: str = ""
    timeout: float = 60.0  # seconds for each step of the conversation: a relay that hangs is given up on
    ca_file: Path | None = None
    # A message the relay defers (4xx, no answer, dropped connection) is tried again after about
    # retry_first_minutes, doubling up to retry_max_minutes, for retry_for_hours after it was queued;
    # then it is set aside and the administrator told.
    retry_for_hours: float = 48.0
    retry_first_minutes: float = 5.0
    retry_max_minutes: float = 60.0
    # Envelope sender <local>+<message id>@<domain> (VERP), so a bounce names the message it is about
    # even when it quotes nothing of it. Needs the mailbox to take plus-addresses; without it bounces
    # are matched by the Message-ID they quote.
    verp: bool = False


@dataclass(frozen=True)
class Gnupg:
    home: Path
    passphrase_env: str = ""


@dataclass(frozen=True)
class Paths:
    rules: Path
    keys: Path
    outbox: Path
    database: Path


@dataclass(frozen=True)
class Admin:
    email: str
    # Answer mail from unregistered addresses? Off by default: their From is often forged, and a
    # reply would then land on an innocent third party (backscatter).
    reply_to_unknown_senders: bool = False


@dataclass(frozen=True)
class Schedule:
    """[schedule], optional: when the daemon's periodic jobs run (London time) and how long the ledger keeps details."""

    hour: int = 7  # the hour (London time) at which the daily and monthly jobs run
    reminder_day: int = 5  # providers without an accepted return this month are reminded from this day
    due_day: int = 10  # the day of the month returns are due (said in reminders and the monthly report)
    report_day: int = 1  # the monitoring report for the month before is emailed to the administrator on this day
    retention_days: int = 400  # ledger details and set-aside copies older than this are purged; counts are kept
    heartbeat_minutes: int = 30  # alert when no mailbox check has succeeded for this long


@dataclass(frozen=True)
class Config:
    path: Path
    mailbox: Mailbox
    smtp: Smtp
    gnupg: Gnupg
    paths: Paths
    admin: Admin
    schedule: Schedule = Schedule()


# Said when --config names no file: where it looked is the Problem's file; how to make one, or name the right one.
NO_CONFIG = ("not found: make an installation with `gateway init DIR` and run from DIR, "
             "or name your config.toml with `gateway --config PATH ...`")

_SECTIONS = {"mailbox": Mailbox, "smtp": Smtp, "gnupg": Gnupg, "paths": Paths, "admin": Admin, "schedule": Schedule}
_OPTIONAL = ("gnupg", "paths", "schedule")  # sections that may be left out: every key has a default
# Whole numbers with a range; days of the month stop at 28 so that every month has the day.
_RANGES = {
    ("schedule", "hour"): (0, 23, "an hour of the day, 0 to 23 (London time)"),
    ("schedule", "reminder_day"): (1, 28, "a day of the month, 1 to 28"),
    ("schedule", "due_day"): (1, 28, "a day of the month, 1 to 28"),
    ("schedule", "report_day"): (1, 28, "a day of the month, 1 to 28"),
    # Not below the 90 days within which the same file is recognised as sent before (examine.DUPLICATE_DAYS).
    ("schedule", "retention_days"): (90, 100 * 366, "a number of days, at least 90"),
    ("schedule", "heartbeat_minutes"): (1, 7 * 24 * 60, "a number of minutes above 0"),
}
_PATH_KEYS = {("mailbox", "ca_file"), ("smtp", "ca_file"), ("mailbox", "client_certificate"), ("smtp", "client_certificate"),
              ("mailbox", "service_account_file"), ("smtp", "service_account_file"), ("gnupg", "home"), ("paths", "rules"), ("paths", "keys"), ("paths", "outbox"), ("paths", "database")}
_DEFAULT_PATHS = {"rules": "rules", "keys": "keys", "outbox": "outbox", "database": "var/gateway.db"}


def load(path: Path) -> Config:
    """Read and check config.toml; raise ConfigError listing every problem, each with its line."""
    config, problems = _build(Path(path))
    if problems:
        raise ConfigError("\n".join(str(problem) for problem in problems))
    assert config is not None
    return config


def check(path: Path) -> tuple[Config | None, list[Problem]]:
    """Like load, but return the problems instead of raising (for `gateway check`)."""
    return _build(Path(path))


def tls_context(ca_file: Path | None) -> ssl.SSLContext:
    """Certificate-checking TLS, trusting `ca_file` when the servers use a private CA."""
    return ssl.create_default_context(cafile=str(ca_file) if ca_file else None)


def secret(variable: str) -> str | None:
    """The value of the environment variable an administrator named for a secret, if set."""
    if not variable:
        return None
    return os.environ.get(variable)


def _build(path: Path) -> tuple[Config | None, list[Problem]]:
    path = path.absolute()
    try:
        toml = TomlFile.load(path)
    except TomlError as error:
        if not path.exists():
            return None, [Problem(path, None, NO_CONFIG)]
        return None, [error.problem]
    base = path.parent
    problems = toml.unknown_keys(None, toml.data, set(_SECTIONS))
    sections = {}
    for name, cls in _SECTIONS.items():
        table = toml.data.get(name, {} if name in _OPTIONAL else None)
        if table is None:
            problems.append(toml.problem(f"the [{name}] section is missing"))
            continue
        if not isinstance(table, dict):
            problems.append(toml.problem(f"'{name}' must be a [{name}] section", None, name))
            continue
        known = {field.name for field in fields(cls)}
        problems += toml.unknown_keys(name, table, known)
        values = {key: value for key, value in table.items() if key in known}
        if name == "paths":
            values = {**_DEFAULT_PATHS, **values}
        if name == "gnupg":
            values.setdefault("home", "var/gnupg")
        for field in fields(cls):
            if field.name not in values:
                continue
            value = values[field.name]
            if (name, field.name) in _PATH_KEYS:
                if not isinstance(value, str):
                    problems.append(toml.problem(f"{field.name} must be a path in quotes", name, field.name))
                    continue
                values[field.name] = (base / value).resolve()
            elif field.type == "int" and not (isinstance(value, int) and not isinstance(value, bool)):
                problems.append(toml.problem(f"{field.name} must be a whole number", name, field.name))
            elif (name, field.name) in _RANGES and not _RANGES[name, field.name][0] <= value <= _RANGES[name, field.name][1]:
                problems.append(toml.problem(f"{field.name} must be {_RANGES[name, field.name][2]}", name, field.name))
            elif field.type == "float" and (not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0):
                # Every number of this kind is a duration: its unit ends its name, seconds when none does.
                unit = field.name.rpartition("_")[2] if field.name.endswith(("_hours", "_minutes")) else "seconds"
                problems.append(toml.problem(f"{field.name} must be a number of {unit} above 0", name, field.name))
            elif field.type == "bool" and not isinstance(value, bool):
                problems.append(toml.problem(f"{field.name} must be true or false", name, field.name))
            elif field.type == "str" and not isinstance(value, str):
                problems.append(toml.problem(f"{field.name} must be text in quotes", name, field.name))
        missing = [f.name for f in fields(cls) if f.default is MISSING and f.name not in values]
        for key in missing:
            problems.append(toml.problem(f"[{name}] needs '{key}'", name))
        if "security" in values and values["security"] not in SECURITY:
            problems.append(
                toml.problem(f"security must be one of {', '.join(SECURITY)}", name, "security")
            )
        if name in ("mailbox", "smtp"):
            problems += _signin_problems(toml, name, values)
        if not missing:
            try:
                sections[name] = cls(**values)
            except TypeError:
                problems.append(toml.problem(f"[{name}] cannot be read", name))
    if problems or len(sections) != len(_SECTIONS):
        return None, problems
    config = Config(path=path, **sections)
    if not config.smtp.from_address:
        problems.append(toml.problem("[smtp] needs 'from_address', the address receipts come from", "smtp"))
    if "@" not in config.admin.email:
        problems.append(toml.problem("[admin] email must be an email address", "admin", "email"))
    return (None if problems else config), problems


AUTH = ("password", "oauth2")
_OAUTH2_KEYS = ("token_url", "client_id", "client_secret_env", "client_certificate", "scope", "service_account_file")
_CREDENTIALS = ("client_secret_env", "client_certificate", "service_account_file")


def _signin_problems(toml: TomlFile, name: str, values: dict[str, Any]) -> list[Problem]:
    """[mailbox] or [smtp] auth and its OAuth2 keys, consistent with each other (files must exist)."""
    auth = values.get("auth", "password")
    if auth not in AUTH:
        return [toml.problem('auth must be "password" or "oauth2"', name, "auth")]
    if auth == "password":
        return [toml.problem(f'{key} is used only with auth = "oauth2"', name, key) for key in _OAUTH2_KEYS if key in values]
    problems = []
    given = [key for key in _CREDENTIALS if values.get(key)]
    if len(given) != 1:
        problems.append(toml.problem('auth = "oauth2" needs exactly one of client_secret_env, client_certificate '
                                     f"or service_account_file{f' (not {len(given)})' if given else ''}", name, "auth"))
    needed = ["scope", "user"] + ([] if "service_account_file" in given else ["token_url", "client_id"])
    for key in needed:
        if not values.get(key):
            problems.append(toml.problem(f'auth = "oauth2" needs \'{key}\'', name, "auth"))
    url = values.get("token_url")
    if isinstance(url, str) and url and not _secure_url(url):
        problems.append(toml.problem("token_url must be an https:// address", name, "token_url"))
    for key in ("client_certificate", "service_account_file"):
        path = values.get(key)
        if isinstance(path, Path) and not path.is_file():
            problems.append(toml.problem(f"{key}: no such file {path}", name, key))
    return problems


def _secure_url(url: str) -> bool:
    """https, or plain http to this machine only (a token service on the loopback, as in the tests)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return bool(parts.netloc) and (parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost", "::1")))
