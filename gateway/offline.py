"""`gateway validate FILE`: the findings a provider would get, worked out offline, nothing sent."""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import MappingProxyType
from typing import Callable

from . import config as config_module
from . import rules as rules_module
from .containers import open_file
from .errors import ConfigError, KeyringError, ReadError, RulesError, UnpackError
from .keys import Keyring
from .postcodes import Directory
from .read import read_return
from .receipt import FileFacts, report_lines
from .route import Routed, route
from .rules import LONDON, Borough, Provider, Rules
from .unpack import ENCRYPTED_SUFFIXES
from .validate import Finding, sort_findings, validate


@dataclass(frozen=True)
class Report:
    rows_read: int
    findings: tuple[Finding, ...]
    routed: Routed | None
    lines: tuple[str, ...]

    @property
    def blocking(self) -> bool:
        return any(f.severity in ("E", "F") for f in self.findings)

    def text(self) -> str:
        return "\n".join(self.lines)

    def as_dict(self) -> dict:
        return {
            "rows_read": self.rows_read,
            "rows_forwarded": self.routed.forwarded if self.routed else 0,
            "boroughs": {b.borough.name: len(b.rows) for b in self.routed.batches} if self.routed else {},
            "findings": [
                {"severity": f.severity, "row": f.row, "column": f.column, "rule": f.rule, "message": f.message}
                for f in self.findings
            ],
        }


def validate_file(path: Path, config_path: Path, ukprn: str | None = None,
                  ask_password: Callable[[str], str] | None = None) -> Report:
    """`ask_password(prompt)` is asked when the file is a password-protected workbook or zip."""
    data = Path(path).read_bytes()
    settings = _settings(config_path)
    directory = Directory()
    if _encrypted(path, data):
        if settings is None:
            raise ConfigError(f"{path} is encrypted: decrypting it needs the gateway's keyring, named in {config_path}")
        keyring = Keyring(settings.gnupg.home, config_module.secret(settings.gnupg.passphrase_env))
        try:
            data = keyring.decrypt(data).data
        except KeyringError as error:
            raise ReadError(str(error), str(error)) from None
    rules = _rules(settings)
    try:
        data = _opened(path, data, ask_password)
    except UnpackError as error:
        return _refused(error.advice)
    facts = FileFacts("(offline check)", datetime.now(timezone.utc), 1, 1, len(data), hashlib.sha256(data).hexdigest()[:12])
    try:
        table = read_return(data)
    except ReadError as error:
        return _refused(error.advice)
    number = ukprn or table.header.get("provider_number", "")
    provider = rules.providers.get(number) or Provider(number or "unknown", table.header.get("provider_name", "") or "(not registered)", ())
    checked = validate(table, rules.providers.get(number), progress=_progress if len(table.rows) > PROGRESS_ROWS else None)
    routed = route(table, checked.accepted, rules, directory) if not checked.fatal else Routed((), ())
    findings = tuple(sort_findings(list(checked.findings + routed.findings)))
    lines = report_lines(facts, provider, len(table.rows), list(findings), routed, directory.edition)
    return Report(len(table.rows), findings, routed, tuple(lines))


PROGRESS_ROWS = 3000


def _progress(done: int, total: int) -> None:
    print(f"checked {done:,} of {total:,} rows", file=sys.stderr, flush=True)


def _refused(advice: str) -> Report:
    """The whole file cannot be used: one F finding, as the rejection receipt would say."""
    return Report(0, (Finding("F", None, "", "File_01", advice),), None, (f"F  {advice}",))


def _opened(path: Path, data: bytes, ask_password: Callable[[str], str] | None) -> bytes:
    try:
        return open_file(path.name.lower(), data, None).data
    except UnpackError as error:
        if "no password" not in str(error) or ask_password is None:
            raise
    return open_file(path.name.lower(), data, ask_password(f"Password for {path.name}: ")).data


def _settings(path: Path) -> config_module.Config | None:
    try:
        return config_module.load(path)
    except ConfigError:
        return None


def _rules(settings: config_module.Config | None) -> Rules:
    if settings is not None:
        try:
            return rules_module.load(settings.paths.rules)
        except RulesError:
            pass
    # Without usable rules, take the 33 London boroughs as the ones served.
    boroughs = {code: Borough(code, name, ()) for code, name in LONDON.items()}
    return Rules(MappingProxyType(boroughs), MappingProxyType({}))


def _encrypted(path: Path, data: bytes) -> bool:
    return path.suffix.lower() in ENCRYPTED_SUFFIXES or data.lstrip().startswith(b"-----BEGIN PGP MESSAGE-----")
