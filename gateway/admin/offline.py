"""`gateway validate FILE` and `gateway route FILE`: what the gateway would make of a return, worked out
offline with nothing sent: the findings a provider would get, and where each row would go."""

from __future__ import annotations

import hashlib
import os
import stat
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType

from .. import config as config_module

# Opened and read in a child with memory and time limits, as the daemon does: a file that aborts a
# native reader costs the command its answer, never a crash with a core dump of the decrypted file.
from .. import isolate
from .. import rules as rules_module
from ..delivery.receipt import FileFacts, report_lines
from ..errors import (
    ConfigError,
    KeyringError,
    NoUsableKey,
    PasswordMissing,
    ReadError,
    RulesError,
    UnpackError,
)
from ..intake.containers import MAX_FILE_BYTES, open_file
from ..intake.unpack import ENCRYPTED_SUFFIXES
from ..keys import Keyring
from ..ledger import Ledger
from ..reference.postcodes import Directory
from ..returns.examine import DUPLICATE_DAYS, duplicate_advice, examine
from ..returns.route import Batch, Routed
from ..returns.validate import Finding
from ..rules import LONDON, Borough, Provider, Rules, known_authorities


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

    def as_dict(self) -> dict[str, object]:
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
                  ask_password: Callable[[str], str] | None = None, password: str | None = None) -> Report:
    """`password` opens a protected workbook or zip (given with --password-file); else the provider's
    `password_env`; else `ask_password(prompt)` is asked.

    Reads config.toml and rules/ as `gateway run` does, stopping at the same errors. Only when there is
    no config.toml at all does it work without one (a plain file, the 33 London boroughs taken as served).
    """
    settings, rules, directory = _installation(Path(config_path))
    return _examine(path, config_path, settings, rules, directory, ukprn, ask_password, password).report


@dataclass(frozen=True)
class _Examined:
    report: Report
    provider: Provider  # the registered provider, or a stand-in named from the header block
    edition: str


def _examine(path: Path, config_path: Path, settings: config_module.Config | None, rules: Rules, directory: Directory,
             ukprn: str | None, ask_password: Callable[[str], str] | None, password: str | None) -> _Examined:
    """Decrypt and open the file, then examine it as the pipeline does (examine.py)."""
    registered = _registered(rules, ukprn, settings)
    data = _load(Path(path))
    signature = None
    if _encrypted(path, data):
        if settings is None:
            raise ConfigError(f"{path} is encrypted: decrypting it needs the gateway's keyring, named in {config_path}")
        keyring = Keyring(settings.gnupg.home, config_module.secret(settings.gnupg.passphrase_env))
        try:
            decrypted = keyring.decrypt(data)
        except KeyringError as error:
            raise ReadError(str(error), str(error)) from None
        data, signature = decrypted.data, decrypted.signature
    unknown = registered or Provider("unknown", "(not registered)", ())
    received = data
    try:
        data = _opened(path, data, registered, password, ask_password)
    except UnpackError as error:
        return _Examined(_refused(error.advice), unknown, directory.edition)
    facts = FileFacts("(offline check)", datetime.now(UTC), 1, 1, len(data), hashlib.sha256(data).hexdigest()[:12])
    examined = examine(data, registered, rules, directory, signature=signature,
                       duplicate=_duplicate_check(settings, hashlib.sha256(received).hexdigest()),
                       progress=_progress)
    table = examined.table
    if examined.refusal is not None and not examined.findings:
        return _Examined(_refused(examined.refusal), examined.provider or unknown, directory.edition)
    number = ukprn or (table.header.get("provider_number", "") if table is not None else "")
    provider = examined.provider or Provider(number or "unknown", (table.header.get("provider_name", "") if table else "")
                                             or "(not registered)", ())
    findings = examined.findings
    lines = report_lines(facts, provider, examined.rows_read, list(findings), examined.routed, directory.edition,
                         left_out=table.other_headings() if table is not None else ())
    return _Examined(Report(examined.rows_read, findings, examined.routed, tuple(lines)), provider, directory.edition)


def _duplicate_check(settings: config_module.Config | None, sha256: str) -> Callable[[Provider], str | None] | None:
    """The mailbox's duplicate check, against the installation's ledger when there is one (never created here)."""
    if settings is None or not Path(settings.paths.database).is_file():
        return None
    ledger = Ledger(settings.paths.database)
    return lambda provider: duplicate_advice(ledger.earlier_file(provider.ukprn, sha256, DUPLICATE_DAYS, "(offline check)"))


