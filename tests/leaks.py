"""The leak scan (issue 9): every personal value of the fixtures, looked for in clear in what the gateway leaves.

Looked in: each installation's ledger (the SQLite files), outbox, logs and stderr files; new files in
the temp folder; every log record of the gateway's loggers; every mail the test relays captured. OpenPGP
data (armoured blocks, binary packets, encrypted mail parts) is ciphertext and skipped.
"""

from __future__ import annotations

import email
import email.policy
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

_ARMOURED = re.compile(rb"-----BEGIN PGP (?:MESSAGE|PUBLIC KEY BLOCK|SIGNATURE)-----.*?-----END PGP [A-Z ]+-----", re.DOTALL)
DATA = Path(__file__).parent / "data"


def personal_values() -> set[str]:
    """Names, ULNs, postcodes, DOBs, addresses, e-mails and phones of the fixtures' young people: the golden
    and hostile corpora, and gateway.demo.sample's people for the seeds the tests use."""
    from gateway.demo.sample import _FAMILY, people
    from gateway.reference.postcodes import Directory

    values: set[str] = set(_FAMILY)
    for expected in (DATA / "messages" / "expected.json", DATA / "hostile" / "expected.json"):
        if expected.exists():
            document = json.loads(expected.read_text(encoding="utf-8"))
            for case in (document.get("messages") or document.get("cases") or {}).values():
                values.update(case.get("personal", []))
    directory = Directory()
    for seed in list(range(0, 12)) + list(range(100, 106)) + list(range(300, 303)) + list(range(500, 550)) + [4242]:
        for p in people(directory, {"E09000019": 2, "E09000007": 1, "E09000012": 1}, seed=seed):
            values |= {p.uln, p.address, p.postcode, p.email}
    # Short values (a two-letter first name) would match by chance in any binary file.
    return {v for v in values if len(v) >= 5 and not v.isdigit() or len(v) >= 10}


def _from_utf16(data: bytes) -> bytes:
    """A file written as UTF-16 (Excel's 'Unicode text') as UTF-8, or nothing when it is not one."""
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return data.decode("utf-16", "replace").encode("utf-8")
    return b""


def _clear(data: bytes) -> bytes:
    """The bytes with OpenPGP ciphertext cut out: armoured blocks, and a whole file of binary packets."""
    if data[:1] and data[0] in (0x84, 0x85, 0x86, 0xC1, 0xD2):
        return b""
    return _ARMOURED.sub(b"", data)


def clear_mail_parts(raw: bytes) -> list[bytes]:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    pieces = []
    for part in message.walk():
        pieces.append("\n".join(f"{k}: {v}" for k, v in part.items()).encode("utf-8", "surrogateescape"))
        if part.is_multipart():
            continue
        payload = part.get_payload(decode=True) or b""
        pieces.append(_clear(payload))
    return pieces


_TOKEN = re.compile(rb"[A-Za-z0-9]+")


@dataclass
class Scan:
    """Finds any of `values` in clear. Each place is split into words once and only values whose first word
    occurs there are searched for, so thousands of values over thousands of mails take seconds."""

    values: set[str]
    found: list[str] = field(default_factory=list)
    looked: int = 0
    _by_first: dict[bytes, list[bytes]] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        for value in self.values:
            encoded = value.encode("utf-8")
            first = _TOKEN.search(encoded)
            self._by_first.setdefault(first.group(0) if first else encoded, []).append(encoded)

    def look(self, where: str, data: bytes) -> None:
        self.looked += 1
        for text in (data, _from_utf16(data)):
            for token in set(_TOKEN.findall(text)):
                for value in self._by_first.get(token, ()):
                    if value in text:
                        self.found.append(f"{value[:3].decode(errors='replace')}... in {where}")  # never the whole value
                        return

    def installation(self, root: Path) -> None:
        for path in sorted(root.rglob("*")):
            if not path.is_file() or "gnupg" in path.parts:
                continue
            if path.name.startswith("gateway.db") or "outbox" in path.parts or path.suffix in (".log", ".err") or "stderr" in path.name:
                data = path.read_bytes()
                self.look(str(path), data if path.name.startswith("gateway.db") else _clear(data))

    def mails(self, raws: list[bytes]) -> None:
        for n, raw in enumerate(raws):
            for piece in clear_mail_parts(raw):
                self.look(f"captured mail {n}", piece)

    def records(self, records: list[logging.LogRecord]) -> None:
        text = "\n".join(f"{r.name} {r.getMessage()}" for r in records).encode("utf-8", "replace")
        self.look("log records", text)

    def temp_files(self, paths: list[Path]) -> None:
        for path in paths:
            try:
                self.look(str(path), _clear(path.read_bytes()))
            except OSError:
                pass


class Recorder(logging.Handler):
    """Keeps every record of the gateway's loggers, at every level, for the scan."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
