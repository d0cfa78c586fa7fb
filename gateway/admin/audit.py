"""The audit trail: an append-only, hash-chained copy of every ledger event, so that tampering shows.

Each entry stores the SHA-256 of (the previous entry's hash + its own canonical content); the first
entry follows GENESIS. Changing an entry breaks its own hash; deleting or moving one breaks the link
of the entry after it; `verify` names each by its id. An entry has the id of the ledger event it
copies, and holds what the event holds (references, ids, counts, hashes, never personal data), plus,
for an event about an outgoing message, which message it was: its kind, borough, rows and the SHA-256
of the message as queued. Whom a message went to is bound by its id, which is derived from the
reference, the kind, the borough and the recipient's address (mail.outgoing_id).

Retention deletes the oldest entries and keeps a checkpoint: the id and hash of the last entry
deleted. The trail then verifies from the checkpoint, and the checkpoint itself is recorded in the
chain (the ledger's "purged" event names it), so moving it to hide more deletions shows too.

The chain proves the order and content of what it holds; it cannot prove that nothing was cut from
its end. `verify` compares its end with the ledger's events, and `audit_verify_text` prints the head
hash: kept outside the machine (the monthly report's email carries it), it anchors the chain.
"""

from __future__ import annotations

import json
from typing import Protocol

from ..ledger import GENESIS, PURGE_EVENT, Checkpoint, Entry, entry_hash


class Trail(Protocol):
    """Where the trail is kept: the ledger (ledger.Ledger), which writes each entry with its event."""

    def has_audit_trail(self) -> bool: ...
    def audit_entries(self) -> list[Entry]: ...
    def audit_checkpoint(self) -> Checkpoint | None: ...
    def audit_head(self) -> str: ...
    def last_event_id(self) -> int | None: ...


def verify(trail: Trail) -> list[str]:
    """Every sign of tampering, each naming the entries concerned by id; [] when the trail is intact."""
    if not trail.has_audit_trail():
        return ["the ledger has no audit trail"]
    entries = trail.audit_entries()
    point = trail.audit_checkpoint()
    problems = [f"entry {e.id}: changed after it was written (its hash does not match its content)"
                for e in entries if entry_hash(e.prev, e.at, e.reference, e.event, e.detail) != e.hash]
    problems += _links(entries, point)
    problems += _checkpoint_recorded(entries, point)
    last_event = trail.last_event_id()
    last_entry = entries[-1].id if entries else (point.through if point else 0)
    if last_event is not None and last_event > last_entry:
        problems.append(f"{_entries(last_entry + 1, last_event)} missing: the ledger's events go up to {last_event}, "
                        f"the audit trail stops at {last_entry} (its end was deleted)")
    return problems


def _links(entries: list[Entry], point: Checkpoint | None) -> list[str]:
    """Follow the chain as it was written (each entry names its predecessor's hash) and compare with the ids.

    A break in the chain is a deletion (or an entry changed and re-hashed); an entry that was written
    after another but stands before it was moved.
    """
    following = {e.prev: e for e in entries}
    written: list[list[Entry]] = []  # runs of the chain, each in the order written
    reached: set[int] = set()
    start = point.hash if point else GENESIS
    for first in entries:
        if first.id in reached:
            continue
        # The first run starts where the start links to; a run after a break, at the lowest id not reached.
        run: list[Entry] = []
        current: Entry | None = (following.get(start) if not written else None) or first
        while current is not None and current.id not in reached:
            run.append(current)
            reached.add(current.id)
            current = following.get(current.hash)
        written.append(run)
    problems = []
    before = point.through if point else 0
    for number, run in enumerate(written):
        head = run[0]
        linked = head.prev == (start if number == 0 else written[number - 1][-1].hash)
        if not linked:
            after = f"entry {before}" if number else f"the checkpoint (entry {before})" if point else "the start of the trail"
            problems.append(_break(before, after, head))
        for previous, entry in zip(run, run[1:], strict=False):
            if entry.id < previous.id:
                problems.append(f"entry {entry.id}: out of order: it was written after entry {previous.id} "
                                "but stands before it (the entries were reordered)")
        before = run[-1].id
    return problems


def _break(before: int, after: str, entry: Entry) -> str:
    """The chain breaks before `entry`, which should follow `after` (entry `before`, or the start)."""
    if entry.id - before > 1:
        return f"{_entries(before + 1, entry.id - 1)} deleted: entry {entry.id} does not follow {after}"
    return (f"entry {entry.id}: does not follow {after}: {after} was changed and its hash recomputed, "
            "or entries between them were deleted and the rest renumbered")


def _checkpoint_recorded(entries: list[Entry], point: Checkpoint | None) -> list[str]:
    """The checkpoint must be the one the last purge recorded in the chain."""
    if point is None:
        return []
    recorded = None
    for entry in entries:
        if entry.event == PURGE_EVENT:
            try:
                detail = json.loads(entry.detail or "{}")
            except ValueError:  # an edited entry: its own hash says so
                continue
            if isinstance(detail, dict) and "audit_through" in detail:
                recorded = (detail["audit_through"], detail.get("audit_hash"))
    if recorded != (point.through, point.hash):
        return [f"the checkpoint (entries up to {point.through} purged) is not the one the last purge recorded in "
                "the trail: it was changed"]
    return []


def _entries(first: int, last: int) -> str:
    return f"entry {first}" if first == last else f"entries {first} to {last}"


def audit_verify_text(trail: Trail) -> tuple[int, str]:
    """`gateway audit verify`: exit code (0 intact, 1 altered) and the text to print."""
    problems = verify(trail)
    if not trail.has_audit_trail():
        return 1, "The ledger has no audit trail.\n"
    point = trail.audit_checkpoint()
    ids = [entry.id for entry in trail.audit_entries()]
    count, first, last = len(ids), min(ids, default=None), max(ids, default=None)
    lines = [f"Audit trail: {count} entries, {first} to {last}." if count else "Audit trail: no entries."]
    if point is not None:
        lines.append(f"Entries up to {point.through} were purged by retention ({point.purged} in all); "
                     f"the trail is verified from that checkpoint (hash {point.hash}).")
    if problems:
        lines.append(f"{len(problems)} problem(s): the trail was altered.")
        lines += [f"  {problem}" for problem in problems]
        lines.append("What to do: change nothing more; keep a copy of the ledger's files (gateway.db and its -wal) "
                     "and compare them with a backup to find what was altered.")
        return 1, "\n".join(lines) + "\n"
    lines.append("Intact: every entry matches its hash and follows the one before it.")
    lines.append(f"Head: entry {last or (point.through if point else 0)}, SHA-256 {trail.audit_head()}")
    lines.append("Keep the head elsewhere (the monthly report's email carries it): a trail that no longer "
                 "passes through it has lost entries from its end.")
    return 0, "\n".join(lines) + "\n"
