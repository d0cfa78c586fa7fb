"""The durable queue of outgoing messages: write to tmp, fsync, rename into new (Maildir-style).

A file in new/ is complete or absent, never half written. Packages in it are ciphertext; receipts
and alerts hold no personal data. bad/ keeps what must not be sent (corrupt, refused, given up);
held/ keeps packages waiting for a recipient's key, and waiting/ a return's rows waiting for a borough's
daily or weekly digest (digest.py); both encrypted to the gateway's own key, each beside a small JSON of
ids and counts.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import OutboxError

_SUFFIX = ".eml"


class Outbox:
    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.tmp = self.folder / "tmp"
        self.new = self.folder / "new"
        self.bad = self.folder / "bad"
        self.held = self.folder / "held"
        self.waiting = self.folder / "waiting"
        for sub in (self.tmp, self.new, self.bad, self.held, self.waiting):
            sub.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.shelf_held = Shelf(self.held, self._write)
        self.shelf_waiting = Shelf(self.waiting, self._write)  # a return's rows for one digest recipient

    def put(self, item_id: str, raw: bytes) -> Path:
        """Queue a complete message under its id; replacing an unsent one with the same id is harmless."""
        return self._write(self.new, f"{item_id}{_SUFFIX}", raw)

    def pending(self) -> list[str]:
        """Ids of queued messages, oldest first."""
        return _ids(self.new, _SUFFIX)

    def read(self, item_id: str) -> bytes:
        return (self.new / f"{item_id}{_SUFFIX}").read_bytes()

    def age(self, item_id: str) -> float:
        """Seconds since the message was queued."""
        return time.time() - (self.new / f"{item_id}{_SUFFIX}").stat().st_mtime

    def remove(self, item_id: str) -> None:
        (self.new / f"{item_id}{_SUFFIX}").unlink(missing_ok=True)
        _sync_folder(self.new)

    def set_aside(self, item_id: str) -> None:
        """Move a message that must not be sent (corrupt, unknown) out of the queue, keeping it for a look."""
        source = self.new / f"{item_id}{_SUFFIX}"
        if source.exists():
            os.replace(source, self.bad / source.name)
            _sync_folder(self.bad)
            _sync_folder(self.new)

    def set_aside_ids(self) -> list[str]:
        return _ids(self.bad, _SUFFIX)

    def restore(self, item_id: str) -> bool:
        """Put a set-aside message back in the queue (the administrator fixed the cause); False if absent."""
        source = self.bad / f"{item_id}{_SUFFIX}"
        if not source.exists():
            return False
        os.replace(source, self.new / source.name)
        os.utime(self.new / source.name)  # queued now: pending() is oldest first
        _sync_folder(self.new)
        _sync_folder(self.bad)
        return True

    # -- held packages, and rows waiting for a digest: each a Shelf -------------------------------------
    def hold(self, item_id: str, ciphertext: bytes, facts: dict[str, Any]) -> None:
        """Keep a package that cannot be sent yet (no usable key for its recipient)."""
        self.shelf_held.keep(item_id, ciphertext, facts)

    def held_ids(self) -> list[str]:
        """Ids of held packages, oldest first."""
        return self.shelf_held.ids()

    def held_facts(self, item_id: str) -> dict[str, Any]:
        return self.shelf_held.facts(item_id)

    def held_ciphertext(self, item_id: str) -> bytes:
        return self.shelf_held.ciphertext(item_id)

    def unhold(self, item_id: str) -> None:
        """Forget a held package (released)."""
        self.shelf_held.drop(item_id)

    def _write(self, folder: Path, name: str, data: bytes) -> Path:
        target = folder / name
        temporary = self.tmp / f"{name}.{os.getpid()}.part"
        try:
            with open(temporary, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, target)
            _sync_folder(folder)
        except OSError as error:
            temporary.unlink(missing_ok=True)  # a part written where the disk is full would only take more room
            reason = os.strerror(error.errno) if error.errno else type(error).__name__
            raise OutboxError(
                f"the outbox folder {self.folder} cannot be written ({reason}). Nothing was taken out of the mailbox: "
                "free space on that disk (or correct its permissions) and the waiting returns are handled at the next "
                "look") from None
        return target


class Shelf:
    """Ciphertext (encrypted to the gateway's own key) kept under an id beside a JSON of ids and counts.

    Kept ciphertext first, then its facts, whose file marks it whole; dropped facts first, so a crash
    never leaves facts without data."""

    def __init__(self, folder: Path, write: Callable[[Path, str, bytes], Path]) -> None:
        self.folder, self._write = folder, write

    def keep(self, item_id: str, ciphertext: bytes, facts: dict[str, Any]) -> None:
        self._write(self.folder, f"{item_id}.gpg", ciphertext)
        self._write(self.folder, f"{item_id}.json", json.dumps(facts, sort_keys=True, indent=1).encode())

    def ids(self) -> list[str]:
        """Oldest first."""
        return _ids(self.folder, ".json")

    def facts(self, item_id: str) -> dict[str, Any]:
        facts: dict[str, Any] = json.loads((self.folder / f"{item_id}.json").read_text())
        return facts

    def ciphertext(self, item_id: str) -> bytes:
        return (self.folder / f"{item_id}.gpg").read_bytes()

    def drop(self, item_id: str) -> None:
        (self.folder / f"{item_id}.json").unlink(missing_ok=True)
        (self.folder / f"{item_id}.gpg").unlink(missing_ok=True)
        _sync_folder(self.folder)


def _ids(folder: Path, suffix: str) -> list[str]:
    files = []
    for path in folder.glob(f"*{suffix}"):
        try:
            files.append((path.stat().st_mtime, path.name))
        except FileNotFoundError:  # sent and removed meanwhile
            continue
    return [name[: -len(suffix)] for _, name in sorted(files)]


def _sync_folder(folder: Path) -> None:
    # The rename is durable only once the folder's entry is on disk too.
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
