"""Hypothesis fuzzing (issue 9): unpack, read and validate on mangled input raise only the gateway's own errors.

Each test has a fixed budget (max_examples, deadline) and derandomize=True, so CI runs the same examples
every time. Reading runs each example in a forked child with a memory limit: a native abort (calamine
sizing a dense grid from a far cell) must show up as a failed example, not as the end of the test run.
"""

from __future__ import annotations

import io
import os
import re
import resource
import signal
import subprocess
import zipfile
from datetime import date, timedelta
from email.message import EmailMessage
from pathlib import Path
from types import MappingProxyType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from servers import kill_agents, prepare_gnupghome

from gateway.errors import GatewayError, ReadError, UnpackError
from gateway.intake.unpack import unpack
from gateway.keys import Keyring
from gateway.returns.read import HEADINGS, Return, Row, read_return
from gateway.returns.validate import validate
from gateway.rules import Provider, Rules

HOSTILE = Path(__file__).parent / "data" / "hostile" / "files"
KEYS = Path(__file__).parent / "data" / "messages" / "keys"
SENDER = "mis@example-college.example"
COLLEGE = Provider("10001234", "Example College", (SENDER,), "E09000019")
RULES = Rules(MappingProxyType({}), MappingProxyType({COLLEGE.ukprn: COLLEGE}))
EXAMPLES: dict[str, int] = {}


def _budget(examples: int, seconds: float | None):
    return settings(max_examples=examples, deadline=timedelta(seconds=seconds) if seconds else None, derandomize=True,
                    database=None, print_blob=False,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture])


def _count(name: str) -> None:
    EXAMPLES[name] = EXAMPLES.get(name, 0) + 1


@pytest.fixture(scope="module", autouse=True)
def report_examples():
    yield
    print(f"\nfuzz examples run: {EXAMPLES} ({sum(EXAMPLES.values())} in all)")


# -- reading, in a forked child ------------------------------------------------------------------------------
def _address_space() -> int:
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmSize:\s+(\d+) kB", status).group(1)) * 1024


def read_in_child(data: bytes) -> tuple[str, str]:
    """read_return(data) in a forked child with 1.5 GB more address space than now: ('ok'|'error type', text),
    or ('killed', signal name) when the child died of a signal."""
    reader, writer = os.pipe()
    limit = _address_space() + (3 << 29)
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        os.close(reader)
        try:
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
            resource.setrlimit(resource.RLIMIT_CPU, (20, 20))  # the time limit: SIGXCPU after 20 s of work
            try:
                read_return(data)
                answer = "ok\n"
            except ReadError as error:
                answer = f"ReadError\n{error.advice}"
            except BaseException as error:  # noqa: BLE001 - reported to the parent, which fails the example
                answer = f"{type(error).__module__}.{type(error).__name__}\n{error}"
            os.write(writer, answer.encode("utf-8", "replace")[:4000])
        finally:
            os._exit(0)
    os.close(writer)
    with os.fdopen(reader, "rb") as pipe:
        said = pipe.read().decode("utf-8", "replace")
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return "killed", signal.Signals(os.WTERMSIG(status)).name
    kind, _, text = said.partition("\n")
    return kind or "silent", text


