"""The durable queue of outgoing messages: write to tmp, fsync, rename into new (Maildir-style).

A file in new/ is complete or absent, never half written. Packages in it are ciphertext; receipts
and alerts hold no personal data.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

_SUFFIX = ".eml"


class Outbox:
    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.tmp = self.folder / "tmp"
        self.new = self.folder / "new"
        self.bad = self.folder / "bad"
        for sub in (self.tmp, self.new, self.bad):
            sub.mkdir(parents=True, exist_ok=True, mode=0o700)

    def put(self, item_id: str, raw: bytes) -> Path:
        """Queue a complete message under its id; replacing an unsent one with the same id is harmless."""
        target = self.new / f"{item_id}{_SUFFIX}"
        temporary = self.tmp / f"{item_id}.{os.getpid()}{_SUFFIX}"
        with open(temporary, "wb") as handle:
            handle.write(raw)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
        _sync_folder(self.new)
        return target

    def pending(self) -> list[str]:
        """Ids of queued messages, oldest first."""
        files = sorted(self.new.glob(f"*{_SUFFIX}"), key=lambda p: (p.stat().st_mtime, p.name))
        return [p.name[: -len(_SUFFIX)] for p in files]

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
            _sync_folder(self.new)


def _sync_folder(folder: Path) -> None:
    # The rename is durable only once the folder's entry is on disk too.
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
