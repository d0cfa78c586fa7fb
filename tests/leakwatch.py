"""Watching where a process writes, and finding personal values in clear in what it wrote.

Two witnesses, because each sees what the other cannot:
- an audit hook inside the Python process (sys.addaudithook) sees every file Python opens for writing,
  and is called *before* a file is removed or replaced, so it reads a temporary file's content while it
  still exists: a file written and deleted between two scans of a folder is not missed;
- strace, where the machine has it (Debian package `strace`), sees every file opened for writing by
  any code, native libraries and child processes (gpg) included, and every removal.
Neither sees into memory or pipes, which is where the gateway keeps plaintext.
"""

from __future__ import annotations

import contextlib
import html
import io
import json
import os
import re
import sys
import traceback
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


# -- finding values -------------------------------------------------------------------------------
def forms(values: Iterable[str]) -> list[bytes]:
    """The byte forms a value takes in a file: UTF-8, XML-escaped (xlsx, ods), UTF-16 (xls, Windows)."""
    found = set()
    for value in values:
        for text in {value, html.escape(value, quote=True), html.escape(value, quote=False)}:
            found |= {text.encode("utf-8"), text.encode("utf-16-le")}
    return sorted(found)


def clear_values(data: bytes, patterns: list[bytes], depth: int = 0) -> list[str]:
    """Which of `patterns` are in `data` in clear, looking inside zip archives (xlsx, ods) too."""
    found = [p.decode("utf-8", "replace") for p in patterns if p in data]
    if depth < 2 and data[:4] == b"PK\x03\x04":
        with contextlib.suppress(zipfile.BadZipFile, OSError, RuntimeError, NotImplementedError, EOFError):
            archive = zipfile.ZipFile(io.BytesIO(data))
            for info in archive.infolist():
                if info.file_size < 64 * 1024 * 1024 and not info.flag_bits & 0x1:
                    found += clear_values(archive.read(info), patterns, depth + 1)
    return found


def file_values(path: Path, patterns: list[bytes]) -> list[str]:
    try:
        return clear_values(path.read_bytes(), patterns)
    except OSError:  # a socket, a file gone, a folder
        return []


def tree_values(root: Path, patterns: list[bytes]) -> dict[str, list[str]]:
    """Every file under `root` holding a value in clear: path -> values."""
    found = {}
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            hits = file_values(path, patterns)
            if hits:
                found[str(path)] = hits
    return found


# -- the audit hook -------------------------------------------------------------------------------
_watchers: list[Callable[[str, tuple], None]] = []


def _dispatch(event: str, args: tuple) -> None:
    for watch in tuple(_watchers):
        watch(event, args)


@contextlib.contextmanager
def audit_hook(watch: Callable[[str, tuple], None]) -> Iterator[None]:
    """Call `watch(event, args)` on every audit event while inside. An audit hook cannot be removed,
    so one dispatcher is added once per process and watchers come and go."""
    if _dispatch not in getattr(sys, "_leakwatch_hooks", ()):
        sys.addaudithook(_dispatch)
        sys._leakwatch_hooks = (_dispatch,)  # type: ignore[attr-defined]
    _watchers.append(watch)
    try:
        yield
    finally:
        _watchers.remove(watch)


def _path(value: object) -> str | None:
    if isinstance(value, (str, bytes, os.PathLike)):
        return os.path.abspath(os.fsdecode(value))
    return None  # a file descriptor: opened before, by path


def is_write(mode: object, flags: object) -> bool:
    if isinstance(mode, str):
        return any(c in mode for c in "wax+")
    return isinstance(flags, int) and bool(flags & _WRITE_FLAGS)


@dataclass
class Watch:
    """An audit hook's record: files opened for writing, and values found in files as they were removed
    or replaced (only under `watched`: elsewhere a write is reported, not read)."""

    watched: tuple[str, ...]
    patterns: list[bytes]
    written: set[str] = field(default_factory=set)
    removed: set[str] = field(default_factory=set)
    leaks: dict[str, list[str]] = field(default_factory=dict)
    # Files with no name (tempfile.TemporaryFile, O_TMPFILE): their content cannot be read by anyone
    # else, nor checked here, so where they were made is recorded instead.
    nameless: list[str] = field(default_factory=list)

    def __call__(self, event: str, args: tuple) -> None:
        try:
            if event == "open" and is_write(args[1], args[2]):
                path = _path(args[0])
                tmpfile = getattr(os, "O_TMPFILE", 0)
                if path and os.path.isdir(path):
                    # NamedTemporaryFile passes its folder to io.open with an opener that opens the real
                    # file (seen as its own event); only an O_TMPFILE open makes a file with no name.
                    if tmpfile and args[1] is None and isinstance(args[2], int) and args[2] & tmpfile == tmpfile:
                        self.nameless.append(" < ".join(f"{f.name}:{f.lineno}" for f in traceback.extract_stack()[-12:-2]))
                elif path:
                    self.written.add(path)
            elif event == "os.remove":
                self._before_it_goes(_path(args[0]))
            elif event in ("os.rename", "os.replace"):
                self._before_it_goes(_path(args[1]))  # what the new file replaces is gone after
            elif event == "shutil.rmtree":
                root = _path(args[0])
                if root and os.path.isdir(root):
                    for folder, _, names in os.walk(root):
                        for name in names:
                            self._before_it_goes(os.path.join(folder, name))
        except Exception as error:  # noqa: BLE001 - a watcher must never change what the watched code does
            self.leaks.setdefault("(watch failed)", []).append(repr(error))

    def _before_it_goes(self, path: str | None) -> None:
        if not path or not path.startswith(self.watched) or not os.path.isfile(path):
            return
        self.removed.add(path)
        hits = file_values(Path(path), self.patterns)
        if hits:
            self.leaks[path] = hits

    def save(self, path: Path) -> None:
        path.write_text(json.dumps({"written": sorted(self.written), "removed": sorted(self.removed),
                                    "leaks": self.leaks, "nameless": self.nameless}))


# -- strace ---------------------------------------------------------------------------------------
STRACE_CALLS = "open,openat,creat,unlink,unlinkat,rename,renameat,renameat2"
# With -y strace shows the folder a descriptor names, so a name relative to it can be placed.
_AT = r'(?:AT_FDCWD, |\d+<([^>]*)>, |\d+, )?'
_OPEN = re.compile(r'\b(open|openat|creat)\(' + _AT + r'"((?:[^"\\]|\\.)*)"(?:, ([A-Z0-9_|]+))?')
_GONE = re.compile(r'\b(unlink|unlinkat|rename|renameat|renameat2)\(' + _AT + r'"((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class Traced:
    written: frozenset[str]  # every path opened for writing or created, by any process in the tree
    removed: frozenset[str]  # every path unlinked or renamed away


def read_strace(trace: Path, cwd: Path) -> Traced:
    written, removed = set(), set()
    for line in trace.read_text(errors="replace").splitlines():
        for call, folder, name, flags in _OPEN.findall(line):
            if call == "creat" or any(f in flags for f in ("O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC", "O_APPEND")):
                written.add(os.path.normpath(os.path.join(folder or cwd, name)))
        for _, folder, name in _GONE.findall(line):
            removed.add(os.path.normpath(os.path.join(folder or cwd, name)))
    return Traced(frozenset(written), frozenset(removed))
