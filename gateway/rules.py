"""Read rules/ (boroughs.toml, providers.toml, the optional routing.toml) into typed objects; each problem
names its file and line. rules/README.md documents every key."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from .errors import Problem, RulesError, TomlError
from .reference import authorities as authorities_module
from .reference.postcodes import Directory, is_valid, normalise
from .tomlfile import TomlFile

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
# When a borough's packages go: one per return as it arrives (the default), or one digest a day or a week
# holding every return received since the last (digest.py).
EACH, DAILY, WEEKLY = "each", "daily", "weekly"
DELIVERIES = (EACH, DAILY, WEEKLY)
REASONS = ("Joiner", "Leaver", "At risk")  # the three notifications; validate.py reads them from here
_REASON_WORDS = {**{reason.lower(): reason for reason in REASONS}, "at risk of dropping out": "At risk"}

# routing.toml: what happens to a row no borough in boroughs.toml takes.
REJECT, HOST_BOROUGH, RECIPIENT = "reject", "host_borough", "recipient"
UNPLACEABLE_CHOICES = (HOST_BOROUGH, REJECT)  # postcode missing, malformed or not in the ONS directory; the first is the default
OUTSIDE_CHOICES = (REJECT, RECIPIENT)  # home authority not in boroughs.toml
OUTSIDE = "OUTSIDE"  # the code of the pseudo-borough that stands for outside_recipient
OUTSIDE_NAME = "Other local authorities"

_AUTHORITY_CODE = re.compile(r"^[ENSW]\d{8}$")
UKPRN = re.compile(r"^1\d{7}$|^[2-9]\d{7}$")  # 8 digits, 10000000-99999999
_ADDRESS = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_DOMAIN = re.compile(r"^@[^@\s]+\.[^@\s]+$")
_FINGERPRINT = re.compile(r"^(?:[0-9A-F]{40}|[0-9A-F]{64})$")
# The outward half of the GOV.UK postcode pattern (postcodes.py), alone: a postcode district such as N1C or E20.
_DISTRICT = re.compile(r"^(?:[A-Z][0-9]{1,2}|[A-Z][A-HJ-Y][0-9]{1,2}|[A-Z][0-9][A-Z]|[A-Z][A-HJ-Y][0-9]?[A-Z])$")

_BOROUGH_KEYS = {"name", "recipients", "format", "reasons", "keys", "extra_columns", "delivery"}
_PROVIDER_KEYS = {"name", "senders", "host_la", "password_env", "signing_keys", "require_signature", "receipts_to"}
_ROUTING_KEYS = {"unplaceable", "outside", "outside_recipient", "outside_format", "overrides"}


@dataclass(frozen=True)
class Borough:
    code: str
    name: str
    recipients: tuple[str, ...]
    format: str = "xlsx"
    line: int | None = field(default=None, compare=False)  # of its recipients, for problems about them
    reasons: tuple[str, ...] = REASONS  # the notifications it takes; rows of another reason are not forwarded
    pins: tuple[tuple[str, str], ...] = ()  # (recipient, fingerprint): that recipient's packages use that key
    pins_line: int | None = field(default=None, compare=False)
    extra_columns: bool = False  # its packages also carry the provider's own columns that are no field of the return
    delivery: str = EACH  # one of DELIVERIES

    @property
    def digest(self) -> bool:
        """Whether its rows wait for a daily or weekly digest instead of going one package a return."""
        return self.delivery != EACH

    def takes(self, reason: str) -> bool:
        return reason in self.reasons


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
    receipts_to: str | None = None  # where its receipts go; None: back to the address that sent the return

    def sends_from(self, address: str) -> bool:
        address = address.strip().lower()
        domain = "@" + address.rpartition("@")[2]
        return any(s == address or s == domain for s in self.senders)


@dataclass(frozen=True)
class Routing:
    """rules/routing.toml: rows that no borough in boroughs.toml takes. Without the file, they are rejected."""

    unplaceable: str = HOST_BOROUGH  # to the provider's host_la, when that is a borough here; or REJECT
    outside_borough: Borough | None = None  # outside_recipient as a pseudo-borough, when outside = "recipient"
    overrides: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))  # postcode or district -> code

    def override(self, postcode: str) -> str | None:
        """The authority an override gives a normalised postcode: its own override, else its district's."""
        return self.overrides.get(postcode) or self.overrides.get(postcode.partition(" ")[0])