@dataclass(frozen=True)
class Package:
    """One package `gateway run` would send: one borough's rows, for one of its recipients."""

    recipient: str
    borough: Borough
    reasons: tuple[tuple[str, int], ...]  # (reason, rows), in the order Leaver, Joiner, At risk
    key: str | None  # the fingerprint it would be encrypted to
    held: str | None  # or why it would be held instead
    row_numbers: tuple[int, ...] = ()  # the rows it holds, as numbered in the provider's sheet

    @property
    def rows(self) -> int:
        return sum(count for _, count in self.reasons)


@dataclass(frozen=True)
class RouteReport:
    """`gateway route FILE`: where each row of a return would go, and why any would not. Row numbers, never values."""

    provider: Provider
    edition: str
    rows_read: int
    rows_forwarded: int  # including rows whose every package would be held
    rows_held: int  # rows of boroughs none of whose recipients has a usable key
    packages: tuple[Package, ...]
    not_forwarded: tuple[Finding, ...]  # F and E findings: why a row (or the file) would not be forwarded
    notes: tuple[Finding, ...]  # a row forwarded somewhere other than its home borough (_ROUTING_NOTES)
    warnings: int  # other W findings, which `gateway validate` lists

    @property
    def complete(self) -> bool:
        """Every row would be forwarded and every package sent."""
        return not self.not_forwarded and not any(p.held for p in self.packages)

    def recipients(self) -> dict[str, tuple[Package, ...]]:
        found: dict[str, list[Package]] = {}
        for package in self.packages:
            found.setdefault(package.recipient, []).append(package)
        return {address: tuple(found[address]) for address in sorted(found)}

    def text(self) -> str:
        refused = [f for f in self.not_forwarded if f.severity == "F"]
        lines = [
            "Where the rows of this return would go (a dry run: nothing has been sent)",
            f"Provider: {self.provider.name} (UKPRN {self.provider.ukprn})",
            f"Postcode directory used: {self.edition}",
            "",
        ]
        if refused:
            return "\n".join(lines + ["This file would be refused, so nothing in it would be forwarded:", *(f"  {f.message}" for f in refused)])
        lines += [
            f"Rows read:                        {self.rows_read}",
            f"Rows that would be forwarded:     {self.rows_forwarded}"
            + (f" ({self.rows_held} of them held until a recipient's key is put right)" if self.rows_held else ""),
            f"Rows that would not be forwarded: {len({f.row for f in self.not_forwarded})}",
        ]
        if self.packages:
            lines += ["", "Recipients (each gets one package per borough it receives for)"]
            for address, packages in self.recipients().items():
                lines.append(f"  {address}: {_counted(_reason_totals(packages))}{_in_packages(packages)}")
                for package in packages:
                    lines.append(f"      {package.borough.name} ({package.borough.code}): {_counted(package.reasons)}, {_fate(package)}")
                    lines.append(f"          {'rows' if package.rows > 1 else 'row'} {_ranges(package.row_numbers)}")
        if self.not_forwarded:
            lines += ["", "Rows that would not be forwarded, and why", *map(_finding_line, self.not_forwarded)]
        if self.notes:
            lines += ["", "Rows that would go somewhere other than their home borough", *map(_finding_line, self.notes)]
        if self.warnings:
            lines += ["", f"Also {self.warnings} warning(s) about the rows' contents; `gateway validate` lists them."]
        return "\n".join(lines)

    def as_dict(self) -> dict[str, object]:
        return {
            "provider": {"ukprn": self.provider.ukprn, "name": self.provider.name},
            "rows_read": self.rows_read,
            "rows_forwarded": self.rows_forwarded,
            "rows_held": self.rows_held,
            "rows_not_forwarded": len({f.row for f in self.not_forwarded}),
            "recipients": {
                address: {
                    "rows": sum(p.rows for p in packages),
                    "reasons": dict(_reason_totals(packages)),
                    "packages": [
                        {"borough": p.borough.code, "name": p.borough.name, "rows": p.rows, "reasons": dict(p.reasons),
                         "key": p.key, "held": p.held, "row_numbers": list(p.row_numbers)}
                        for p in packages
                    ],
                }
                for address, packages in self.recipients().items()
            },
            "not_forwarded": [_finding_dict(f) for f in self.not_forwarded],
            "notes": [_finding_dict(f) for f in self.notes],
            "warnings": self.warnings,
        }


