"""Rows -> accepted rows + findings (severity, row, column, rule, message).

A bad row is data, not an exception. Every rule has a stable name (Field_NN) so a provider can look it
up and an administrator can count it; RULES is the one registry of them.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from types import MappingProxyType

from ..reference import ccis, postcodes
from ..rules import REASONS, UKPRN, Provider
from .read import Problem, Return, Row


@dataclass(frozen=True)
class Rule:
    name: str
    severity: str  # F file rejected, E row rejected, W row forwarded with a note
    field: str  # canonical field ("" for the header block or the whole row)
    message: str
    # For a W rule about the row's own cells: what became of the row, and what to correct next time.
    # The receipt then says it in words, so a data officer never reads a note as a rejection.
    forwarded: str = ""
    correct: str = ""
    # What the borough reads in the package's Data Quality column (the message when blank).
    note: str = ""
    # What to correct when the row was held back after all (the capitalised `correct` when blank).
    when_held: str = ""


@dataclass(frozen=True, slots=True)
class Finding:
    severity: str
    row: int | None
    column: str
    rule: str
    message: str
    # The offending cell as the provider wrote it. Personal data: shown only in a receipt encrypted to
    # the provider's own key, never in a clear receipt, a log or the ledger.
    value: str = field(default="", repr=False, compare=False)
    # The same finding, worded for a row that in the end was not forwarded (routing can hold back a row
    # that validation accepted): settle() puts it in place of `message`.
    if_held: str = field(default="", repr=False, compare=False)


_FORWARDED = "The row was forwarded"
_CORRECT_ULN = "please correct the ULN in your records and give it next time"
_CORRECT_DOB = "please give the date of birth next time as day/month/year, e.g. 31/01/2008"
_TO_HOST = ("The young person's home authority could not be found from it, so the row was sent to the local "
            "authority your organisation is in")
_CORRECT_POSTCODE = "please tell that authority the young person's home postcode, and give it in your return next time"
_HOME_UNKNOWN = "home postcode unknown: sent to the authority the provider is in"
_HELD_POSTCODE = ("The young person's home authority could not be found from it and there is no other authority to "
                  "send the row to, so it was not forwarded; please correct the postcode and send the row again")


def _registry(*rules: Rule) -> Mapping[str, Rule]:
    return MappingProxyType({rule.name: rule for rule in rules})


RULES = _registry(
    Rule("Provider_01", "F", "provider_name", "Provider name is missing from the header"),
    Rule("Provider_02", "F", "provider_number", "Provider number must be your 8-digit UKPRN"),
    Rule("Provider_03", "F", "provider_number", "Provider number in the header is not the provider registered for the address this came from"),
    Rule("Header_01", "W", "", "Header contact details are incomplete"),
    Rule("File_01", "F", "", "The file cannot be opened or read as a return"),
    Rule("File_02", "W", "", "The file's encryption is weak"),
    Rule("File_04", "F", "", "This file is identical to one already handled, so it is not forwarded again"),
    Rule("File_03", "W", "", "The table was read from a hidden sheet, as no visible sheet holds one; please check this is the return you meant to send"),
    Rule("Csv_01", "W", "", "A quote mark (\") in this row is not closed, so the row was read with the quote mark taken as text; please check the row"),
    Rule("Csv_02", "E", "", "A quote mark (\") in this row is not closed, so its columns cannot be told apart; please remove the stray quote mark and send the row again"),
    Rule("ULN_01", "W", "uln", "The Unique Learner Number is blank",
         _FORWARDED, "please give the young person's ULN next time if they have one"),
    Rule("ULN_02", "W", "uln", "The Unique Learner Number is the temporary number 9999999999",
         _FORWARDED, "please give the real ULN next time, once it is known"),
    Rule("ULN_03", "W", "uln", "The Unique Learner Number must be 10 digits, not starting with 0",
         _FORWARDED, _CORRECT_ULN),
    Rule("ULN_04", "W", "uln", "The Unique Learner Number you gave does not pass the checksum calculation",
         "The row was forwarded with its ULN left out, so it cannot be matched to another young person",
         _CORRECT_ULN, "the provider's ULN failed the check digit, so it was left out"),
    Rule("Name_01", "E", "", "The learner's family name and given name must be returned (both are blank)"),
    Rule("FamilyName_01", "W", "family_name", "The learner's family name is blank",
         _FORWARDED, "please give the family name next time"),
    Rule("FamilyName_02", "W", "family_name", "The learner's family name is longer than 100 characters",
         _FORWARDED, "please check the family name next time"),
    Rule("FirstName_01", "W", "first_name", "The learner's given name is blank",
         _FORWARDED, "please give the given name next time"),
    Rule("FirstName_02", "W", "first_name", "The learner's given name is longer than 100 characters",
         _FORWARDED, "please check the given name next time"),
    Rule("DOB_01", "W", "dob", "Date of birth is missing", _FORWARDED, _CORRECT_DOB),
    Rule("DOB_02", "W", "dob", "Date of birth is not a valid date", _FORWARDED, _CORRECT_DOB),
    Rule("DOB_03", "W", "dob", "Date of birth is in the future", _FORWARDED, _CORRECT_DOB),
    Rule("DOB_04", "W", "dob", "Learner is outside the 16-18 age range on 31 August",
         _FORWARDED, "please check the date of birth next time"),
    Rule("DOB_05", "E", "dob", "Learner is over 24 on 31 August, too old for this return"),
    Rule("Address_01", "W", "address", "Address is missing"),
    # W: the row went to the provider's own authority (routing.toml unplaceable = "host_borough"); E when
    # routing had nowhere to send it (unplaceable = "reject", or no host_la served here).
    Rule("Postcode_01", "W", "postcode", "The home postcode is blank", _TO_HOST, _CORRECT_POSTCODE,
         _HOME_UNKNOWN, _HELD_POSTCODE),
    Rule("Postcode_02", "W", "postcode", "The postcode is not in the correct format", _TO_HOST, _CORRECT_POSTCODE,
         _HOME_UNKNOWN, _HELD_POSTCODE),
    Rule("Postcode_15", "W", "postcode", "Postcode not found in the ONS postcode directory", _TO_HOST, _CORRECT_POSTCODE,
         _HOME_UNKNOWN, _HELD_POSTCODE),
    Rule("Email_01", "W", "contact_email", "Contact e-mail looks invalid"),
    Rule("Phone_01", "W", "phone", "Contact phone number looks invalid"),
    Rule("Reason_01", "E", "reason", "Reason must be one of: Joiner, Leaver, At risk of dropping out (none given)"),
    Rule("Reason_02", "W", "reason", "More than one reason is marked",
         "The row was forwarded as the most urgent of them (Leaver, then At risk, then Joiner)",
         "please mark one reason for each row next time",
         "sent as the most urgent of the reasons marked"),
    Rule("Reason_03", "E", "reason", "Reason must be one of: Joiner, Leaver, At risk of dropping out (mark the column with X, Y, Yes or a tick)"),
    Rule("Destination_01", "W", "destination", "Destination code is not a recognised CCIS activity code"),
    Rule("Row_01", "W", "", "Possible duplicate of another row"),
    Rule("Formula_01", "W", "", "This cell holds a formula: the value Excel last saved was used; please type values, not formulas"),
    Rule("Formula_02", "E", "", "This cell holds a formula with no saved value, so it cannot be read; please type the value"),
    Rule("Route_01", "E", "postcode", "The young person lives in a local authority this gateway does not serve; please notify that authority directly"),
    Rule("Route_02", "E", "reason", "The young person's local authority does not take this kind of notification through this gateway, so the row was not forwarded"),
    Rule("Route_03", "W", "postcode", "The young person lives in a local authority this gateway does not serve; the row was forwarded to the recipient who takes such notifications"),
)

URGENCY = ("Leaver", "At risk", "Joiner")  # several marked: the row goes as the first of these
# "ü" is how a Wingdings tick arrives as text; "√" is often typed for a tick.
_TICKS = {"x", "y", "yes", "1", "true", "\u2713", "\u2714", "\u2611", "\u00fc", "\u221a", "tick", "ticked"}
_NOT_TICKED = {"", "n", "no", "0", "false", "-"}
_REASON_WORDS = {
    "joiner": "Joiner", "joined": "Joiner", "starter": "Joiner", "new starter": "Joiner",
    "leaver": "Leaver", "left": "Leaver", "left early": "Leaver",
    "at risk": "At risk", "at risk of dropping out": "At risk", "wobbler": "At risk", "risk": "At risk",
}
_ULN = re.compile(r"^[1-9][0-9]{9}$")
_ULN_WEIGHTS = (10, 9, 8, 7, 6, 5, 4, 3, 2)  # of the first nine digits (ULN_04)
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$")
_PHONE = re.compile(r"^\+?[0-9 ()\-.]+$")


@dataclass(frozen=True, slots=True)
class Accepted:
    """A row that may be forwarded, with what routing needs.

    `row` is what the borough may see: a ULN that fails its check digit is emptied here (ULN_04), so
    neither the package nor a held copy of it can carry it. The provider's value stays in the finding.
    """

    row: Row
    postcode: str  # normalised ("" when blank; it may still fail the format check: routing sees to that)
    reason: str  # one of REASONS
    notes: tuple[tuple[str, str], ...] = ()  # its data quality notes, (rule, detail), which travel with it
    # Set by routing: the home authority's code (None when the postcode could not place it), and how it
    # was placed: "postcode", "override" or "provider's authority".
    home: str | None = None
    routed_by: str = ""

    def placed(self, notes: tuple[tuple[str, str], ...], home: str | None, routed_by: str) -> Accepted:
        """The row as routing placed it (dataclasses.replace, without its cost on every row of a large return)."""
        return Accepted(self.row, self.postcode, self.reason, notes, home, routed_by)


@dataclass(frozen=True)
class Checked:
    accepted: tuple[Accepted, ...]
    findings: tuple[Finding, ...]  # row and file findings, errors first

    @property
    def fatal(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity == "F")


def finding(table: Return, rule_name: str, row: int | None, detail: str = "", source: Row | None = None,
            held: bool = False, severity: str = "") -> Finding:
    """A finding of `rule_name`; with `source`, it keeps the offending cell for encrypted receipts.

    A W note on the row's own cells says the row was forwarded and what to correct next time; `held`
    (the row is held back, for an E finding of its own or by routing) says what to correct instead,
    as the first part would be false. `severity` overrides the rule's (a postcode rule is E when the
    row had nowhere to go).
    """
    rule = RULES[rule_name]
    value = cell_text(source.get(table, rule.field)) if source is not None and rule.field in table.columns else ""
    message = if_held = f"{rule.message}{detail}"
    if rule.correct:
        if_held += ". " + (rule.when_held or f"{rule.correct[0].upper()}{rule.correct[1:]}")
        message = if_held if held else f"{message}. {rule.forwarded}; {rule.correct}"
    return Finding(severity or rule.severity, row, _column(table, rule.field), rule.name, message, value,
                   if_held if rule.correct else "")


def settle(findings: tuple[Finding, ...], routing: tuple[Finding, ...]) -> tuple[Finding, ...]:
    """The findings once routing is done: a W note on a row routing then held back no longer says it was
    forwarded, and one that routing raised to an E (a postcode with nowhere to go) gives way to the E."""
    held = {f.row for f in routing if f.severity == "E" and f.row is not None}
    raised = {(f.row, f.rule) for f in routing if f.severity == "E"}
    return tuple(replace(f, message=f.if_held) if f.severity == "W" and f.if_held and f.row in held else f
                 for f in findings if not (f.severity == "W" and (f.row, f.rule) in raised))


def borough_note(rule_name: str, detail: str = "") -> str:
    """A data quality note as the borough reads it in the package: the rule's name and a short text."""
    rule = RULES[rule_name]
    return f"{rule.name} {rule.note or rule.message[0].lower() + rule.message[1:]}{detail}"


