"""Intake (issue 3): every way providers send returns today is accepted, and only from who they say they are.

Each golden message in tests/data/messages/ (written by make.py there) is delivered into a real Dovecot,
the gateway runs once on it (`gateway run --once` through gateway.cli.main), and what happens is
compared with expected.json beside the messages: the folder the message ends in, the receipts the
provider gets, the packages each borough gets, whether the administrator is alerted, and that no
personal value from the return travels in clear.
"""

from __future__ import annotations

import csv
import email
import email.policy
import io
import json
import re
import resource
import shutil
import subprocess
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import gnupg
import openpyxl
import pytest
import pyzipper
from helpers import (
    ADMIN,
    BOROUGHS,
    GATEWAY_ADDRESS,
    PROVIDER_SENDER,
    Keys,
    attachments_of,
    provider_message,
    read_xlsx,
)
from servers import Dovecot, SmtpCapture, kill_agents, prepare_gnupghome

from gateway.admin.scaffold import write_installation
from gateway.delivery.pack import HEADINGS
from gateway.demo.sample import people, workbook
from gateway.reference.postcodes import Directory

MESSAGES_DIR = Path(__file__).parent / "data" / "messages"
KEYS_DIR = MESSAGES_DIR / "keys"
GOLDEN = json.loads((MESSAGES_DIR / "expected.json").read_text(encoding="utf-8"))
EXPECTED: dict[str, dict] = GOLDEN["messages"]
PROVIDERS: dict[str, dict] = GOLDEN["providers"]
GATEWAY_FPR: str = GOLDEN["keys"]["gateway"]
COLLEGE = PROVIDERS["10001234"]
ACADEMY = PROVIDERS["10005678"]
ULN = HEADINGS.index("ULN")  # where a package row holds the ULN
BOROUGH_ADDRESSES = {address for _, address, _ in BOROUGHS.values()}
ACKNOWLEDGEMENT, REJECTION = "LDOR receipt", "LDOR return not accepted"
_REFERENCE = re.compile(r"^(?:LDOR receipt|LDOR return not accepted)\s+([^\s:]+)")


@dataclass
class Intake:
    """A gateway installation whose own key is the committed golden gateway key, and both golden providers."""

    root: Path
    config: Path
    imap: Dovecot
    smtp: SmtpCapture
    keys: Keys

    def run_once(self) -> int:
        from gateway.cli import main

        return main(["--config", str(self.config), "run", "--once"])

    def deliver(self, raw: bytes) -> None:
        self.imap.append(raw)

    def captured(self) -> list[EmailMessage]:
        return [email.message_from_bytes(m.data, policy=email.policy.default) for m in self.smtp.messages]

    def count(self, folder: str) -> int:
        try:
            return len(self.imap.list_uids(folder))
        except Exception:  # the folder was never created: nothing was moved there
            return 0


