"""One decrypted return + the rules -> what would be forwarded, held back and answered.

The one examination of a return: the mailbox pipeline and `gateway validate` / `gateway route` all
call examine(), so the verdict a provider gets by mail is the one the command line shows.

    read (in a child, isolate.py) -> validate -> duplicate check -> route -> settle the findings

Nothing here sends, stores or logs anything.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

from .. import isolate
from ..errors import ReadError
from ..intake.unpack import untrusted
from ..keys import Signature
from ..ledger import FileRecord
from ..reference.postcodes import Directory
from ..rules import Provider, Rules
from .read import Return, read_return
from .route import Routed, route
from .validate import Finding, settle, sort_findings, validate

NOTHING_ROUTED = Routed((), ())
DUPLICATE_DAYS = 90  # the same file from the same provider within this many days is not forwarded again
PROGRESS_ROWS = 3000  # a check of more rows than this reports its progress

# Why a row was held back, as a borough's covering note counts it (the first E finding of the row decides).
_HELD_BECAUSE = {
    "Name_01": "no name given",
    "Reason_01": "no notification marked (Joiner, Leaver or At risk)",
    "Reason_03": "no notification marked (Joiner, Leaver or At risk)",
    "DOB_05": "over 24, so not a young person",
    "Postcode_01": "no postcode, and no authority to send it to instead",
    "Postcode_02": "postcode malformed, and no authority to send it to instead",
    "Postcode_15": "postcode not in the directory, and no authority to send it to instead",
    "Route_01": "home authority not served by this gateway (the provider is asked to notify it)",
    "Route_02": "a kind of notification its authority does not take here",
}
_UNREADABLE_ROW = "the row could not be read"


@dataclass(frozen=True)
class Examination:
    table: Return | None  # None when the file could not be read as a return
    provider: Provider | None  # the registered provider the return is taken to be from
    findings: tuple[Finding, ...]  # errors first; W notes on rows held back are worded for them
    routed: Routed
    refusal: str | None = None  # why the whole file is refused (a rejection receipt says it), or None
    unreadable: bool = False  # refused because it could not be read as a table at all

    @property
    def rows_read(self) -> int:
        return len(self.table.rows) if self.table is not None else 0

    def held_back(self) -> tuple[tuple[str, int], ...]:
        """Rows of the return that went to no authority, counted by why: what a borough's covering note says."""
        first: dict[int, str] = {}
        for f in self.findings:
            if f.severity == "E" and f.row is not None:
                first.setdefault(f.row, _HELD_BECAUSE.get(f.rule, _UNREADABLE_ROW))
        counts: dict[str, int] = {}
        for why in first.values():
            counts[why] = counts.get(why, 0) + 1
        return tuple(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def examine(data: bytes, provider: Provider | None, rules: Rules, directory: Directory, *,
            duplicate: Callable[[Provider], str | None] | None = None,
            signature: Signature | None = None,
            notes: tuple[Finding, ...] = (),
            progress: Callable[[int, int], None] | None = None, today: date | None = None) -> Examination:
    """Read, check and route one decrypted return.

    `provider` is the registered sender; None takes the registered provider named by the header block,
    if any. `duplicate(provider)` says why the file is a duplicate of one already handled, or None.
    `notes` are file-level findings met before (weak encryption), kept at the top of the warnings.
    `signature` is the file's own, when it was decrypted here: checked against the provider's signing rules
    (the mailbox checks a message's signatures while unpacking it).
    """
    try:
        table = isolate.run(read_return, data)
    except ReadError as error:
        return Examination(None, provider, (), NOTHING_ROUTED, error.advice, unreadable=True)
    if provider is None:
        provider = rules.providers.get(table.header.get("provider_number", ""))
    distrusted = untrusted(provider, signature) if signature is not None and provider is not None else None
    if distrusted is not None:
        return Examination(table, provider, (), NOTHING_ROUTED, distrusted.advice)
    if "postcode" in table.columns:  # the directory readies what routing will look up while the rows are checked
        directory.prepare(row.values[table.columns["postcode"]] for row in table.rows)
    checked = validate(table, provider, today, progress if len(table.rows) > PROGRESS_ROWS else None)
    if checked.fatal:
        advice = " ".join(f"{f.message} ({f.rule})." for f in checked.fatal) + (
            " Please correct the header block of your return and send it again.")
        return Examination(table, provider, checked.findings, NOTHING_ROUTED, advice)
    earlier = duplicate(provider) if duplicate is not None and provider is not None else None
    if earlier is not None:
        return Examination(table, provider, (Finding("F", None, "", "File_04", earlier),) + checked.findings,
                           NOTHING_ROUTED, earlier)
    routed = route(table, checked.accepted, rules, directory, provider)
    findings = notes + tuple(sort_findings(list(settle(checked.findings, routed.findings) + routed.findings)))
    return Examination(table, provider, findings, routed)


def duplicate_advice(earlier: FileRecord | None) -> str | None:
    """What the provider reads when the file is the one they sent before (the ledger's record of the earlier one)."""
    if earlier is None:
        return None
    return (f"This file is a duplicate: it is identical to the one we received on {earlier.first_seen[:10]} (gateway "
            f"reference {earlier.reference}), which was already handled, so it has not been forwarded "
            "again. If you meant to send a new return, please attach the new file.")