def route_file(path: Path, config_path: Path, provider: str | None = None,
               ask_password: Callable[[str], str] | None = None, password: str | None = None) -> RouteReport:
    """Where each row of the return at `path` would go under the installation's rules and keys; nothing is sent.

    `provider` is the UKPRN the file is from (default: its header block's). Unlike validate_file, this needs a
    good config.toml and rules/: ConfigError or RulesError says what is wrong with them.
    """
    settings, rules, directory = _installation(Path(config_path), required=True)
    assert settings is not None
    examined = _examine(path, config_path, settings, rules, directory, provider, ask_password, password)
    report = examined.report
    routed = report.routed or Routed((), ())
    placed = {item.row.number for batch in routed.batches for item in batch.rows}
    routing_notes = tuple(f for f in report.findings if f.severity == "W" and f.rule in _ROUTING_NOTES and f.row in placed)
    packages = _packages(routed.batches, settings, rules)
    sent_to = {p.borough.code for p in packages if p.key}
    return RouteReport(
        provider=examined.provider,
        edition=examined.edition,
        rows_read=report.rows_read,
        rows_forwarded=routed.forwarded,
        rows_held=sum(len(batch.rows) for batch in routed.batches if batch.borough.code not in sent_to),
        packages=packages,
        not_forwarded=tuple(f for f in report.findings if f.severity in ("F", "E")),
        notes=routing_notes,
        warnings=sum(1 for f in report.findings if f.severity == "W") - len(routing_notes),
    )


def _packages(batches: tuple[Batch, ...], settings: config_module.Config, rules: Rules) -> tuple[Package, ...]:
    """A package per borough and recipient, with the key each would be encrypted to, as `gateway run` chooses it."""
    keyring = Keyring(settings.gnupg.home, config_module.secret(settings.gnupg.passphrase_env), pins=rules.pins())
    keyring.import_folder(settings.paths.keys)  # problems with key files are `gateway check`'s to report
    keys = keyring.public_keys()
    packages = []
    for batch in batches:
        counts = batch.by_reason()
        reasons = tuple((r, counts[r]) for r in _REASON_ORDER if r in counts)
        numbers = tuple(item.row.number for item in batch.rows)
        for recipient in batch.borough.recipients:
            try:
                packages.append(Package(recipient, batch.borough, reasons, keyring.key_for(recipient, keys), None, numbers))
            except NoUsableKey as why:
                packages.append(Package(recipient, batch.borough, reasons, None, str(why), numbers))
    return tuple(packages)


_REASON_ORDER = ("Leaver", "Joiner", "At risk")
# Notes on a forwarded row that say it went somewhere other than its home authority: to the outside
# recipient, or (its postcode missing, malformed or unknown) to the provider's own authority.
_ROUTING_NOTES = frozenset({"Route_03", "Postcode_01", "Postcode_02", "Postcode_15"})  # as packages and receipts list them


def _reason_totals(packages: tuple[Package, ...]) -> tuple[tuple[str, int], ...]:
    totals: dict[str, int] = {}
    for package in packages:
        for reason, count in package.reasons:
            totals[reason] = totals.get(reason, 0) + count
    return tuple((r, totals[r]) for r in _REASON_ORDER if r in totals)


def _counted(reasons: tuple[tuple[str, int], ...]) -> str:
    rows = sum(count for _, count in reasons)
    return f"{rows} row{'s' if rows != 1 else ''} ({', '.join(f'{reason} {count}' for reason, count in reasons)})"


def _in_packages(packages: tuple[Package, ...]) -> str:
    return f" in {len(packages)} packages" if len(packages) > 1 else ""


def _ranges(numbers: tuple[int, ...]) -> str:
    """Row numbers, runs shortened: 9-11, 15."""
    runs: list[list[int]] = []
    for number in sorted(numbers):
        if runs and number == runs[-1][-1] + 1:
            runs[-1].append(number)
        else:
            runs.append([number])
    return ", ".join(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]) for run in runs)