def _gpg(home: Path, *args: str) -> None:
    result = subprocess.run(["gpg", "--batch", "--no-tty", "--homedir", str(home), *args],
                            capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr.decode(errors="replace")


def _providers_toml(text: str) -> str:
    """write_installation writes simple providers only: add each one's optional keys under its own table."""
    extra = {
        "10001234": f'password_env = "{COLLEGE["password_env"]}"\n',
        "10005678": "signing_keys = [{}]\nrequire_signature = true\n".format(
            ", ".join(f'"{fpr}"' for fpr in ACADEMY["signing_keys"])),
    }
    for ukprn, lines in extra.items():
        header = f"[{ukprn}]\n"
        assert text.count(header) == 1, text
        text = text.replace(header, header + lines)
    return text


@pytest.fixture
def intake(request, tmp_path, imap, smtp, keys, monkeypatch) -> Intake:
    """The installation; indirect parameter: which providers' public keys are in keys/ (default both).

    The academy's must always be there (its signing key). A provider whose key is in keys/ gets its
    receipts encrypted to it; one without gets them in clear."""
    providers_with_keys = getattr(request, "param", ("college", "academy"))
    assert "academy" in providers_with_keys
    root = tmp_path / "gateway"
    (root / "keys").mkdir(parents=True)
    home = prepare_gnupghome(root / "var" / "gnupg")
    _gpg(home, "--import", str(KEYS_DIR / "gateway.secret.asc"))
    for address, public in keys.borough_public.items():
        (root / "keys" / f"{address}.asc").write_text(public)
    # The providers' public keys, so that their signatures can be checked (keys/ holds them, DESIGN.md).
    for name in providers_with_keys:
        shutil.copy(KEYS_DIR / f"{name}.public.asc", root / "keys" / f"{name}.asc")
    config = write_installation(
        root, imap=(imap.host, imap.port, imap.user, "TEST_IMAP_PASSWORD"), smtp=(smtp.host, smtp.port),
        sender=GATEWAY_ADDRESS, admin=ADMIN, boroughs=BOROUGHS,
        providers=[(ukprn, p["name"], p["senders"][0], p["host_la"]) for ukprn, p in PROVIDERS.items()], timeout=10,
    )
    providers = root / "rules" / "providers.toml"
    providers.write_text(_providers_toml(providers.read_text()))
    monkeypatch.setenv("TEST_IMAP_PASSWORD", imap.password)
    monkeypatch.setenv(COLLEGE["password_env"], COLLEGE["password"])
    yield Intake(root, config, imap, smtp, keys)
    kill_agents(home)


# -- what a captured message says ---------------------------------------------------------------------
def _reference(message: EmailMessage) -> str:
    match = _REFERENCE.match(str(message["Subject"]))
    assert match, f"a receipt's subject names no reference: {message['Subject']!r}"
    return match.group(1)


def _body(message: EmailMessage) -> str:
    body = message.get_body(("plain",))
    assert body is not None, f"no text/plain body in {message.get_content_type()} {message['Subject']!r}"
    return body.get_content()


@pytest.fixture(scope="module")
def providers_gpg(tmp_path_factory):
    """The providers' own keyring (the golden college and academy secret keys): opens receipts sealed to them."""
    home = prepare_gnupghome(tmp_path_factory.mktemp("providers") / "gnupg")
    for name in ("college", "academy"):
        _gpg(home, "--import", str(KEYS_DIR / f"{name}.secret.asc"))
    yield gnupg.GPG(gnupghome=str(home))
    kill_agents(home)


def opened(receipt: EmailMessage, gpg: gnupg.GPG) -> EmailMessage:
    """A receipt as the provider reads it: a PGP/MIME one decrypted with the provider's key, else itself."""
    if receipt.get_content_type() != "multipart/encrypted":
        return receipt
    parts = [p for p in receipt.iter_parts() if p.get_content_type() == "application/octet-stream"]
    assert len(parts) == 1, "a PGP/MIME receipt must hold exactly one encrypted part"
    result = gpg.decrypt(parts[0].get_payload(decode=True), always_trust=True)
    assert result.ok, f"the receipt {receipt['Subject']!r} does not decrypt with the provider's key: {result.status}"
    return email.message_from_bytes(result.data, policy=email.policy.default)


def _key_fingerprints(armoured: bytes, tmp_path: Path) -> list[str]:
    scanned = gnupg.GPG(gnupghome=str(prepare_gnupghome(tmp_path / "scan"))).scan_keys_mem(armoured.decode())
    return [k["fingerprint"] for k in scanned]


def _is_openpgp(data: bytes) -> bool:
    """Ciphertext or a public key: OpenPGP data, which a clear-text check must skip (it is random bytes)."""
    head = data.lstrip()[:40]
    return head.startswith((b"-----BEGIN PGP MESSAGE-----", b"-----BEGIN PGP PUBLIC KEY BLOCK-----")) or (
        bool(data) and data[0] in (0x84, 0x85, 0x86, 0xC1))


def _clear_parts(message: EmailMessage) -> list[bytes]:
    """Every piece of a message a reader sees without a key: headers, preambles, each non-OpenPGP part decoded."""
    pieces = []
    for part in message.walk():
        pieces.append("\n".join(f"{k}: {v}" for k, v in part.items()).encode("utf-8", "surrogateescape"))
        pieces += [(getattr(part, a) or "").encode("utf-8", "surrogateescape") for a in ("preamble", "epilogue")]
        if part.is_multipart():
            continue
        payload = part.get_payload(decode=True) or b""
        if not _is_openpgp(payload):
            pieces.append(payload)
    return pieces


def assert_nothing_personal_in_clear(captured: list[EmailMessage], personal: list[str]) -> None:
    assert personal, "the golden expectation lists no personal values to look for"
    for message in captured:
        pieces = _clear_parts(message)
        for value in personal:
            for encoded in {value.encode("utf-8"), value.encode("cp1252", "ignore")}:
                assert not any(encoded in piece for piece in pieces), (
                    f"a personal value travels in clear in the mail to {message['To']} ({message['Subject']})")


def package_rows(message: EmailMessage, keys: Keys) -> list[list[object]]:
    """The data rows of one borough package, decrypted with that borough's own key."""
    address = str(message["To"])
    (name, data), = attachments_of(message).items()
    result = gnupg.GPG(gnupghome=str(keys.borough_homes[address])).decrypt(data)
    assert result.ok, f"the package for {address} does not decrypt with its key: {result.status}"
    if name.endswith(".csv.gpg"):
        rows = list(csv.reader(io.StringIO(result.data.decode("utf-8-sig"))))
    else:
        rows = read_xlsx(result.data)
    assert rows and tuple(rows[0]) == HEADINGS  # one layout for every package
    return rows[1:]


def check_outcome(intake: Intake, expected: dict, sender: str | None, tmp_path: Path, gpg: gnupg.GPG) -> list[EmailMessage]:
    """Assert everything expected.json says of one delivered message; return the receipts, in reference order."""
    folder = expected["folder"]
    other = "Quarantine" if folder == "Processed" else "Processed"
    assert intake.imap.list_uids("INBOX") == [], "the message is still in INBOX"
    assert intake.count(folder) == 1, f"the message is not in {folder}"
    assert intake.count(other) == 0, f"the message went to {other}, not {folder}"

    captured = intake.captured()
    to_admin = [m for m in captured if str(m["To"]) == ADMIN]
    to_boroughs = [m for m in captured if str(m["To"]) in BOROUGH_ADDRESSES]
    receipts = [m for m in captured if str(m["To"]) not in BOROUGH_ADDRESSES | {ADMIN}]

    # The administrator.
    if expected["admin_alert"]:
        assert to_admin, "the administrator was not alerted"
    else:
        assert not to_admin, f"the administrator was alerted: {[str(m['Subject']) for m in to_admin]}"

    # The provider: one receipt per return, and nobody else answered (an unknown sender gets no reply).
    assert len(receipts) == len(expected["receipts"]), (
        f"expected {len(expected['receipts'])} receipt(s), got {[(str(m['To']), str(m['Subject'])) for m in receipts]}")
    for receipt in receipts:
        assert str(receipt["To"]) == sender
    receipts.sort(key=lambda m: (len(_reference(m)), _reference(m)))
    for receipt, want in zip(receipts, expected["receipts"], strict=False):
        inside = opened(receipt, gpg)
        subject, body = str(receipt["Subject"]), _body(inside)
        prefix = ACKNOWLEDGEMENT if want["kind"] == "receipt" else REJECTION
        assert subject.startswith(prefix), f"expected a {want['kind']}, got {subject!r}:\n{body}"
        if want["kind"] == "receipt":
            assert re.search(rf"Rows forwarded:\s+{want['rows_forwarded']}\b", body), body
        for rule in want["rules"]:
            assert rule in body, f"rule {rule} is not in the {want['kind']}:\n{body}"
        for phrase in want["phrases"]:
            phrase = phrase.replace("{gateway_fingerprint}", GATEWAY_FPR)
            assert phrase.lower() in body.lower(), f"{phrase!r} is not in the {want['kind']}:\n{body}"
        files = attachments_of(inside)
        assert "ldor-gateway-key.asc" in files, f"the gateway's key is not attached to {subject!r}"
        assert _key_fingerprints(files["ldor-gateway-key.asc"], tmp_path) == [GATEWAY_FPR]

    # The boroughs: exactly the rows expected, each package readable with the borough's own key only.
    got: dict[str, int] = {}
    for message in to_boroughs:
        rows = package_rows(message, intake.keys)
        got[str(message["To"])] = got.get(str(message["To"]), 0) + len(rows)
        for row in rows:
            assert str(row[ULN]) in expected["personal"], "a package holds a row that is not from this message"
    assert got == expected["packages"]

    assert_nothing_personal_in_clear(captured, expected["personal"])
    return receipts


# -- the golden messages --------------------------------------------------------------------------------
def _sender(raw: bytes) -> str | None:
    froms = email.message_from_bytes(raw, policy=email.policy.default).get_all("From") or []
    return froms[0].addresses[0].addr_spec if len(froms) == 1 else None


SEALED, CLEAR = ("college", "academy"), ("academy",)


def _cases() -> list:
    """Every message with both providers' keys in keys/ (receipts sealed to them); the college's messages
    once more without its key (receipts in clear, where nothing personal may show)."""
    cases = [pytest.param(name, SEALED, id=f"{name}-sealed") for name in sorted(EXPECTED)]
    for name in sorted(EXPECTED):
        if _sender((MESSAGES_DIR / name).read_bytes()) == COLLEGE["senders"][0]:
            cases.append(pytest.param(name, CLEAR, id=f"{name}-clear"))
    return cases


@pytest.mark.parametrize(("name", "intake"), _cases(), indirect=["intake"])
def test_golden_message(intake, name, tmp_path, providers_gpg):
    expected = EXPECTED[name]
    raw = (MESSAGES_DIR / name).read_bytes()
    intake.deliver(raw)

    assert intake.run_once() == 0

    check_outcome(intake, expected, _sender(raw), tmp_path, providers_gpg)


def test_the_golden_set_covers_the_issue():
    """Every form and negative case the issue names has a golden message (a guard against a thin make.py)."""
    needed = {
        "pgpmime_encrypted", "pgpmime_signed_combined", "pgpmime_signed_inner", "inline_pgp", "gpg_binary",
        "pgp_binary_signed", "asc_armoured", "asc_armoured_signed", "several_returns", "forwarded_rfc822",
        "protected_xlsx", "aes_zip_xlsx", "aes_zip_csv", "zipcrypto_zip", "xlsm_in_pgp", "ods_in_pgp",
        "csv_utf8_in_pgp", "csv_utf8_bom_in_pgp", "csv_cp1252_in_pgp", "rfc2231_name", "encoded_word_name",
        "wrong_key", "wrong_password_xlsx", "wrong_password_zip", "no_mdc", "two_from", "signed_by_other_provider",
        "unsigned_but_required", "provider_mismatch", "unknown_sender", "corrupt_zip", "empty_attachment", "clear_xlsx",
    }
    assert needed <= {name.removesuffix(".eml") for name in EXPECTED}
    assert all((MESSAGES_DIR / name).is_file() for name in EXPECTED)
    rejections = [r for e in EXPECTED.values() for r in e["receipts"] if r["kind"] == "rejection"]
    assert all(r["phrases"] or r["rules"] for r in rejections), "each rejection must be checked for what it says"


# -- the same return twice ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def college_gpg(tmp_path_factory):
    """A provider's keyring holding the gateway's golden public key, to encrypt returns at test time."""
    home = prepare_gnupghome(tmp_path_factory.mktemp("college") / "gnupg")
    gpg = gnupg.GPG(gnupghome=str(home))
    assert gpg.import_keys((KEYS_DIR / "gateway.public.asc").read_text()).fingerprints == [GATEWAY_FPR]
    yield gpg
    kill_agents(home)


def _encrypt(gpg: gnupg.GPG, data: bytes) -> bytes:
    result = gpg.encrypt(data, [GATEWAY_FPR], always_trust=True, armor=False)
    assert result.ok, result.status
    return result.data


@pytest.mark.parametrize("intake", [SEALED, CLEAR], ids=["sealed", "clear"], indirect=True)
@pytest.mark.parametrize("runs", ["two runs", "one run"])
def test_the_same_return_sent_twice_is_forwarded_once(intake, college_gpg, providers_gpg, runs, tmp_path):
    crowd = people(Directory(), {"E09000019": 2, "E09000007": 2, "E09000012": 1}, seed=4242)
    xlsx = workbook("Example College", "10001234", [p.cells() for p in crowd])
    sender = COLLEGE["senders"][0]
    first, second = (provider_message([("return.xlsx.gpg", _encrypt(college_gpg, xlsx))], sender=sender) for _ in "12")
    assert first != second  # two separate encryptions of one file: only the decrypted file is the same

    intake.deliver(first)
    if runs == "two runs":
        assert intake.run_once() == 0
    intake.deliver(second)
    assert intake.run_once() == 0

    assert intake.imap.list_uids("INBOX") == []
    captured = intake.captured()
    receipts = [(m, opened(m, providers_gpg)) for m in captured if str(m["To"]) == sender]
    packages = [m for m in captured if str(m["To"]) in BOROUGH_ADDRESSES]
    assert len(receipts) == 2, [str(m["Subject"]) for m, _ in receipts]
    forwarded = [pair for pair in receipts if re.search(r"Rows forwarded:\s+5\b", _body(pair[1]))]
    assert len(forwarded) == 1, "the return must be forwarded exactly once"
    (original, _), = forwarded
    (duplicate, inside), = [pair for pair in receipts if pair[0] is not original]
    assert str(original["Subject"]).startswith(ACKNOWLEDGEMENT)
    earlier = _reference(original)
    text = _body(inside)
    assert _reference(duplicate) != earlier
    assert earlier in text, f"the duplicate's receipt does not name the earlier reference {earlier}:\n{text}"
    assert re.search(r"duplicate|identical", text, re.I), f"the receipt does not say it is a duplicate:\n{text}"
    assert not re.search(r"Rows forwarded:\s+[1-9]", text)
    assert _key_fingerprints(attachments_of(inside)["ldor-gateway-key.asc"], tmp_path) == [GATEWAY_FPR]
    # The boroughs got the rows once: 2 + 2 + 1 rows in one package each.
    assert sorted(len(package_rows(m, intake.keys)) for m in packages) == [1, 2, 2]
    assert intake.count("Processed") == 2
    personal = sorted({v for p in crowd for v in (p.family_name, p.uln, p.postcode, p.postcode.replace(" ", ""))})
    assert_nothing_personal_in_clear(captured, personal)


# -- a zip bomb ------------------------------------------------------------------------------------------
def _zip_bomb(password: str) -> bytes:
    """An AES zip with the right password whose one member inflates to 200 MB of zeros (about 200 kB packed)."""
    out = io.BytesIO()
    with pyzipper.AESZipFile(out, "w", compression=pyzipper.ZIP_DEFLATED, encryption=pyzipper.WZ_AES) as archive:
        archive.setpassword(password.encode())
        with archive.open("return.xlsx", "w") as member:  # streamed: the test itself never holds 200 MB
            chunk = bytes(1 << 20)
            for _ in range(200):
                member.write(chunk)
    return out.getvalue()


def test_a_zip_bomb_is_quarantined_the_administrator_told_and_the_provider_told_the_limit(intake, providers_gpg):
    bomb = _zip_bomb(COLLEGE["password"])
    assert len(bomb) < 1_000_000
    sender = COLLEGE["senders"][0]
    message = EmailMessage()
    message["From"] = f"MIS Team <{sender}>"
    message["To"] = GATEWAY_ADDRESS
    message["Subject"] = "LDOR return"
    message.set_content("Zip password as agreed.\n")
    message.add_attachment(bomb, maintype="application", subtype="zip", filename="return.zip")
    intake.deliver(message.as_bytes())
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux

    assert intake.run_once() == 0

    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert intake.imap.list_uids("INBOX") == []
    assert intake.count("Quarantine") == 1
    assert intake.count("Processed") == 0
    captured = intake.captured()
    assert sorted(str(m["To"]) for m in captured) == sorted([ADMIN, sender]), [(str(m["To"]), str(m["Subject"])) for m in captured]
    [answer] = [m for m in captured if str(m["To"]) == sender]
    assert str(answer["Subject"]).startswith(REJECTION)
    text = " ".join(_body(opened(answer, providers_gpg)).split())
    assert "50 MB" in text and "split" in text and ".xlsx" in text
    [notice] = [m for m in captured if str(m["To"]) == ADMIN]
    assert "was sent a rejection" in " ".join(_body(notice).split())
    assert grown < 150 * 1024, f"the gateway's memory grew by {grown // 1024} MB: the member was inflated"


# -- the table chosen by its data; a nil return (issue 10, item 3) ---------------------------------------
def _instructions_first(rows: list[list[object]]) -> bytes:
    """The template as providers fill it, its Instructions sheet first, naming three headings in one row."""
    book = openpyxl.load_workbook(io.BytesIO(workbook("Example College", "10001234", rows)))
    assert book.sheetnames == ["Instructions", "Return"]
    book["Instructions"].append(["Columns to fill in:", "Surname", "Forename", "Postcode"])
    book["Instructions"].append(["Tick one of Joiner, Leaver or At risk on each row."])
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


def _plain_receipt(deployment) -> tuple[EmailMessage, str]:
    [receipt] = [m for m in deployment.captured() if str(m["To"]) == PROVIDER_SENDER]
    return receipt, _body(receipt)


def test_an_instructions_sheet_naming_headings_does_not_hide_the_return_behind_it(deployment, keys):
    crowd = people(Directory(), {"E09000019": 12, "E09000007": 11, "E09000012": 10}, seed=310)
    assert len(crowd) == 33
    xlsx = _instructions_first([p.cells() for p in crowd])
    deployment.deliver(provider_message([("Leavers.xlsx.gpg", keys.encrypt_for_gateway(xlsx))]))

    assert deployment.run_once() == 0

    captured = deployment.captured()
    packages = {str(m["To"]): m for m in captured if str(m["To"]) in BOROUGH_ADDRESSES}
    assert set(packages) == BOROUGH_ADDRESSES
    for code, (_, address, _) in BOROUGHS.items():
        rows = package_rows(packages[address], keys)
        expected = {p.uln for p in crowd if Directory().authority(p.postcode) == code}
        assert {str(r[ULN]) for r in rows} == expected and len(expected) >= 10
    receipt, body = _plain_receipt(deployment)
    assert "33 of 33 rows forwarded" in str(receipt["Subject"])
    assert re.search(r"Rows read:\s+33\b", body) and re.search(r"Rows forwarded:\s+33\b", body)
    assert "nil return" not in body.lower()


def test_a_nil_return_is_answered_as_one_not_thanked_for_forwarding_every_row(deployment, keys):
    xlsx = _instructions_first([])
    deployment.deliver(provider_message([("Leavers.xlsx.gpg", keys.encrypt_for_gateway(xlsx))]))

    assert deployment.run_once() == 0

    assert len(deployment.imap.list_uids("Processed")) == 1
    captured = deployment.captured()
    assert [str(m["To"]) for m in captured] == [PROVIDER_SENDER]  # no package to any borough
    receipt, body = _plain_receipt(deployment)
    assert str(receipt["Subject"]).startswith(ACKNOWLEDGEMENT) and "nil return" in str(receipt["Subject"])
    flat = " ".join(body.split())
    assert "Nil return" in flat
    assert "you told us of no young people this month; if that is wrong, send the return again with the rows" in flat.lower()
    assert "every row was forwarded" not in flat