def _entries(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as book:
        return {name: book.read(name) for name in book.namelist()}


def _rezip(entries: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as book:
        for name, content in entries.items():
            book.writestr(name, content)
    return out.getvalue()


WORKBOOKS = ["good_xlsx.xlsx", "hidden_stale_sheet.xlsx", "formula_heading.xlsx", "external_link.xlsx"]
CSVS = ["good_csv.csv", "csv_stray_quote.csv", "csv_utf16.csv", "csv_formula_heading.csv"]
_REF = re.compile(rb'r="([A-Z]+)([0-9]+)"')


@st.composite
def mangled_workbooks(draw) -> bytes:
    entries = _entries((HOSTILE / draw(st.sampled_from(WORKBOOKS))).read_bytes())
    name = draw(st.sampled_from(sorted(entries)))
    xml = entries[name]
    for _ in range(draw(st.integers(1, 4))):
        how = draw(st.sampled_from(["ref", "slice", "insert", "dimension", "truncate", "drop-entry"]))
        if how == "ref" and _REF.search(xml):
            refs = list(_REF.finditer(xml))
            pick = refs[draw(st.integers(0, len(refs) - 1))]
            letters = draw(st.sampled_from([b"A", b"Z", b"AA", b"XFD", b"XFE", b"ZZZZ", b""]))
            number = str(draw(st.sampled_from([0, 1, 9, 65536, 1048576, 1048577, 2**31, 2**64]))).encode()
            xml = xml[:pick.start()] + b'r="' + letters + number + b'"' + xml[pick.end():]
        elif how == "slice" and xml:
            at = draw(st.integers(0, len(xml) - 1))
            xml = xml[:at] + draw(st.binary(max_size=40)) + xml[at + draw(st.integers(0, 40)):]
        elif how == "insert":
            at = draw(st.integers(0, len(xml)))
            xml = xml[:at] + draw(st.sampled_from([b"<", b">", b"&", b"&lol;", b'"', b"<row>", b"</sheetData>", b"\x00",
                                                   b"<c t=\"s\"><v>99999</v></c>", b"<![CDATA[", b"\xff\xfe"])) + xml[at:]
        elif how == "dimension":
            xml = re.sub(rb"<sheetData", b'<dimension ref="A1:' + draw(st.sampled_from([b"XFD1048576", b"B2", b"ZZZZ9"]))
                         + b'"/><sheetData', xml, count=1)
        elif how == "truncate":
            xml = xml[: draw(st.integers(0, len(xml)))]
        elif how == "drop-entry" and len(entries) > 1:
            entries.pop(draw(st.sampled_from(sorted(e for e in entries if e != name))))
    entries[name] = xml
    return _rezip(entries)


@st.composite
def mangled_csvs(draw) -> bytes:
    data = (HOSTILE / draw(st.sampled_from(CSVS))).read_bytes()
    for _ in range(draw(st.integers(1, 5))):
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.sampled_from([b'"', b",", b"\r\n", b"\x00", b"\xff", b";", b"\t", b"=", b"\xef\xbb\xbf"])
                                 | st.binary(max_size=20)) + data[at + draw(st.integers(0, 10)):]
    return data


@_budget(300, None)  # bounded in the child by its CPU limit instead: a timing deadline would be flaky here
@given(mangled_workbooks())
def test_reading_a_mangled_workbook_raises_nothing_but_a_read_error(data):
    _count("read xlsx")
    kind, text = read_in_child(data)
    assert kind in ("ok", "ReadError"), f"{kind}: {text[:500]}"


@_budget(300, None)
@given(mangled_csvs() | st.binary(max_size=3000))
def test_reading_mangled_csv_or_noise_raises_nothing_but_a_read_error(data):
    _count("read csv")
    kind, text = read_in_child(data)
    assert kind in ("ok", "ReadError"), f"{kind}: {text[:500]}"


# -- unpacking ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def keyring(tmp_path_factory):
    home = prepare_gnupghome(tmp_path_factory.mktemp("fuzz") / "gnupg")
    subprocess.run(["gpg", "--batch", "--homedir", str(home), "--import", str(KEYS / "gateway.secret.asc")],
                   check=True, capture_output=True)
    yield Keyring(home)
    kill_agents(home)


@pytest.fixture(scope="module")
def sealed(keyring, tmp_path_factory) -> bytes:
    """The good workbook encrypted to the gateway's key once, as a provider's Kleopatra would."""
    import gnupg

    home = prepare_gnupghome(tmp_path_factory.mktemp("fuzz-provider") / "gnupg")
    gpg = gnupg.GPG(gnupghome=str(home))
    gpg.import_keys((KEYS / "gateway.public.asc").read_text())
    result = gpg.encrypt((HOSTILE / "good_xlsx.xlsx").read_bytes(), [keyring.own_fingerprint()], always_trust=True, armor=False)
    assert result.ok
    kill_agents(home)
    return result.data


def _message(sealed: bytes) -> bytes:
    message = EmailMessage()
    message["From"] = f"MIS <{SENDER}>"
    message["To"] = "ldor@example.org"
    message["Subject"] = "LDOR return"
    message.set_content("Attached.\n")
    message.add_attachment(sealed, maintype="application", subtype="octet-stream", filename="return.xlsx.gpg")
    message.add_attachment(b"ULN,Surname\r\n", maintype="text", subtype="csv", filename="notes.csv")
    return message.as_bytes()


_MIME_BITS = [b"\r\n", b"--", b"boundary=", b'"', b"Content-Type: multipart/mixed; boundary=x\r\n",
              b"Content-Transfer-Encoding: base64\r\n", b"Content-Type: message/rfc822\r\n", b"=?utf-8?b?", b"?=",
              b"filename*=utf-8''%00%0d", b"From: a@b\r\n", b"\x00", b"\xff", b"=\r\n", b"application/ms-tnef",
              b"-----BEGIN PGP MESSAGE-----", b"multipart/encrypted", b"message/delivery-status"]


@st.composite
def mangled_messages(draw, message: bytes) -> bytes:
    raw = message  # made once, outside the strategy: the email package draws MIME boundaries from `random`
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + draw(st.sampled_from(_MIME_BITS) | st.binary(max_size=30)) + raw[at + draw(st.integers(0, 30)):]
    return raw


def test_unpacking_mangled_messages_raises_only_gateway_errors(keyring, sealed):
    @_budget(200, 15)
    @given(mangled_messages(_message(sealed)))
    def check(raw: bytes) -> None:
        _count("unpack")
        try:
            unpack(raw, RULES, keyring)
        except (UnpackError, GatewayError):
            pass

    check()


# -- validating ---------------------------------------------------------------------------------------------------
_VALUES = (st.none() | st.text(max_size=30) | st.integers(-10**12, 10**12) | st.floats(allow_nan=True)
           | st.dates() | st.datetimes() | st.booleans()
           | st.sampled_from(["X", "Y", "yes", "✓", "1", "9999999999", "1000000043", "E1 6AX", "W1M0AA", "31/02/2009",
                              "540", "=HYPERLINK(\"x\")", "", " ", "\u202e", "\x00"]))


@st.composite
def tables(draw) -> Return:
    fields = draw(st.lists(st.sampled_from(sorted(HEADINGS)), min_size=1, max_size=len(HEADINGS), unique=True))
    headings = [draw(st.sampled_from(HEADINGS[f])) for f in fields]
    headings += draw(st.lists(st.text(max_size=12), max_size=2))
    rows = tuple(Row(9 + i, tuple(draw(_VALUES) for _ in headings)) for i in range(draw(st.integers(0, 12))))
    header = draw(st.dictionaries(st.sampled_from(["provider_name", "provider_number", "contact_name", "contact_tel",
                                                   "contact_email"]), st.text(max_size=12) | st.just("10001234")))
    return Return("Return", MappingProxyType(header), tuple(headings), MappingProxyType({f: i for i, f in enumerate(fields)}),
                  8, rows)


@_budget(500, 5)
@given(tables(), st.sampled_from([COLLEGE, None]), st.dates(date(2020, 1, 1), date(2035, 12, 31)))
def test_validating_any_table_gives_findings_never_an_exception(table, provider, today):
    _count("validate")
    checked = validate(table, provider, today)
    assert {f.severity for f in checked.findings} <= {"F", "E", "W"}
    assert len(checked.accepted) <= len(table.rows)
