"""From a raw message to the sender's provider and decrypted attachments, with the real gpg."""

from __future__ import annotations

from email.message import EmailMessage
from types import MappingProxyType

import gnupg
import pytest
from servers import export_public, gnupg_home, make_key

from gateway.errors import UnknownSender
from gateway.intake.unpack import parse, sender_of, unpack
from gateway.rules import Provider, Rules

SENDER = "mis@college.example"


@pytest.fixture
def provider_home(tmp_path, ring):
    with gnupg_home(tmp_path / "provider") as home:
        gnupg.GPG(gnupghome=str(home)).import_keys(ring.export_public(ring.own_fingerprint()))
        yield home


def _rules(**provider) -> Rules:
    college = Provider("10001234", "College", (SENDER,), **provider)
    return Rules(MappingProxyType({}), MappingProxyType({college.ukprn: college}))


def _encrypt(home, ring, data, armour=False, sign=None) -> bytes:
    result = gnupg.GPG(gnupghome=str(home)).encrypt(data, [ring.own_fingerprint()], always_trust=True, armor=armour, sign=sign)
    assert result.ok
    return result.data if not armour else bytes(str(result), "ascii")


def _message(*attachments, sender=SENDER) -> bytes:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = "ldor@example.org"
    message["Subject"] = "return"
    message.set_content("attached")
    for name, data in attachments:
        message.add_attachment(data, maintype="application", subtype="octet-stream", filename=name)
    return message.as_bytes()


def test_binary_and_armoured_attachments_are_each_decrypted(ring, provider_home):
    raw = _message(("a.xlsx.gpg", _encrypt(provider_home, ring, b"first")),
                   ("b.xlsx.asc", _encrypt(provider_home, ring, b"second", armour=True)))
    unpacked = unpack(raw, _rules(), ring)
    assert unpacked.provider.ukprn == "10001234" and unpacked.error is None
    assert [(a.index, a.data) for a in unpacked.attachments] == [(1, b"first"), (2, b"second")]
    assert all(len(a.sha256) == 64 and a.size > 0 for a in unpacked.attachments)


def test_an_unregistered_sender_is_refused(ring, provider_home):
    raw = _message(("a.gpg", _encrypt(provider_home, ring, b"x")), sender="other@elsewhere.example")
    with pytest.raises(UnknownSender):
        unpack(raw, _rules(), ring)


def test_two_from_headers_are_refused(ring):
    raw = _message().replace(b"From: ", b"From: boss@college.example\nFrom: ", 1)
    with pytest.raises(UnknownSender, match="2 From headers"):
        sender_of(parse(raw))


def test_a_from_header_with_two_addresses_is_refused():
    with pytest.raises(UnknownSender):
        sender_of(parse(_message(sender=f"{SENDER}, boss@college.example")))


def test_a_display_name_does_not_hide_the_address():
    assert sender_of(parse(_message(sender=f'"{SENDER}" <someone@evil.example>'))) == "someone@evil.example"


def test_a_clear_spreadsheet_is_not_opened_and_the_provider_is_told_to_encrypt(ring):
    from gateway.demo.sample import workbook

    unpacked = unpack(_message(("return.xlsx", workbook("College", "10001234", []))), _rules(), ring)
    assert unpacked.attachments == () and "without encryption" in unpacked.error.advice


def test_no_attachment_at_all_gets_advice(ring):
    unpacked = unpack(_message(), _rules(), ring)
    assert "no return attached" in unpacked.error.advice


def test_an_empty_attachment_is_a_file_problem(ring):
    (attachment,) = unpack(_message(("a.gpg", b"")), _rules(), ring).attachments
    assert attachment.data is None and "empty" in attachment.error.advice


def test_a_file_for_another_key_names_the_gateways_fingerprint(ring, tmp_path):
    with gnupg_home(tmp_path / "x") as home:
        fingerprint = make_key(home, "X", "x@example.org")
        data = gnupg.GPG(gnupghome=str(home)).encrypt(b"x", [fingerprint], always_trust=True, armor=False).data
    (attachment,) = unpack(_message(("a.gpg", data)), _rules(), ring).attachments
    assert "not the gateway's" in attachment.error.advice and ring.own_fingerprint() in attachment.error.advice


def test_required_signature_must_be_one_of_the_providers_keys(ring, provider_home, tmp_path):
    signer = make_key(provider_home, "College MIS", SENDER)
    ring.import_key(export_public(provider_home, signer))
    rules = _rules(signing_keys=(signer,), require_signature=True)
    signed = unpack(_message(("a.gpg", _encrypt(provider_home, ring, b"ok", sign=signer))), rules, ring)
    assert signed.attachments[0].data == b"ok" and signed.attachments[0].signer == signer
    unsigned = unpack(_message(("a.gpg", _encrypt(provider_home, ring, b"ok"))), rules, ring)
    assert unsigned.attachments[0].data is None and "must be signed" in unsigned.attachments[0].error.advice
