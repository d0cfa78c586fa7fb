"""The hostile corpus (issue 9): every file and message in tests/data/hostile/ gets its expected answer.

Each case goes through the real `gateway run --once` (a separate process, so that a native crash kills
the gateway and not the test; Dovecot, the relay and gpg are real) and each plain file through
`gateway validate`. Most cases share one mailbox and one or a few runs; the few that once killed or
swamped the gateway (far cells, the gpg bomb, 10,000 parts, 51 MB) each get a mailbox of their own,
with a good return queued behind them that must be forwarded too. The slowest case and the biggest
process are printed (`-s`) and written to hostile-figures.json in pytest's temporary folder.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import re
import resource
import sqlite3
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from email.message import EmailMessage
from pathlib import Path

import gnupg
import pytest
from helpers import ADMIN, BOROUGHS, attachments_of
from servers import kill_agents, prepare_gnupghome
from test_intake import (  # noqa: F401
    CLEAR,
    GATEWAY_FPR,
    KEYS_DIR,
    assert_nothing_personal_in_clear,
    intake,
    package_rows,
)

HOSTILE = Path(__file__).parent / "data" / "hostile"
EXPECTED = json.loads((HOSTILE / "expected.json").read_text(encoding="utf-8"))
CASES: dict[str, dict] = EXPECTED["cases"]
BOROUGH_ADDRESSES = {address for _, address, _ in BOROUGHS.values()}
COLLEGE = "mis@example-college.example"
ACKNOWLEDGEMENT, REJECTION = "LDOR receipt", "LDOR return not accepted"
MEMORY_LIMIT = 4 << 30  # address space of each gateway process: a dense read of a sheet's whole grid fails fast
RUN_TIMEOUT = 240
FIGURES: dict[str, dict] = {}


def _load_make():
    spec = importlib.util.spec_from_file_location("hostile_make", HOSTILE / "make.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make = _load_make()


class Crypto:
    """What a provider's software does: gpg to the golden gateway key, Excel's and 7-Zip's passwords."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.gpg = gnupg.GPG(gnupghome=str(home))
        assert self.gpg.import_keys((KEYS_DIR / "gateway.public.asc").read_text()).fingerprints == [GATEWAY_FPR]

    def encrypt(self, data: bytes, extra: list[str] | None = None) -> bytes:
        armour = bool(extra and "--armor" in extra)
        rest = [a for a in extra or [] if a != "--armor"]
        result = self.gpg.encrypt(data, [GATEWAY_FPR], always_trust=True, armor=armour, extra_args=rest or None)
        assert result.ok, result.status
        return result.data

    def protect(self, plain: bytes, password: str) -> bytes:
        from msoffcrypto.format.ooxml import OOXMLFile

        out = io.BytesIO()
        OOXMLFile(io.BytesIO(plain)).encrypt(password, out)
        return out.getvalue()

    def aes_zip(self, name: str, data: bytes, password: str) -> bytes:
        import pyzipper

        out = io.BytesIO()
        with pyzipper.AESZipFile(out, "w", compression=pyzipper.ZIP_DEFLATED, encryption=pyzipper.WZ_AES) as archive:
            archive.setpassword(password.encode())
            archive.writestr(name, data)
        return out.getvalue()


@pytest.fixture(scope="module")
def crypto(tmp_path_factory):
    home = prepare_gnupghome(tmp_path_factory.mktemp("hostile-provider") / "gnupg")
    yield Crypto(home)
    kill_agents(home)


@pytest.fixture(scope="module", autouse=True)
def figures(tmp_path_factory):
    yield FIGURES
    if FIGURES:
        out = tmp_path_factory.getbasetemp() / "hostile-figures.json"
        out.write_text(json.dumps(FIGURES, indent=1, sort_keys=True))
        cases = {k: v for k, v in FIGURES.items() if k in CASES or k.startswith("validate ")}
        slowest = max(cases, key=lambda k: cases[k].get("seconds", 0), default=None)
        biggest = max(FIGURES, key=lambda k: FIGURES[k].get("peak_mb", 0))
        print(f"\nhostile corpus: {len(CASES)} cases; slowest case {slowest}: {cases.get(slowest)}; "
              f"biggest process {biggest}: {FIGURES[biggest].get('peak_mb')} MB; figures in {out}")


