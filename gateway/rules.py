"""Read rules/boroughs.toml and rules/providers.toml into typed objects; each problem names file and line."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Callable, Mapping

from .errors import RulesError
from .tomlfile import Problem, TomlError, TomlFile

LONDON = MappingProxyType({
    "E09000001": "City of London", "E09000002": "Barking and Dagenham", "E09000003": "Barnet",
    "E09000004": "Bexley", "E09000005": "Brent", "E09000006": "Bromley", "E09000007": "Camden",
    "E09000008": "Croydon", "E09000009": "Ealing", "E09000010": "Enfield", "E09000011": "Greenwich",
    "E09000012": "Hackney", "E09000013": "Hammersmith and Fulham", "E09000014": "Haringey",
    "E09000015": "Harrow", "E09000016": "Havering", "E09000017": "Hillingdon", "E09000018": "Hounslow",
    "E09000019": "Islington", "E09000020": "Kensington and Chelsea", "E09000021": "Kingston upon Thames",
    "E09000022": "Lambeth", "E09000023": "Lewisham", "E09000024": "Merton", "E09000025": "Newham",
    "E09000026": "Redbridge", "E09000027": "Richmond upon Thames", "E09000028": "Southwark",
    "E09000029": "Sutton", "E09000030": "Tower Hamlets", "E09000031": "Waltham Forest",
    "E09000032": "Wandsworth", "E09000033": "Westminster",
})

FORMATS = ("xlsx", "csv")
_AUTHORITY_CODE = re.compile(r"^[ENSW]\d{8}$")
_UKPRN = re.compile(r"^1\d{7}$|^[2-9]\d{7}$")
_ADDRESS = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_DOMAIN = re.compile(r"^@[^@\s]+\.[^@\s]+$")

_BOROUGH_KEYS = {"name", "recipients", "format"}
_PROVIDER_KEYS = {"name", "senders", "host_la", "password_env", "signing_keys", "require_signature"}


@dataclass(frozen=True)
class Borough:
    code: str
    name: str
    recipients: tuple[str, ...]
    format: str = "xlsx"
    line: int | None = field(default=None, compare=False)  # of its recipients, for problems about them


@dataclass(frozen=True)
class Provider:
    ukprn: str
    name: str
    senders: tuple[str, ...]
    host_la: str | None = None
    password_env: str | None = None
    signing_keys: tuple[str, ...] = ()
    require_signature: bool = False
    line: int | None = field(default=None, compare=False)

    def sends_from(self, address: str) -> bool:
        address = address.strip().lower()
        domain = "@" + address.rpartition("@")[2]
        return any(s == address or s == domain for s in self.senders)


@dataclass(frozen=True)
class Rules:
    boroughs: Mapping[str, Borough]
    providers: Mapping[str, Provider]
    files: tuple[Path, ...] = field(default=())

    def provider_for_sender(self, address: str) -> Provider | None:
        """The provider that registered this exact From address, else the one that registered its @domain."""
        address = address.strip().lower()
        exact = [p for p in self.providers.values() if address in p.senders]
        matches = exact or [p for p in self.providers.values() if p.sends_from(address)]
        return matches[0] if len(matches) == 1 else None

    def recipients(self) -> set[str]:
        return {r for borough in self.boroughs.values() for r in borough.recipients}


def load(directory: Path, known_authority: Callable[[str], bool] | None = None) -> Rules:
    """Read the rule files; raise RulesError listing every problem."""
    rules, problems = check(directory, known_authority)
    if problems:
        raise RulesError("\n".join(str(p) for p in problems))
    return rules


def check(directory: Path, known_authority: Callable[[str], bool] | None = None) -> tuple[Rules, list[Problem]]:
    """Read the rule files and return every entry that could be read, with every problem found."""
    known = known_authority or (lambda code: code in LONDON)
    problems: list[Problem] = []
    files = []
    boroughs: dict[str, Borough] = {}
    providers: dict[str, Provider] = {}
    for name, reader, into in (
        ("boroughs.toml", _boroughs, boroughs),
        ("providers.toml", _providers, providers),
    ):
        path = Path(directory) / name
        files.append(path)
        try:
            toml = TomlFile.load(path)
        except TomlError as error:
            problems.append(error.problem)
            continue
        into.update(reader(toml, known, problems))
    for provider in providers.values():
        if provider.host_la and provider.host_la not in boroughs and not known(provider.host_la):
            problems.append(Problem(files[1], provider.line, f"provider {provider.ukprn}: host_la '{provider.host_la}' is not a known local authority code"))
    _claimed_twice(providers, files[1], problems)
    rules = Rules(MappingProxyType(boroughs), MappingProxyType(providers), tuple(files))
    return rules, problems


def _boroughs(toml: TomlFile, known: Callable[[str], bool], problems: list[Problem]) -> dict[str, Borough]:
    found = {}
    for code, table in toml.data.items():
        if not isinstance(table, dict):
            problems.append(toml.problem(f"'{code}' must be a table: [{code}] followed by its keys", None, code))
            continue
        if not _AUTHORITY_CODE.match(code) or not known(code):
            hint = " (London boroughs are E09000001 to E09000033)" if code.startswith("E09") else ""
            problems.append(toml.problem(f"[{code}] is not a known local authority code{hint}", code))
            continue
        problems += toml.unknown_keys(code, table, _BOROUGH_KEYS)
        name = table.get("name") or LONDON.get(code, "")
        if not isinstance(name, str) or not name:
            problems.append(toml.problem(f"[{code}] needs a name", code))
        recipients = table.get("recipients", [])
        if not isinstance(recipients, list) or not recipients:
            problems.append(toml.problem(f"[{code}] needs recipients = [\"address@...\"], at least one", code))
            recipients = []
        clean = []
        for recipient in recipients:
            if not isinstance(recipient, str) or not _ADDRESS.match(recipient.strip()):
                problems.append(toml.problem(f"[{code}] recipient {recipient!r} is not an email address", code, "recipients"))
            else:
                clean.append(recipient.strip().lower())
        fmt = table.get("format", "xlsx")
        if fmt not in FORMATS:
            problems.append(toml.problem(f"[{code}] format must be \"xlsx\" or \"csv\", not {fmt!r}", code, "format"))
        line = toml.line(code, "recipients") or toml.line(code)
        found[code] = Borough(code, str(name), tuple(clean), fmt if fmt in FORMATS else "xlsx", line)
    return found


def _providers(toml: TomlFile, known: Callable[[str], bool], problems: list[Problem]) -> dict[str, Provider]:
    found = {}
    for ukprn, table in toml.data.items():
        if not isinstance(table, dict):
            problems.append(toml.problem(f"'{ukprn}' must be a table: [{ukprn}] followed by its keys", None, ukprn))
            continue
        if not _UKPRN.match(ukprn):
            problems.append(toml.problem(f"[{ukprn}] is not a UKPRN: a provider is keyed by its 8-digit UK provider reference number", ukprn))
            continue
        problems += toml.unknown_keys(ukprn, table, _PROVIDER_KEYS)
        name = table.get("name", "")
        if not isinstance(name, str) or not name.strip():
            problems.append(toml.problem(f"provider {ukprn} needs a name", ukprn))
        senders = table.get("senders", [])
        if not isinstance(senders, list) or not senders:
            problems.append(toml.problem(f"provider {ukprn} has no senders: add senders = [\"address@...\"] (or \"@domain\") so its returns are accepted", ukprn))
            senders = []
        clean = []
        for sender in senders:
            if not isinstance(sender, str) or not (_ADDRESS.match(sender.strip()) or _DOMAIN.match(sender.strip())):
                problems.append(toml.problem(f"provider {ukprn}: sender {sender!r} is not an address or @domain", ukprn, "senders"))
            else:
                clean.append(sender.strip().lower())
        host_la = table.get("host_la")
        if host_la is not None and (not isinstance(host_la, str) or not _AUTHORITY_CODE.match(host_la)):
            problems.append(toml.problem(f"provider {ukprn}: host_la must be an authority code such as E09000019", ukprn, "host_la"))
            host_la = None
        signing = table.get("signing_keys", [])
        if not isinstance(signing, list) or not all(isinstance(s, str) for s in signing):
            problems.append(toml.problem(f"provider {ukprn}: signing_keys must be a list of fingerprints", ukprn, "signing_keys"))
            signing = []
        require = table.get("require_signature", False)
        if not isinstance(require, bool):
            problems.append(toml.problem(f"provider {ukprn}: require_signature must be true or false", ukprn, "require_signature"))
            require = False
        password_env = table.get("password_env")
        if password_env is not None and not isinstance(password_env, str):
            problems.append(toml.problem(f"provider {ukprn}: password_env must be the name of an environment variable", ukprn, "password_env"))
            password_env = None
        found[ukprn] = Provider(
            ukprn=ukprn,
            name=str(name).strip(),
            senders=tuple(clean),
            host_la=host_la,
            password_env=password_env,
            signing_keys=tuple(s.replace(" ", "").upper() for s in signing),
            require_signature=require,
            line=toml.line(ukprn),
        )
    return found


def _claimed_twice(providers: dict[str, Provider], path: Path, problems: list[Problem]) -> None:
    owner: dict[str, str] = {}
    for provider in providers.values():
        for sender in provider.senders:
            if sender in owner and owner[sender] != provider.ukprn:
                problems.append(Problem(path, provider.line, f"sender {sender} is claimed by providers {owner[sender]} and {provider.ukprn}: each address may belong to one provider"))
            owner[sender] = provider.ukprn