@dataclass(frozen=True)
class Rules:
    boroughs: Mapping[str, Borough]
    providers: Mapping[str, Provider]
    files: tuple[Path, ...] = field(default=())
    routing: Routing = field(default_factory=Routing)

    def provider_for_sender(self, address: str) -> Provider | None:
        """The provider that registered this exact From address, else the one that registered its @domain."""
        address = address.strip().lower()
        exact = [p for p in self.providers.values() if address in p.senders]
        matches = exact or [p for p in self.providers.values() if p.sends_from(address)]
        return matches[0] if len(matches) == 1 else None

    def recipients(self) -> set[str]:
        return {r for borough in self.receiving() for r in borough.recipients}

    def receiving(self) -> tuple[Borough, ...]:
        """Every table that receives packages: the boroughs, then the pseudo-borough of outside_recipient."""
        outside = self.routing.outside_borough
        return tuple(self.boroughs.values()) + ((outside,) if outside else ())

    def pins(self) -> dict[str, str]:
        """recipient address -> the fingerprint pinned for it (a pin holds wherever the address is listed)."""
        return {address: fingerprint for borough in self.boroughs.values() for address, fingerprint in borough.pins}


def known_authorities(directory: Directory) -> Callable[[str], bool]:
    """Whether a code is a local authority: by the ONS authority lookup at once, else by the ONS postcode
    directory (read once, when first needed)."""
    every: set[str] = set()
    lookup = authorities_module.load()

    def known(code: str) -> bool:
        if code in LONDON or lookup.known(code):
            return True
        if not every:
            every.update(directory.authorities())
        return code in every

    return known


def load(directory: Path, known_authority: Callable[[str], bool] | None = None) -> Rules:
    """Read the rule files; raise RulesError listing every problem."""
    rules, problems = check(directory, known_authority)
    if problems:
        raise RulesError("\n".join(str(p) for p in problems))
    return rules


def check(directory: Path, known_authority: Callable[[str], bool] | None = None) -> tuple[Rules, list[Problem]]:
    """Read the rule files and return every entry that could be read, with every problem found."""
    known = known_authority or authorities_module.load().known
    problems: list[Problem] = []
    files = []
    boroughs: dict[str, Borough] = {}
    providers: dict[str, Provider] = {}
    for name in ("boroughs.toml", "providers.toml"):
        path = Path(directory) / name
        files.append(path)
        try:
            toml = TomlFile.load(path)
        except TomlError as error:
            problems.append(error.problem)
            continue
        if name == "boroughs.toml":
            boroughs.update(_boroughs(toml, known, problems))
        else:
            providers.update(_providers(toml, known, problems))
    for provider in providers.values():
        if provider.host_la and provider.host_la not in boroughs and not known(provider.host_la):
            problems.append(Problem(files[1], provider.line, f"provider {provider.ukprn}: host_la '{provider.host_la}' is not a known local authority code{authorities_module.load().suggestion(provider.host_la)}"))
    _claimed_twice(providers, files[1], problems)
    _pinned_twice(boroughs, files[0], problems)
    routing = Routing()
    path = Path(directory) / "routing.toml"
    if path.exists():  # optional: without it, rows no borough takes are rejected
        files.append(path)
        try:
            routing = _routing(TomlFile.load(path), known, problems)
        except TomlError as error:
            problems.append(error.problem)
    rules = Rules(MappingProxyType(boroughs), MappingProxyType(providers), tuple(files), routing)
    return rules, problems


def _boroughs(toml: TomlFile, known: Callable[[str], bool], problems: list[Problem]) -> dict[str, Borough]:
    """One table per English upper-tier authority (E06, E08, E09, E10), keyed by its ONS code."""
    lookup = authorities_module.load()
    found = {}
    for code, table in toml.data.items():
        if not isinstance(table, dict):
            problems.append(toml.problem(f"'{code}' must be a table: [{code}] followed by its keys", None, code))
            continue
        if not lookup.is_upper_tier(code):
            problems.append(toml.problem(lookup.why_not_upper_tier(code, table.get("name")), code))
            continue
        problems += toml.unknown_keys(code, table, _BOROUGH_KEYS)
        name = table.get("name") or LONDON.get(code) or lookup.name(code) or ""
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
        reasons = _reasons(toml, code, table.get("reasons"), problems)
        pins = _pins(toml, code, table.get("keys", {}), clean, problems)
        extra = table.get("extra_columns", False)
        if not isinstance(extra, bool):
            problems.append(toml.problem(f"[{code}] extra_columns must be true or false, not {extra!r}", code, "extra_columns"))
            extra = False
        delivery = table.get("delivery", EACH)
        if delivery not in DELIVERIES:
            listed = ", ".join(f'"{d}"' for d in DELIVERIES)
            problems.append(toml.problem(f"[{code}] delivery must be one of {listed}, not {delivery!r}"
                                         f"{_did_you_mean(str(delivery), DELIVERIES)}", code, "delivery"))
            delivery = EACH
        found[code] = Borough(code, str(name), tuple(clean), fmt if fmt in FORMATS else "xlsx", line, reasons, pins,
                              _pins_line(toml, code), extra, delivery)
    return found