def _data(case: str, spec: dict) -> bytes | None:
    return (HOSTILE / "files" / spec["file"]).read_bytes() if spec["file"] else None


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def _tree(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


def _high_water(pid: int) -> int:
    """VmHWM (kB) of one process: its own peak, which a fork's copy of pytest does not inflate as ru_maxrss would."""
    try:
        return int(re.search(r"VmHWM:\s+(\d+)", Path(f"/proc/{pid}/status").read_text()).group(1))
    except (OSError, AttributeError):
        return 0


def run_gateway(config: Path, *args: str, timeout: float = RUN_TIMEOUT, stdin=subprocess.DEVNULL) -> dict:
    """One `gateway` process: its exit code (negative: killed by that signal), seconds, peak memory (MB, the
    biggest process of its tree, sampled every 20 ms), and what it printed."""
    command = [sys.executable, "-m", "gateway", "--config", str(config), *args]
    started = time.monotonic()
    process = subprocess.Popen(command, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               preexec_fn=_limit_memory, cwd=Path(__file__).parents[1])
    out: dict[str, bytes] = {}
    readers = [threading.Thread(target=lambda s=s, k=k: out.__setitem__(k, s.read()))
               for k, s in (("stdout", process.stdout), ("stderr", process.stderr))]
    for reader in readers:
        reader.start()
    timer = threading.Timer(timeout, process.kill)
    timer.start()
    peaks: dict[int, int] = {}
    ended = threading.Event()

    def sample() -> None:
        while not ended.wait(0.02):
            for pid in _tree(process.pid):
                peaks[pid] = max(peaks.get(pid, 0), _high_water(pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        _, status = os.waitpid(process.pid, 0)
    finally:
        timer.cancel()
        ended.set()
        sampler.join()
    process.returncode = os.waitstatus_to_exitcode(status)
    for reader in readers:
        reader.join()
    return {"rc": process.returncode, "seconds": round(time.monotonic() - started, 2),
            "peak_mb": round(max(peaks.values(), default=0) / 1024, 1), "stdout": out["stdout"].decode(errors="replace"),
            "stderr": out["stderr"].decode(errors="replace")}


def run_until_empty(intake, runs: int = 3, timeout: float = RUN_TIMEOUT) -> list[dict]:
    """`gateway run --once` until INBOX is empty, at most `runs` times (a message that killed the
    gateway twice must be answered on the third)."""
    done = []
    for n in range(runs):
        done.append(run_gateway(intake.config, "run", "--once", timeout=timeout))
        # Kept beside the installation, where the leak scan after the suite reads the daemon's stderr.
        (intake.root / f"gateway-run-{n}.stderr.log").write_text(done[-1]["stderr"])
        if not intake.imap.list_uids("INBOX"):
            break
    return done


# -- judging one case --------------------------------------------------------------------------------------
def _body(message: EmailMessage) -> str:
    body = message.get_body(("plain",))
    return body.get_content() if body is not None else ""


def _ledger(intake) -> dict[int, dict]:
    with sqlite3.connect(intake.root / "var" / "gateway.db") as db:
        db.row_factory = sqlite3.Row
        return {row["uid"]: dict(row) for row in db.execute("select * from messages where mailbox = 'INBOX'")}


def _seconds(row: dict) -> float:
    from datetime import datetime

    return (datetime.fromisoformat(row["updated"]) - datetime.fromisoformat(row["first_seen"])).total_seconds()


def _attachment_name(message: EmailMessage) -> str:
    return next((part.get_filename() or "" for part in message.iter_attachments()), "")


def _formula_cells(message: EmailMessage, keys) -> int:
    """Formula cells in an xlsx package's sheets, decrypted with its borough's key."""
    import zipfile

    (_, data), = attachments_of(message).items()
    plain = gnupg.GPG(gnupghome=str(keys.borough_homes[str(message["To"])])).decrypt(data).data
    with zipfile.ZipFile(io.BytesIO(plain)) as book:
        return sum(len(re.findall(rb"<f[ >]", book.read(n))) for n in book.namelist() if n.startswith("xl/worksheets/"))


_UNGUARDED = re.compile(r"(?<!')(?:=HYPERLINK|=cmd\||@SUM\(|=1\+2)", re.I)


def judge(intake, case: str, spec: dict, uid: int, ledger: dict[int, dict], captured: list[EmailMessage],
          inbox: list[int]) -> list[str]:
    """What is wrong with how one case was handled: an empty list when it got its expected answer."""
    problems: list[str] = []
    if uid in inbox:
        return ["left in INBOX (the gateway died on it or never answered)"]
    row = ledger.get(uid)
    if row is None:
        return ["not in the ledger"]
    reference = row["reference"]
    mine = [m for m in captured if reference in str(m["Subject"])]
    receipts = [m for m in mine if str(m["To"]) not in BOROUGH_ADDRESSES | {ADMIN}]
    alerts = [m for m in mine if str(m["To"]) == ADMIN]
    packages = [m for m in mine if str(m["To"]) in BOROUGH_ADDRESSES]
    if row["state"] == "quarantined" or row["outcome"] == "quarantined":
        seen = "quarantined"
    elif any(str(m["Subject"]).startswith(ACKNOWLEDGEMENT) for m in receipts):
        seen = "accepted"
    elif receipts:
        seen = "rejected"
    else:
        seen = f"unanswered ({row['state']}, {row['outcome']})"
    allowed = spec["outcome"] if isinstance(spec["outcome"], list) else [spec["outcome"]]
    if seen not in allowed:
        problems.append(f"{seen}, expected {' or '.join(allowed)}: "
                        + "; ".join(f"{m['Subject']}: {_body(m)[:300]!r}" for m in receipts + alerts))
        return problems
    texts = [_body(m) for m in receipts]
    if spec.get("receipts") is not None and len(receipts) != spec["receipts"]:
        problems.append(f"{len(receipts)} receipts to the provider, expected {spec['receipts']}")
    if seen == "quarantined":
        if not alerts:
            problems.append("quarantined without an alert to the administrator")
        if spec["provider_told"] is True and not receipts:
            problems.append("the registered provider was not told why (a limit) ")
        if spec["provider_told"] is False and receipts:
            problems.append("a stranger was answered with a receipt")
    if seen == "rejected" and spec["phrases"]:
        if not any(p.lower() in t.lower() for t in texts for p in spec["phrases"]):
            problems.append(f"the rejection says none of {spec['phrases']}: {texts[0][:400]!r}")
    if seen == "accepted":
        text = "\n".join(texts)
        if spec["rows_read"] is not None and not re.search(rf"Rows read:\s+{spec['rows_read']}\b", text):
            problems.append(f"expected 'Rows read: {spec['rows_read']}': {text[:600]!r}")
        rows, csv_rows, xlsx_formulas = [], [], 0
        for package in packages:
            found = package_rows(package, intake.keys)
            rows += found
            if _attachment_name(package).endswith(".csv.gpg"):
                csv_rows += found
            else:
                xlsx_formulas += _formula_cells(package, intake.keys)
        if spec["rows_forwarded"] is not None:
            if not re.search(rf"Rows forwarded:\s+{spec['rows_forwarded']}\b", text):
                problems.append(f"expected 'Rows forwarded: {spec['rows_forwarded']}': {text[:600]!r}")
            if len(rows) != spec["rows_forwarded"]:
                problems.append(f"{len(rows)} rows in the boroughs' packages, expected {spec['rows_forwarded']}")
        cells = [str(v) for r in rows for v in r if v is not None]
        for stale in spec.get("stale", []):
            if stale in cells:
                problems.append("a row from the hidden stale sheet was forwarded")
                break
        if spec.get("max_package_columns") and any(len(r) > spec["max_package_columns"] for r in rows):
            problems.append(f"a package row has {max(len(r) for r in rows)} columns")
        if spec.get("no_formula"):
            # In a csv package a spreadsheet program takes "=..." for a formula: it must be guarded. In an
            # xlsx package a string cell is text whatever it starts with: only a formula cell (<f>) is a risk.
            if xlsx_formulas:
                problems.append(f"an xlsx package holds {xlsx_formulas} formula cell(s)")
            csv_cells = [str(v) for r in csv_rows for v in r if v is not None]
            for where, value in [("receipt", t) for t in texts] + [("package", c) for c in csv_cells]:
                if _UNGUARDED.search(value) or (where == "package" and re.match(r"^[=@]|^[+\-][^\d\s]", value)):
                    problems.append(f"formula-like text reaches a {where} unguarded: {value[:80]!r}")
                    break
    if spec.get("no_passwd") and any(b"root:x:0:0" in m.as_bytes() for m in mine):
        problems.append("/etc/passwd was read into a message")
    if spec.get("no_file") and Path(spec["no_file"]).exists():
        problems.append(f"{spec['no_file']} was created")
    return problems


def deliver_all(intake, crypto, names: list[str]) -> dict[str, int]:
    uids = {}
    for case in names:
        before = set(intake.imap.list_uids("INBOX"))
        intake.deliver(make.message(case, CASES[case], _data(case, CASES[case]), crypto))
        (uid,) = set(intake.imap.list_uids("INBOX")) - before
        uids[case] = uid
    return uids


def _check(intake, uids: dict[str, int], label: str, runs: list[dict]) -> dict[str, list[str]]:
    ledger = _ledger(intake)
    captured = intake.captured()
    inbox = intake.imap.list_uids("INBOX")
    failures = {}
    for case, uid in uids.items():
        problems = judge(intake, case, CASES[case], uid, ledger, captured, inbox)
        if uid in ledger:
            FIGURES.setdefault(case, {})["seconds"] = round(_seconds(ledger[uid]), 2)
        if problems:
            failures[case] = problems
    FIGURES[label] = {"runs": [{k: r[k] for k in ("rc", "seconds", "peak_mb")} for r in runs],
                      "peak_mb": max(r["peak_mb"] for r in runs)}
    personal = sorted({v for case in uids for v in CASES[case]["personal"]})
    if personal:
        assert_nothing_personal_in_clear(captured, personal)
    return failures


def _report(failures: dict[str, list[str]]) -> str:
    lines = [f"{len(failures)} case(s) not answered as issue 9 expects:"]
    for case, problems in sorted(failures.items()):
        needs = CASES[case]["needs"]
        lines.append(f"- {case} ({CASES[case]['about']}){f' [needs the {needs} fix]' if needs else ''}:")
        lines += [f"    {p}" for p in problems]
    return "\n".join(lines)


MAIN = sorted(c for c, s in CASES.items() if s["batch"] == "main")
ALONE = sorted(c for c, s in CASES.items() if s["batch"] == "alone")


def test_the_corpus_is_big_enough_and_small_in_the_repository():
    assert len(CASES) >= 60
    for file in (HOSTILE / "files").iterdir():
        assert file.stat().st_size < 100_000, file.name
    kinds = {s["send"] for s in CASES.values()}
    assert {"gpg_bomb", "many_parts", "stranger_dsn", "gpg_no_mdc", "armour_truncated", "winmail_traversal"} <= kinds


@pytest.mark.parametrize("intake", [CLEAR], ids=["clear-receipts"], indirect=True)
def test_every_hostile_case_in_one_mailbox_gets_its_answer(intake, crypto):
    uids = deliver_all(intake, crypto, MAIN)

    runs = run_until_empty(intake)

    for run in runs:
        assert "Traceback" not in run["stderr"], run["stderr"][-3000:]
    failures = _check(intake, uids, "main batch", runs)
    assert runs[0]["rc"] == 0, f"the gateway ended with {runs[0]['rc']}:\n{runs[0]['stderr'][-2000:]}"
    assert max(r["peak_mb"] for r in runs) < 1024, "the gateway grew past 1 GB"
    assert not failures, _report(failures)


@pytest.mark.parametrize("intake", [CLEAR], ids=["clear-receipts"], indirect=True)
@pytest.mark.parametrize("case", ALONE)
def test_a_case_that_once_stopped_the_gateway_is_answered_and_the_returns_behind_it_go_on(intake, crypto, case):
    spec = CASES[case]
    uids = deliver_all(intake, crypto, [case, "good_xlsx", "good_csv"])

    runs = run_until_empty(intake, timeout=spec.get("max_seconds", 90) + 30)

    failures = _check(intake, uids, f"run {case}", runs)
    FIGURES[case]["peak_mb"] = max(r["peak_mb"] for r in runs)
    seconds = sum(r["seconds"] for r in runs)
    FIGURES[case]["run_seconds"] = round(seconds, 2)
    assert not failures, _report(failures) + "\nruns: " + "; ".join(
        f"rc {r['rc']} in {r['seconds']} s, {r['peak_mb']} MB: {r['stderr'][-300:]!r}" for r in runs)
    assert seconds < spec.get("max_seconds", 90), f"{case} took {seconds:.1f} s to answer"
    assert FIGURES[case]["peak_mb"] < spec.get("max_mb", 700), f"{case} took {FIGURES[case]['peak_mb']} MB"


# -- gateway validate ----------------------------------------------------------------------------------------
def _validate(path: Path, stdin=subprocess.DEVNULL, timeout: float = 60) -> dict:
    return run_gateway(Path("/nonexistent/config.toml"), "validate", str(path), timeout=timeout, stdin=stdin)


def test_gateway_validate_answers_every_hostile_file_with_its_exit_code(tmp_path):
    jobs = {}
    for case, spec in CASES.items():
        if spec["validate"] is None:
            continue
        if spec["file"]:
            jobs[case] = HOSTILE / "files" / spec["file"]
        elif spec["send"] == "runtime":
            jobs[case] = tmp_path / f"{case}.csv"
            jobs[case].write_bytes(make.runtime_file(case))
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = dict(zip(jobs, pool.map(_validate, jobs.values()), strict=False))
    failures = {}
    for case, result in results.items():
        FIGURES.setdefault(f"validate {case}", {}).update(seconds=result["seconds"], peak_mb=result["peak_mb"])
        problems = []
        if result["rc"] not in CASES[case]["validate"]:
            problems.append(f"exit {result['rc']}, expected {CASES[case]['validate']}: {result['stderr'][-400:]!r}")
        if "Traceback" in result["stderr"]:
            problems.append(f"a traceback: {result['stderr'][-400:]!r}")
        if result["peak_mb"] > 1024:
            problems.append(f"{result['peak_mb']} MB")
        if problems:
            failures[case] = problems
    assert len(results) >= 45
    assert not failures, _report(failures)


@pytest.mark.parametrize("what", ["/dev/zero", "a folder", "a protected workbook without a terminal"])
def test_gateway_validate_on_what_is_no_file_says_so_clearly(tmp_path, what):
    if what == "/dev/zero":
        path = Path("/dev/zero")
    elif what == "a folder":
        path = tmp_path
    else:
        path = tmp_path / "protected.xlsx"
        path.write_bytes(Crypto.protect(None, (HOSTILE / "files" / "good_xlsx.xlsx").read_bytes(), "Ldor-Test-Password-1"))

    result = _validate(path, timeout=30)

    FIGURES.setdefault(f"validate {what}", {}).update(seconds=result["seconds"], peak_mb=result["peak_mb"])
    assert result["rc"] in (1, 2), f"exit {result['rc']}: {result['stderr'][-1500:]}"
    assert "Traceback" not in result["stderr"], result["stderr"][-1500:]
    assert result["seconds"] < 20 and result["peak_mb"] < 500, result
    said = (result["stdout"] + result["stderr"]).lower()
    assert said.strip(), "nothing was said"
    if "protected" in what:
        assert "password" in said, said
