"""B1, B2 and B4 of benchmarks/run.py: a large return, a month-end burst, the postcode directory.

Each figure is measured beside its floor in the same run, on the same machine:
- B1: one 100,000-row return (residents of all 33 London boroughs, encrypted) through `gateway run --once`,
  and the gateway process's peak memory. Floor: the bare steps done directly - gpg decrypt, python-calamine
  read, XlsxWriter for each borough's rows, gpg encrypt of each package.
- B2: a month-end burst, --burst returns of 50 rows waiting in Dovecot, one `gateway run --once`. Floor: a
  naive single loop doing the same work with no ledger, no fsync and no retries (fetch, decrypt, read,
  route, write, encrypt, send).
- B4: the postcode directory: the first lookup in a fresh process, and lookups a second once warm.
"""

from __future__ import annotations

import email
import email.policy
import imaplib
import io
import os
import random
import smtplib
import subprocess
import sys
import time
from collections import defaultdict
from email.message import EmailMessage
from pathlib import Path

import gnupg
import python_calamine
import xlsxwriter
from helpers import (
    GATEWAY_ADDRESS,
    PROVIDER_SENDER,
    PROVIDER_UKPRN,
    provider_message,
    throwaway_keys,
)
from servers import Dovecot, SmtpCapture, export_public, gnupg_home, make_key

from gateway.admin.scaffold import write_installation
from gateway.demo.sample import TABLE_HEADINGS, people
from gateway.reference.postcodes import Directory, normalise
from gateway.rules import LONDON

ADMIN = "admin@bench.example"


def _recipient(code: str) -> str:
    return f"ldor-{code.lower()}@bench.example"


def _xlsx(rows: list[list[object]]) -> bytes:
    """A return as providers lay it out (header block, blank rows, the table), written quickly."""
    buffer = io.BytesIO()
    book = xlsxwriter.Workbook(buffer, {"in_memory": True})
    sheet = book.add_worksheet("Return")
    dates = book.add_format({"num_format": "DD/MM/YYYY"})
    for number, (label, value) in enumerate((("Provider Name", "Example College"), ("Provider Number", PROVIDER_UKPRN),
                                             ("Contact Name", "MIS Team"), ("Tel", "020 7946 0000"),
                                             ("e-mail", "mis@example-college.example"))):
        sheet.write_row(number, 0, [label, value])
    sheet.write_row(7, 0, list(TABLE_HEADINGS))
    for number, row in enumerate(rows, start=8):
        for column, value in enumerate(row):
            if column == 3:
                sheet.write_datetime(number, column, value, dates)
            elif value:
                sheet.write_string(number, column, str(value))
    book.close()
    return buffer.getvalue()


# Runs a command; prints its seconds and the largest peak resident size (KiB) of it and its descendants. Linux
# carries a process's high-water mark across exec, and a child started by vfork (as subprocess does) takes its
# parent's: started straight from this harness, the gateway would report the harness's own peak (the 100,000
# people it made). This small process forks the command instead, and as a subreaper it also collects the file
# readers that the gateway's fork server starts and reaps, whose peaks reach it through that server once the
# server ends. Daemons that outlive the command (gpg-agent) are left alone after a grace period.
_PEAK = """
import ctypes, os, resource, sys, time
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
start = time.monotonic()
pid = os.fork()
if pid == 0:
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    os.execv(sys.argv[1], sys.argv[1:])
status = os.waitpid(pid, 0)[1]
took = time.monotonic() - start
while time.monotonic() - start < took + 2:
    try:
        os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        break
    time.sleep(0.02)
print(took, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
sys.exit(os.waitstatus_to_exitcode(status))
"""