def _column(table: Return, field: str) -> str:
    """The column a provider should look at, named as in their own sheet where it has one."""
    if field == "reason" and "reason" not in table.columns:
        ticks = [table.heading(f) for f in ("joiner", "leaver", "at_risk") if f in table.columns]
        return " / ".join(ticks) or "Reason"
    if field in ("provider_name", "provider_number"):
        return field.replace("_", " ").title()
    return table.heading(field) if field else ""


def validate(table: Return, provider: Provider | None, today: date | None = None,
             progress: Callable[[int, int], None] | None = None) -> Checked:
    """Check the header block and every row; rows with no E finding are accepted.

    `progress(done, total)` is called every thousand rows, for a person waiting on a large file.
    """
    today = today or date.today()
    findings = _header(table, provider)
    problems: dict[int | None, list[Finding]] = {}
    for problem in table.problems:
        problems.setdefault(problem.row, []).append(_problem(problem))
    numbers = {row.number for row in table.rows}
    findings += [f for row, found in problems.items() if row not in numbers for f in found]
    accepted = []
    seen_uln: dict[str, int] = {}
    seen_person: dict[Person, int] = {}
    for done, row in enumerate(table.rows, start=1):
        if progress is not None and done % 1000 == 0:
            progress(done, len(table.rows))
        marks, postcode, reason, identity = _row(table, row, today)
        other = _formulas(table, row) + problems.get(row.number, [])
        uln, person = identity
        earlier = seen_uln.get(uln) if uln else None
        earlier = earlier or (seen_person.get(person) if person else None)
        notes = [(name, detail) for name, detail in marks if RULES[name].severity == "W"]
        notes += [(f.rule, "") for f in other if f.severity == "W"]
        if earlier:
            other.append(finding(table, "Row_01", row.number, f" (row {earlier})"))
            notes.append(("Row_01", f" (row {earlier})"))
        if uln:
            seen_uln.setdefault(uln, row.number)
        if person:
            seen_person.setdefault(person, row.number)
        held = any(RULES[name].severity == "E" for name, _ in marks) or any(f.severity == "E" for f in other)
        findings += [finding(table, name, row.number, detail, row, held) for name, detail in marks] + other
        if not held:
            # A ULN that fails its check could be another young person's: the borough never sees it.
            failed = ("ULN_04", "") in marks
            accepted.append(Accepted(_without_uln(table, row) if failed else row, postcode, reason, tuple(notes)))
    return Checked(tuple(accepted), tuple(sort_findings(findings)))