def _fate(package: Package) -> str:
    return f"encrypted to key {package.key}" if package.key else f"HELD, not sent: {package.held}"


def _finding_line(f: Finding) -> str:
    row = f"row {f.row}" if f.row else "file"
    return f"  {row:<9} {f.rule:<15} {f.message}"


def _finding_dict(f: Finding) -> dict[str, object]:
    return {"severity": f.severity, "row": f.row, "column": f.column, "rule": f.rule, "message": f.message}




def _progress(done: int, total: int) -> None:
    print(f"checked {done:,} of {total:,} rows", file=sys.stderr, flush=True)


def _refused(advice: str) -> Report:
    """The whole file cannot be used: one F finding, as the rejection receipt would say."""
    return Report(0, (Finding("F", None, "", "File_01", advice),), None, (f"F  {advice}",))


def _opened(path: Path, data: bytes, provider: Provider | None, password: str | None,
            ask_password: Callable[[str], str] | None) -> bytes:
    """The file opened; a protected one with the password given, else the provider's `password_env` (as the
    mailbox opens it), else the one `ask_password` gets."""
    try:
        return isolate.run(open_file, path.name.lower(), data, None).data
    except PasswordMissing:
        given = password or (config_module.secret(provider.password_env or "") if provider is not None else None)
        if given is None and ask_password is None:
            raise
    if not given and ask_password is not None:
        given = ask_password(f"Password for {path.name}: ")
    return isolate.run(open_file, path.name.lower(), data, given).data


def _load(path: Path) -> bytes:
    """The file's bytes, if it is a regular file within the size the gateway accepts by mail."""
    try:
        with open(path, "rb") as stream:
            facts = os.fstat(stream.fileno())
            if not stat.S_ISREG(facts.st_mode):
                raise ReadError(f"{path} is not a regular file: give the path of a return (.xlsx, .csv, ...)", "")
            data = stream.read(MAX_FILE_BYTES + 1)
    except IsADirectoryError:
        raise ReadError(f"{path} is a folder: give the path of a return (.xlsx, .csv, ...)", "") from None
    except FileNotFoundError:
        raise ReadError(f"{path}: no such file: check the path, or give the return's own path", "") from None
    except OSError as error:
        raise ReadError(f"{path} cannot be read: {error.strerror}", "") from None
    if len(data) > MAX_FILE_BYTES:
        raise ReadError(f"{path} is over {MAX_FILE_BYTES // (1024 * 1024)} MB, the most the gateway accepts in one "
                        "attachment: split the return into parts under that size", "")
    return data


def _installation(config_path: Path, required: bool = False) -> tuple[config_module.Config | None, Rules, Directory]:
    """config.toml and rules/, read as `gateway run` reads them (the same errors stop both). With no
    config.toml at all, and unless `required`, the 33 London boroughs are taken as served, and that is said."""
    if not required and not config_path.exists():
        directory = Directory()
        print(f"gateway: no {config_path}, so no installation's rules: checking against the 33 London boroughs "
              "with no provider registered (`gateway init` makes an installation; --config names yours)",
              file=sys.stderr, flush=True)
        boroughs = {code: Borough(code, name, ()) for code, name in LONDON.items()}
        return None, Rules(MappingProxyType(boroughs), MappingProxyType({})), directory
    settings = config_module.load(config_path)
    directory = Directory(cache_root=settings.paths.database.parent / "cache")
    return settings, rules_module.load(settings.paths.rules, known_authorities(directory)), directory


def _registered(rules: Rules, ukprn: str | None, settings: config_module.Config | None) -> Provider | None:
    """The provider --provider names: registered in rules/providers.toml, or (no installation) a stand-in."""
    if ukprn is None:
        return None
    if ukprn in rules.providers:
        return rules.providers[ukprn]
    if settings is None:
        return Provider(ukprn, "(not registered)", ())
    raise RulesError(f"--provider {ukprn}: no provider with that UKPRN is in {settings.paths.rules / 'providers.toml'}: "
                     "add its table there, or leave out --provider to take the UKPRN from the file's header block")


def _encrypted(path: Path, data: bytes) -> bool:
    return path.suffix.lower() in ENCRYPTED_SUFFIXES or data.lstrip().startswith(b"-----BEGIN PGP MESSAGE-----")
