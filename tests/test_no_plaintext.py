"""No plaintext on disk (issue 9): every intake form and every package format, watched while it runs.

How it is watched, and why this way. Scanning folders after a run misses a file that was written and
deleted in between, which is exactly what openpyxl did with each worksheet's XML. So the gateway runs
(`gateway run --once`, a child process, on every golden message in tests/data/messages at once: PGP/MIME,
inline PGP, armoured and binary .gpg, protected xlsx, AES zips, csv in three encodings, ods, xlsm,
forwarded, signed, refused...) with two witnesses (tests/leakwatch.py):
- an audit hook inside it records each file Python opens for writing, and reads each file under the
  temp folder or the installation just *before* it is removed or replaced, so a temporary file's
  content is checked while it still exists;
- strace, where installed (Debian package `strace`; without it the test still runs, with the hook
  alone), records every file opened for writing or removed by any code: native libraries and the gpg
  child processes too.
It asserts that nothing is written outside the installation, its temp folder (TMPDIR, pointed at a
fresh folder) and /dev; that every file removed from the temp folder was read by the hook before it
went (so none escaped the content check); that no file held a fixture's name, ULN, postcode or
e-mail in clear when it was removed; and that none does at the end, under the installation root
(outbox, held packages, database, gnupg home) or the temp folder, nor in the gateway's log.
Borough formats cover xlsx and csv packages, and one borough has no key at first, so a package is
held (encrypted to the gateway) and then released in a second run once its key is back.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from leakwatch import (
    STRACE_CALLS,
    Traced,
    clear_values,
    forms,
    read_strace,
    tree_values,
)
from test_intake import EXPECTED, MESSAGES_DIR, intake  # noqa: F401 - the fixture, with the golden keys

ROOT = Path(__file__).resolve().parent.parent
PERSONAL = sorted({value for expected in EXPECTED.values() for value in expected.get("personal", [])})

# Inside the child: point the temp folder at the watched one, start the hook, run the gateway.
RUNNER = """
import os, sys, tempfile
from pathlib import Path
sys.path.insert(0, os.environ["LEAKWATCH_TESTS"])
import leakwatch
tempfile.tempdir = os.environ["TMPDIR"]
watch = leakwatch.Watch(tuple(os.environ["LEAKWATCH_WATCHED"].split(os.pathsep)),
                        leakwatch.forms(Path(os.environ["LEAKWATCH_VALUES"]).read_text().splitlines()))

def saved_apart(watch):
    # A worker process the gateway forks (gateway/workers.py) has the hook too: it keeps its own record,
    # saved beside the gateway's as the worker ends; watched_run adds it in.
    import multiprocessing.util
    watch.written, watch.removed, watch.leaks, watch.nameless = set(), set(), {}, []
    report = Path(os.environ["LEAKWATCH_REPORT"] + f".{os.getpid()}")
    multiprocessing.util.Finalize(None, lambda: watch.save(report), exitpriority=100)


import multiprocessing.util
multiprocessing.util.register_after_fork(watch, saved_apart)
with leakwatch.audit_hook(watch):
    from gateway.cli import main
    code = main(["--config", os.environ["LEAKWATCH_CONFIG"], "run", "--once"])