def _without_uln(table: Return, row: Row) -> Row:
    """The row with its ULN cell emptied: what the borough's package (and a held copy of it) carries."""
    values = list(row.values)
    column = table.columns["uln"]
    if column < len(values):
        values[column] = None
    return replace(row, values=tuple(values))


def sort_findings(findings: list[Finding]) -> list[Finding]:
    order = {"F": 0, "E": 1, "W": 2}
    return sorted(findings, key=lambda f: (order[f.severity], f.row or 0, f.rule))


def uln_problem(value: object) -> str | None:
    """The rule a ULN breaks (ULN_01..04), or None when it is valid."""
    text = cell_text(value)
    if not text:
        return "ULN_01"
    if text == "9999999999":
        return "ULN_02"
    if not _ULN.match(text):
        return "ULN_03"
    remainder = sum(map(operator.mul, _ULN_WEIGHTS, map(int, text[:9]))) % 11
    if remainder == 0 or int(text[9]) != 10 - remainder:
        return "ULN_04"
    return None


def plausible_phone(text: str) -> bool:
    """UK or international: digits with the usual punctuation, 10 to 15 digits ("+44 (0)20 7946 0000")."""
    return bool(_PHONE.match(text)) and 10 <= sum(map(text.count, "0123456789")) <= 15


