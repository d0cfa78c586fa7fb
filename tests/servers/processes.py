"""Processes the test servers start, seen through /proc: one scan for Dovecot's sessions and gpg's daemons."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator

LOCALHOST = "127.0.0.1"


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def _proc(name: str) -> Iterator[tuple[int, bytes]]:
    """(pid, contents of /proc/<pid>/<name>) for every process still there when read."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/{name}", "rb") as fh:
                yield int(entry), fh.read()
        except OSError:
            continue  # exited meanwhile


def session_pids(sid: int) -> list[int]:
    """Live (non-zombie) processes whose session id is sid."""
    pids = []
    for pid, raw in _proc("stat"):
        # The command name is in parentheses and may contain spaces; the
        # fields after the last ")" are: state ppid pgrp session ...
        fields = raw[raw.rindex(b")") + 2 :].split()
        if int(fields[3]) == sid and fields[0] != b"Z":
            pids.append(pid)
    return pids


def gpg_daemons() -> list[tuple[int, list[bytes]]]:
    """(pid, argv) of every gpg-agent, dirmngr and keyboxd."""
    daemons = []
    for pid, raw in _proc("cmdline"):
        argv = raw.split(b"\0")
        if argv and os.path.basename(argv[0]) in (b"gpg-agent", b"dirmngr", b"keyboxd"):
            daemons.append((pid, argv))
    return daemons