watch.save(Path(os.environ["LEAKWATCH_REPORT"]))
sys.exit(code)
"""


def watched_run(intake, work: Path, name: str) -> tuple[dict, Traced | None, bytes]:
    """`gateway run --once` in a child, watched; the hook's report, strace's (if any) and the log."""
    temp = work / "tmp"
    temp.mkdir(exist_ok=True)
    values = work / "values.txt"
    values.write_text("\n".join(PERSONAL))
    report, trace = work / f"{name}.json", work / f"{name}.strace"
    env = {
        **os.environ, "TMPDIR": str(temp), "PYTHONDONTWRITEBYTECODE": "1", "LEAKWATCH_TESTS": str(ROOT / "tests"),
        "LEAKWATCH_WATCHED": os.pathsep.join((str(temp), str(intake.root))), "LEAKWATCH_VALUES": str(values),
        "LEAKWATCH_CONFIG": str(intake.config), "LEAKWATCH_REPORT": str(report),
    }
    command = [sys.executable, "-c", RUNNER]
    strace = shutil.which("strace")
    if strace:
        command = [strace, "-f", "-qq", "-y", "-e", f"trace={STRACE_CALLS}", "-o", str(trace), *command]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, timeout=540)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-3000:]
    found = json.loads(report.read_text())
    for part in sorted(work.glob(f"{report.name}.*")):  # the workers' records
        theirs = json.loads(part.read_text())
        for kind in ("written", "removed", "nameless"):
            found[kind] += theirs[kind]
        found["leaks"].update(theirs["leaks"])
    return found, (read_strace(trace, ROOT) if strace else None), done.stderr


def test_no_personal_value_is_ever_on_disk_in_clear(intake, tmp_path):
    work = tmp_path / "watch"
    work.mkdir()
    temp = work / "tmp"
    patterns = forms(PERSONAL)
    # Camden has no key at first: its packages are held, encrypted to the gateway's own key.
    camden_key = intake.root / "keys" / "ldor@camden.example.asc"
    kept = camden_key.read_text()
    camden_key.unlink()
    for message in sorted(MESSAGES_DIR.glob("*.eml")):
        intake.deliver(message.read_bytes())

    first = watched_run(intake, work, "intake")
    assert list((intake.root / "outbox").rglob("held/*")), "no package was held: the held path went unwatched"
    camden_key.write_text(kept)
    second = watched_run(intake, work, "release")

    # The run did what is watched: packages of both formats, and the held one released.
    names = [part.get_filename() or "" for message in intake.captured() for part in message.iter_attachments()]
    assert any(n.endswith(".xlsx.gpg") for n in names) and any(n.endswith(".csv.gpg") for n in names)
    assert any(n.endswith("-E09000007.xlsx.gpg") for n in names), "the held package was not released"

    allowed = (str(intake.root) + os.sep, str(temp) + os.sep, "/dev/")
    for report, traced, log in (first, second):
        written = set(report["written"]) | (traced.written if traced else set())
        assert sorted(p for p in written if not p.startswith(allowed)) == []
        assert report["leaks"] == {}, "a file held personal data in clear when it was removed"
        assert report["nameless"] == [], "a temporary file with no name, whose content cannot be checked"
        if traced:
            # The fork server that reads files in a child (gateway/isolate.py) binds a Unix socket
            # pymp-*/listener-* in the temp folder and its own process removes it: a socket holds no data.
            unseen = sorted(p for p in traced.removed - set(report["removed"])
                            if p.startswith(str(temp) + os.sep) and not re.search(r"/pymp-[^/]+/listener-[^/]+$", p))
            assert unseen == [], "files removed from the temp folder where the hook could not read them first"
        assert clear_values(log, patterns) == []
    assert tree_values(intake.root, patterns) == {}
    assert tree_values(temp, patterns) == {}


def test_the_watch_sees_a_temporary_file_written_and_removed(tmp_path):
    """The witness can fail: openpyxl's way of saving (each sheet's XML in a temporary file) is caught."""
    import io
    import tempfile

    import openpyxl
    from leakwatch import Watch, audit_hook

    watch = Watch((str(tmp_path),), forms(["Adeyemi"]))
    before = tempfile.tempdir
    tempfile.tempdir = str(tmp_path)
    try:
        with audit_hook(watch):
            book = openpyxl.Workbook()
            book.active.append(["Aisha", "Adeyemi"])
            book.save(io.BytesIO())
    finally:
        tempfile.tempdir = before
    assert list(tmp_path.iterdir()) == []  # gone before any scan could see it
    assert any(Path(p).name.startswith("openpyxl.") for p in watch.written)
    assert [hits for path, hits in watch.leaks.items() if Path(path).name.startswith("openpyxl.")] == [["Adeyemi"]]