class Bench:
    """An installation serving all 33 London boroughs, each recipient with its own key, on a private
    Dovecot and relay."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.keys_cm = throwaway_keys(work / "keys")
        self.keys = self.keys_cm.__enter__()
        self.officers_cm = gnupg_home(work / "officers")
        self.officers = self.officers_cm.__enter__()
        self.fingerprints = {code: make_key(self.officers, f"Officer {name}", _recipient(code)) for code, name in LONDON.items()}
        self.imap = Dovecot(work / "imap", user=GATEWAY_ADDRESS, password="bench").__enter__()
        self.smtp = SmtpCapture().__enter__()
        self.directory = Directory()

    def install(self, name: str) -> Path:
        root = self.work / name
        (root / "keys").mkdir(parents=True)
        import shutil

        shutil.copytree(self.keys.gateway_home, root / "var" / "gnupg", ignore=shutil.ignore_patterns("S.*", "*.lock"))
        for code, fingerprint in self.fingerprints.items():
            (root / "keys" / f"{_recipient(code)}.asc").write_text(export_public(self.officers, fingerprint))
        return write_installation(
            root, imap=(self.imap.host, self.imap.port, self.imap.user, "BENCH_IMAP_PASSWORD"),
            smtp=(self.smtp.host, self.smtp.port), sender=GATEWAY_ADDRESS, admin=ADMIN,
            boroughs={code: (name, _recipient(code), "xlsx") for code, name in LONDON.items()},
            providers=[(PROVIDER_UKPRN, "Example College", PROVIDER_SENDER, "E09000019")], timeout=60,
        )

    def run_once(self, config: Path) -> tuple[float, float]:
        """`gateway run --once` as its own process: seconds, and the peak memory in MB of the largest of its
        processes (the gateway, its file readers, gpg), measured by _PEAK."""
        env = {**os.environ, "BENCH_IMAP_PASSWORD": self.imap.password}
        process = subprocess.run([sys.executable, "-c", _PEAK, sys.executable, "-m", "gateway", "--config", str(config),
                                  "run", "--once"], env=env, capture_output=True)
        if process.returncode != 0:
            raise RuntimeError(f"gateway run --once failed: {process.stderr.decode()[-2000:]}")
        took, peak = process.stdout.split()[-2:]
        return float(took), int(peak) / 1024

    def close(self) -> None:
        self.smtp.__exit__(None, None, None)
        self.imap.__exit__(None, None, None)
        self.officers_cm.__exit__(None, None, None)
        self.keys_cm.__exit__(None, None, None)

    # -- the floor: the bare steps, done directly -------------------------------------------------------
    def bare(self, ciphertext: bytes) -> dict[str, bytes]:
        """Decrypt, read, split by home borough, write each borough's rows, encrypt each package."""
        gateway = gnupg.GPG(gnupghome=str(self.keys.gateway_home))
        plain = gateway.decrypt(ciphertext, always_trust=True).data
        rows = python_calamine.CalamineWorkbook.from_filelike(io.BytesIO(plain)).get_sheet_by_name("Return").to_python()
        headings = [str(h) for h in rows[7]]
        postcode = headings.index("Post Code")
        split: dict[str, list[list[object]]] = defaultdict(list)
        for row in rows[8:]:
            code = self.directory.authority(normalise(row[postcode]))
            if code:
                split[code].append(row)
        officers = gnupg.GPG(gnupghome=str(self.officers))
        packages = {}
        for code, mine in split.items():
            buffer = io.BytesIO()
            book = xlsxwriter.Workbook(buffer, {"in_memory": True})
            sheet = book.add_worksheet()
            sheet.write_row(0, 0, headings)
            for number, row in enumerate(mine, start=1):
                sheet.write_row(number, 0, row)
            book.close()
            packages[code] = officers.encrypt(buffer.getvalue(), [self.fingerprints[code]], always_trust=True, armor=False).data
        return packages