def _reasons(toml: TomlFile, code: str, given: object, problems: list[Problem]) -> tuple[str, ...]:
    """The reasons a borough takes, in the usual order; all of them when it does not say."""
    if given is None:
        return REASONS
    choices = ", ".join(f'"{r}"' for r in REASONS)
    if not isinstance(given, list) or not given:
        problems.append(toml.problem(f"[{code}] reasons must list the notifications it takes, one or more of {choices}", code, "reasons"))
        return REASONS
    taken = set()
    for word in given:
        reason = _REASON_WORDS.get(str(word).strip().lower()) if isinstance(word, str) else None
        if reason is None:
            problems.append(toml.problem(f"[{code}] reasons: {word!r} is not a reason{_did_you_mean(str(word), REASONS)}; the reasons are {choices}", code, "reasons"))
        else:
            taken.add(reason)
    return tuple(r for r in REASONS if r in taken) or REASONS


def _pins(toml: TomlFile, code: str, given: object, recipients: list[str], problems: list[Problem]) -> tuple[tuple[str, str], ...]:
    """keys = { "address" = "FINGERPRINT" }: the key each named recipient's packages must be encrypted to."""
    line = _pins_line(toml, code)
    if not isinstance(given, dict):
        problems.append(Problem(toml.path, line, f'[{code}] keys must name each pinned key by its recipient: keys = {{ "ldor@example.org" = "FINGERPRINT" }}'))
        return ()
    pins = []
    for address, fingerprint in given.items():
        address = address.strip().lower()
        compact = fingerprint.replace(" ", "").upper() if isinstance(fingerprint, str) else ""
        if address not in recipients:
            problems.append(Problem(toml.path, line, f"[{code}] keys: {address} is not one of its recipients; a key can be pinned only for an address in recipients"))
        elif not _FINGERPRINT.match(compact):
            problems.append(Problem(toml.path, line, f"[{code}] keys: the key for {address} must be given by its full fingerprint, 40 letters and digits (gpg --fingerprint shows it), not {fingerprint!r}"))
        else:
            pins.append((address, compact))
    return tuple(pins)


def _providers(toml: TomlFile, known: Callable[[str], bool], problems: list[Problem]) -> dict[str, Provider]:
    found = {}
    for ukprn, table in toml.data.items():
        if not isinstance(table, dict):
            problems.append(toml.problem(f"'{ukprn}' must be a table: [{ukprn}] followed by its keys", None, ukprn))
            continue
        if not UKPRN.match(ukprn):
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
        receipts_to = table.get("receipts_to")
        if receipts_to is not None and (not isinstance(receipts_to, str) or not _ADDRESS.match(receipts_to.strip())):
            problems.append(toml.problem(f"provider {ukprn}: receipts_to must be one email address (where its receipts go instead of to the sender), not {receipts_to!r}", ukprn, "receipts_to"))
            receipts_to = None
        found[ukprn] = Provider(
            ukprn=ukprn,
            name=str(name).strip(),
            senders=tuple(clean),
            host_la=host_la,
            password_env=password_env,
            signing_keys=tuple(s.replace(" ", "").upper() for s in signing),
            require_signature=require,
            line=toml.line(ukprn),
            receipts_to=receipts_to.strip().lower() if receipts_to else None,
        )
    return found


def _claimed_twice(providers: dict[str, Provider], path: Path, problems: list[Problem]) -> None:
    owner: dict[str, str] = {}
    for provider in providers.values():
        for sender in provider.senders:
            if sender in owner and owner[sender] != provider.ukprn:
                problems.append(Problem(path, provider.line, f"sender {sender} is claimed by providers {owner[sender]} and {provider.ukprn}: each address may belong to one provider"))
            owner[sender] = provider.ukprn


def _pins_line(toml: TomlFile, code: str) -> int | None:
    """Where a borough's keys are: `keys = { ... }`, or a [CODE.keys] table of their own."""
    return toml.line(code, "keys") or toml.line(f"{code}.keys") or toml.line(code)


def _pinned_twice(boroughs: dict[str, Borough], path: Path, problems: list[Problem]) -> None:
    pinned: dict[str, tuple[str, str]] = {}  # address -> (fingerprint, borough code)
    for borough in boroughs.values():
        for address, fingerprint in borough.pins:
            first = pinned.setdefault(address, (fingerprint, borough.code))
            if first[0] != fingerprint:
                problems.append(Problem(path, borough.pins_line, f"{address} has one key pinned in [{first[1]}] and another in [{borough.code}]: a recipient has one key, so pin the same fingerprint in both"))