def plausible_email(text: str) -> bool:
    return bool(_EMAIL.match(text))


def parse_date(value: object, today: date) -> date | None:
    """A date from an Excel date cell, ISO text or day/month/year text; None if it is not one."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    text = cell_text(value)
    match = re.fullmatch(r"(\d{4})-(\d{1,2})-(\d{1,2})(?:[T ].*)?", text)
    if match:
        year, month, day = (int(g) for g in match.groups())
    else:
        match = re.fullmatch(r"(\d{1,2})[/.\-](\d{1,2})[/.\-](\d{2}|\d{4})", text)
        if not match:
            return None
        day, month, year = (int(g) for g in match.groups())
        if year < 100:  # two-digit years: the most recent such year not in the future
            year += 2000 if 2000 + year <= today.year else 1900
    try:
        return date(year, month, day)
    except ValueError:
        return None


def academic_age(born: date, today: date) -> int:
    """Age on 31 August at the start of the current academic year."""
    start = date(today.year if today.month >= 9 else today.year - 1, 8, 31)
    return start.year - born.year - ((start.month, start.day) < (born.month, born.day))


def reason_of(table: Return, row: Row) -> tuple[str | None, str | None]:
    """(reason, None); (the most urgent reason, "Reason_02") when several are marked; or (None, the rule broken)."""
    ticked, odd = [], False
    for tick, reason in zip(("joiner", "leaver", "at_risk"), REASONS, strict=False):
        if tick not in table.columns:
            continue
        mark = cell_text(row.get(table, tick)).lower()
        if mark in _TICKS:
            ticked.append(reason)
        elif mark not in _NOT_TICKED:
            odd = True
    if "reason" in table.columns:
        word = " ".join(cell_text(row.get(table, "reason")).lower().replace("-", " ").split())
        if word:
            named = _REASON_WORDS.get(word)
            if named is None:
                odd = True
            elif named not in ticked:
                ticked.append(named)
    if len(ticked) > 1:
        return min(ticked, key=URGENCY.index), "Reason_02"
    if ticked:
        return ticked[0], None
    return None, "Reason_03" if odd else "Reason_01"


def _marked(table: Return, row: Row) -> str:
    """The reasons a row marks, for the receipt: "Joiner and Leaver"."""
    marked = [r for tick, r in zip(("joiner", "leaver", "at_risk"), REASONS, strict=False)
              if tick in table.columns and cell_text(row.get(table, tick)).lower() in _TICKS]
    word = " ".join(cell_text(row.get(table, "reason")).lower().replace("-", " ").split()) if "reason" in table.columns else ""
    if _REASON_WORDS.get(word) and _REASON_WORDS[word] not in marked:
        marked.append(_REASON_WORDS[word])
    return " and ".join(marked)


def _problem(problem: Problem) -> Finding:
    """A problem met while reading the file (read.Problem), as the receipt states it."""
    rule = RULES[problem.rule]
    return Finding(rule.severity, problem.row, "", rule.name, f"{rule.message}{problem.detail}")


def _formulas(table: Return, row: Row) -> list[Finding]:
    if not table.formulas:
        return []
    found = []
    for column, heading in enumerate(table.headings):
        saved = table.formulas.get((row.number, column))
        if saved is None:
            continue
        rule = RULES["Formula_01" if saved else "Formula_02"]
        found.append(Finding(rule.severity, row.number, heading, rule.name, rule.message))
    return found


def _header(table: Return, provider: Provider | None) -> list[Finding]:
    header = table.header
    findings = []
    if "provider_name" in header or "provider_number" in header:
        if not header.get("provider_name"):
            findings.append(finding(table, "Provider_01", None))
        number = header.get("provider_number", "")
        if not UKPRN.match(number):
            findings.append(finding(table, "Provider_02", None))
        elif provider is not None and number != provider.ukprn:
            findings.append(finding(table, "Provider_03", None))
        name, tel, email = (header.get(k, "") for k in ("contact_name", "contact_tel", "contact_email"))
        if not name or not plausible_phone(tel) or not plausible_email(email):
            findings.append(finding(table, "Header_01", None))
    return findings


Person = tuple[str, str, object]  # family name, first name, date of birth, as a duplicate is told
Identity = tuple[str | None, Person | None]  # a usable ULN, and the person


def _row(table: Return, row: Row, today: date) -> tuple[list[tuple[str, str]], str, str, Identity]:
    """The rules the row breaks, each with its detail; its postcode, reason and identity (for duplicates)."""
    found: list[tuple[str, str]] = []

    def add(rule_name: str, detail: str = "") -> None:
        found.append((rule_name, detail))

    uln = cell_text(row.get(table, "uln"))
    problem = uln_problem(uln)
    if problem:
        add(problem)
    family = cell_text(row.get(table, "family_name"))
    first = cell_text(row.get(table, "first_name"))
    if not family and not first:
        add("Name_01")  # names no one: nothing a borough could act on
    for value, blank, long in ((family, "FamilyName_01", "FamilyName_02"), (first, "FirstName_01", "FirstName_02")):
        if not value and (family or first):
            add(blank)
        elif len(value) > 100:
            add(long)
    raw_dob = row.get(table, "dob")
    born = parse_date(raw_dob, today)
    if not cell_text(raw_dob):
        add("DOB_01")
    elif born is None:
        add("DOB_02")
    elif born >= today:
        add("DOB_03")
    else:
        age = academic_age(born, today)
        if age > 24:
            add("DOB_05")
        elif not 16 <= age <= 18:
            add("DOB_04", f" (age {age})")
    if not cell_text(row.get(table, "address")):
        add("Address_01")
    postcode = postcodes.normalise(row.get(table, "postcode"))
    if not postcode:
        add("Postcode_01")
    elif not postcodes.is_valid(postcode):
        add("Postcode_02")
    email = cell_text(row.get(table, "contact_email"))
    if email and not plausible_email(email):
        add("Email_01")
    phone = cell_text(row.get(table, "phone"))
    if phone and not plausible_phone(phone):
        add("Phone_01")
    reason, problem = reason_of(table, row)
    if problem == "Reason_02":
        add(problem, f" ({_marked(table, row)})")
    elif problem:
        add(problem)
    destination = cell_text(row.get(table, "destination"))
    if re.fullmatch(r"\d{3}", destination) and ccis.code_of(destination) is None:
        add("Destination_01")
    person = (family.lower(), first.lower(), born) if family and first and born else None
    return found, postcode, reason or "", (uln if uln and uln != "9999999999" else None, person)


def cell_text(value: object) -> str:
    """A cell as text: a whole number stored as a float (a ULN typed as a number) without its ".0"."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()
