"""Read a TOML file and say on which line a table or key stands, so every problem can name its line."""

from __future__ import annotations

import difflib
import re
import tomllib
from pathlib import Path
from typing import Any

from .errors import Problem, TomlError

_TABLE = re.compile(r"^\s*\[\s*\"?([^\]\"]+?)\"?\s*\]\s*(#.*)?$")
_KEY = re.compile(r'^\s*(?:"([^"]+)"|([A-Za-z0-9_.-]+))\s*=')  # quoted keys may hold spaces: "N1C 4AA" = ...


class TomlFile:
    """A parsed TOML file that remembers its text, to point at lines."""

    def __init__(self, path: Path, data: dict[str, Any], text: str) -> None:
        self.path = path
        self.data = data
        self._lines = text.splitlines()

    @classmethod
    def load(cls, path: Path) -> TomlFile:
        """Parse `path`; a syntax error becomes a Problem-carrying ValueError with the line."""
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise TomlError(Problem(path, None, "file not found")) from None
        except IsADirectoryError:
            raise TomlError(Problem(path, None, "is a folder, not a file: name the file itself")) from None
        except PermissionError:
            raise TomlError(Problem(path, None, "permission denied: run as the user the gateway runs as, "
                                                "or let that user read the file")) from None
        except OSError as error:
            raise TomlError(Problem(path, None, f"cannot read the file: {error.strerror or 'input/output error'}")) from None
        except UnicodeDecodeError:
            raise TomlError(Problem(path, None, "cannot read the file: it is not UTF-8 text; save it again as UTF-8")) from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            match = re.search(r"line (\d+)", str(error))
            line = int(match.group(1)) if match else None
            raise TomlError(Problem(path, line, f"not valid TOML: {error}")) from None
        return cls(path, data, text)

    def line(self, table: str | None = None, key: str | None = None) -> int | None:
        """The 1-based line of `[table]`, or of `key` inside it (top level when table is None)."""
        current: str | None = None
        for number, text in enumerate(self._lines, start=1):
            header = _TABLE.match(text)
            if header:
                current = header.group(1).strip()
                if key is None and current == table:
                    return number
                continue
            if key is not None and current == table:
                assignment = _KEY.match(text)
                if assignment and (assignment.group(1) or assignment.group(2)) == key:
                    return number
        return None

    def problem(self, message: str, table: str | None = None, key: str | None = None) -> Problem:
        return Problem(self.path, self.line(table, key), message)

    def unknown_keys(self, table: str | None, found: dict[str, Any], known: set[str]) -> list[Problem]:
        """A problem, with a "did you mean", for each key of `found` that is not in `known`."""
        problems = []
        for key in found:
            if key in known:
                continue
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; known keys: {', '.join(sorted(known))}"
            where = f"[{table}]" if table else "the top level (a [section] name?)"
            # At the top level an unknown name is usually a [section]: point at its header.
            line = self.line(table, key) or (self.line(key) if table is None else None)
            problems.append(Problem(self.path, line, f"unknown key '{key}' in {where}{hint}"))
        return problems