def large_return(bench: Bench, rows: int) -> list[dict]:
    """B1."""
    per = rows // len(LONDON) + 1
    crowd = people(bench.directory, {code: per for code in LONDON}, seed=1)[:rows]
    data = _xlsx([p.cells() for p in crowd])
    ciphertext = bench.keys.encrypt_for_gateway(data)
    config = bench.install("b1")
    bench.imap.append(provider_message([("big.xlsx.gpg", ciphertext)]))
    before = len(bench.smtp.messages)
    took, peak = bench.run_once(config)
    packages = len(bench.smtp.messages) - before - 1
    start = time.monotonic()
    floor_packages = bench.bare(ciphertext)
    floor = time.monotonic() - start
    return [
        {"id": "B1", "what": f"{len(crowd):,}-row return ({len(data) / 1e6:.1f} MB xlsx), run --once", "value": took,
         "unit": "s", "floor": floor, "target": 1.5 * floor},
        {"id": "B1", "what": "peak memory of the gateway process", "value": peak, "unit": "MB", "target": 300.0},
        {"id": "B1", "what": f"packages sent (floor made {len(floor_packages)})", "value": float(packages), "unit": ""},
    ]


def burst(bench: Bench, returns: int, rows: int = 50) -> list[dict]:
    """B2: the gateway against a naive loop over the same messages."""
    config = bench.install("b2")
    messages = []
    for seed in range(returns):
        crowd = people(bench.directory, {"E09000019": rows // 5, "E09000007": rows // 5, "E09000012": rows // 5,
                                         "E09000001": rows // 5, "E09000033": rows - 4 * (rows // 5)}, seed=1000 + seed)
        messages.append(provider_message([(f"r{seed}.xlsx.gpg", bench.keys.encrypt_for_gateway(_xlsx([p.cells() for p in crowd])))]))
    for raw in messages:
        bench.imap.append(raw)
    took, _ = bench.run_once(config)
    for raw in messages:  # the same messages again, for the naive loop to take
        bench.imap.append(raw)
    start = time.monotonic()
    _naive_loop(bench)
    floor = time.monotonic() - start
    return [{"id": "B2", "what": f"burst of {returns} returns of {rows} rows, run --once", "value": took, "unit": "s",
             "floor": floor, "target": 30.0},
            {"id": "B2", "what": "returns a minute", "value": returns / took * 60, "unit": ""}]


def _naive_loop(bench: Bench) -> None:
    """One loop, no ledger, no fsync, no retries: fetch each message, do the bare steps, send each package."""
    client = imaplib.IMAP4(bench.imap.host, bench.imap.port)
    client.login(bench.imap.user, bench.imap.password)
    client.select("INBOX")
    _, found = client.uid("SEARCH", None, "ALL")
    relay = smtplib.SMTP(bench.smtp.host, bench.smtp.port)
    for uid in found[0].split():
        _, parts = client.uid("FETCH", uid, "(RFC822)")
        message = email.message_from_bytes(parts[0][1], policy=email.policy.default)
        attachment = next(message.iter_attachments()).get_payload(decode=True)
        for code, ciphertext in bench.bare(attachment).items():
            out = EmailMessage()
            out["From"], out["To"], out["Subject"] = GATEWAY_ADDRESS, _recipient(code), "package"
            out.add_attachment(ciphertext, maintype="application", subtype="octet-stream", filename="p.xlsx.gpg")
            relay.send_message(out)
        client.uid("STORE", uid, "+FLAGS", r"(\Deleted)")
    client.expunge()
    relay.quit()
    client.logout()


def directory_lookups(lookups: int = 1_000_000) -> list[dict]:
    """B4."""
    script = ("import time; t = time.monotonic(); from gateway.reference.postcodes import Directory; "
              "d = Directory(); d.authority('N1 1AA'); print(time.monotonic() - t)")
    first = float(subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout)
    directory = Directory()
    codes = list(LONDON)
    sample = [p for code in codes[:10] for p in directory.examples(code, 200)]
    random.Random(4).shuffle(sample)
    queries = (sample * (lookups // len(sample) + 1))[:lookups]
    start = time.monotonic()
    for postcode in queries:
        directory.authority(postcode)
    rate = lookups / (time.monotonic() - start)
    return [{"id": "B4", "what": "postcode directory: first lookup after start", "value": first, "unit": "s", "target": 0.15},
            {"id": "B4", "what": "postcode directory: lookups a second, warm", "value": rate, "unit": "/s",
             "target": 1_000_000, "higher": True}]