def _routing(toml: TomlFile, known: Callable[[str], bool], problems: list[Problem]) -> Routing:
    problems += toml.unknown_keys(None, toml.data, _ROUTING_KEYS)
    unplaceable = _choice(toml, "unplaceable", UNPLACEABLE_CHOICES, problems)
    outside = _choice(toml, "outside", OUTSIDE_CHOICES, problems)
    outside_borough = _outside_borough(toml, problems) if outside == RECIPIENT else None
    if toml.data.get("outside", REJECT) == REJECT and "outside_recipient" in toml.data:
        problems.append(toml.problem('outside_recipient is set but not used, because outside is "reject": set outside = "recipient" to send it those rows, or remove the line', None, "outside_recipient"))
    return Routing(unplaceable, outside_borough, MappingProxyType(_overrides(toml, known, problems)))


def _choice(toml: TomlFile, key: str, choices: tuple[str, ...], problems: list[Problem]) -> str:
    value = toml.data.get(key, choices[0])
    if isinstance(value, str) and value in choices:
        return value
    listed = " or ".join(f'"{c}"' for c in choices)
    problems.append(toml.problem(f"{key} must be {listed}, not {value!r}{_did_you_mean(str(value), choices)}", None, key))
    return choices[0]


def _outside_borough(toml: TomlFile, problems: list[Problem]) -> Borough | None:
    """outside_recipient as a borough of its own, so it gets packages and keys like one."""
    recipient = toml.data.get("outside_recipient")
    line = toml.line(None, "outside_recipient")
    fmt = toml.data.get("outside_format", "xlsx")
    if fmt not in FORMATS:
        problems.append(toml.problem(f'outside_format must be "xlsx" or "csv", not {fmt!r}', None, "outside_format"))
        fmt = "xlsx"
    if not isinstance(recipient, str) or not _ADDRESS.match(recipient.strip()):
        got = "it is missing" if recipient is None else f"{recipient!r} is not an email address"
        problems.append(Problem(toml.path, line or toml.line(None, "outside"), f'outside = "recipient" needs outside_recipient = "address@..." (who receives rows of authorities not in boroughs.toml); {got}'))
        return None
    return Borough(OUTSIDE, OUTSIDE_NAME, (recipient.strip().lower(),), fmt, line)


def _overrides(toml: TomlFile, known: Callable[[str], bool], problems: list[Problem]) -> dict[str, str]:
    """[overrides]: a full postcode or a postcode district -> the authority code its rows go to."""
    table = toml.data.get("overrides", {})
    if not isinstance(table, dict):
        problems.append(toml.problem('overrides must be a table: [overrides] followed by lines such as N1C = "E09000007"', None, "overrides"))
        return {}
    found: dict[str, str] = {}
    for key, code in table.items():
        line = toml.line("overrides", key) or toml.line("overrides")  # TomlFile cannot find a quoted key with a space
        place = _postcode_or_district(key)
        hint = " (London boroughs are E09000001 to E09000033)" if isinstance(code, str) and code.startswith("E09") else ""
        if key in _ROUTING_KEYS:
            problems.append(Problem(toml.path, line, f"{key} is inside [overrides], so it is read as an override: move the line above [overrides] (a line belongs to the [table] heading above it)"))
        elif place is None:
            problems.append(Problem(toml.path, line, f'override "{key}": not a full postcode (such as "N1C 4AA") or a postcode district (such as "N1C" or "E20")'))
        elif not isinstance(code, str) or not _AUTHORITY_CODE.match(code) or not known(code):
            hint += authorities_module.load().suggestion(code) if isinstance(code, str) else ""
            problems.append(Problem(toml.path, line, f'override "{key}": {code!r} is not a known local authority code{hint}'))
        elif place in found:
            problems.append(Problem(toml.path, line, f'override "{key}": {place} is overridden twice; keep one line for it'))
        else:
            found[place] = code
    return found


def _postcode_or_district(key: str) -> str | None:
    """A full postcode, normalised ("N1C 4AA"), or a district ("N1C"); None when it is neither."""
    compact = "".join(key.split()).upper()
    if is_valid(normalise(compact)):
        return normalise(compact)
    return compact if _DISTRICT.match(compact) else None


def _did_you_mean(word: str, choices: tuple[str, ...]) -> str:
    lowered = {choice.lower(): choice for choice in choices}
    close = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.5)
    return f' (did you mean "{lowered[close[0]]}"?)' if close else ""
