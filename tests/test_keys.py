"""The keyring with the real gpg: choosing a recipient's key, and refusing unsafe decryptions."""

from __future__ import annotations

import subprocess

import gnupg
import pytest
from servers import export_public, gnupg_home, make_key

from gateway.errors import KeyringError, NoUsableKey


@pytest.fixture
def other(tmp_path):
    with gnupg_home(tmp_path / "other") as home:
        yield home


def _publish(folder, name, armoured):
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(armoured)


def test_the_one_valid_key_for_an_address_is_chosen(ring, other, tmp_path):
    fingerprint = make_key(other, "Officer", "ldor@camden.example")
    _publish(tmp_path / "keys", "camden.asc", export_public(other, fingerprint))
    assert ring.import_folder(tmp_path / "keys") == []
    assert ring.key_for("LDOR@Camden.example") == fingerprint
    with pytest.raises(NoUsableKey, match="no public key"):
        ring.key_for("ldor@islington.example")


def test_two_valid_keys_for_one_address_are_refused(ring, tmp_path):
    keys = tmp_path / "keys"
    for n in (1, 2):
        with gnupg_home(tmp_path / f"k{n}") as home:
            _publish(keys, f"{n}.asc", export_public(home, make_key(home, "Officer", "ldor@camden.example")))
    ring.import_folder(keys)
    with pytest.raises(NoUsableKey, match="2 valid keys"):
        ring.key_for("ldor@camden.example")


def test_an_expired_key_is_not_used(ring, other, tmp_path):
    fingerprint = make_key(other, "Officer", "ldor@camden.example", expire="seconds=1")
    _publish(tmp_path / "keys", "camden.asc", export_public(other, fingerprint))
    import time

    time.sleep(2)
    ring.import_folder(tmp_path / "keys")
    with pytest.raises(NoUsableKey, match="expired"):
        ring.key_for("ldor@camden.example")


def test_a_key_removed_from_keys_folder_no_longer_counts(ring, other, tmp_path):
    fingerprint = make_key(other, "Officer", "ldor@camden.example")
    _publish(tmp_path / "keys", "camden.asc", export_public(other, fingerprint))
    ring.import_folder(tmp_path / "keys")
    (tmp_path / "keys" / "camden.asc").unlink()
    ring.import_folder(tmp_path / "keys")
    with pytest.raises(NoUsableKey):
        ring.key_for("ldor@camden.example")


def test_a_file_in_keys_that_is_not_a_key_is_a_problem(ring, tmp_path):
    _publish(tmp_path / "keys", "junk.asc", "not a key\n")
    [problem] = ring.import_folder(tmp_path / "keys")
    assert problem.file.name == "junk.asc" and "no OpenPGP public key" in problem.message


def _encrypt_to(home, keyring, data, *extra):
    gpg = gnupg.GPG(gnupghome=str(home))
    gpg.import_keys(keyring.export_public(keyring.own_fingerprint()))
    return gpg.encrypt(data, [keyring.own_fingerprint()], always_trust=True, armor=False, extra_args=list(extra)).data


def test_decrypts_an_integrity_protected_file_and_notes_a_good_signature(ring, other):
    signer = make_key(other, "Provider", "mis@college.example")
    gpg = gnupg.GPG(gnupghome=str(other))
    gpg.import_keys(ring.export_public(ring.own_fingerprint()))
    ciphertext = gpg.encrypt(b"return", [ring.own_fingerprint()], always_trust=True, armor=False, sign=signer).data
    ring.import_key(export_public(other, signer))
    decrypted = ring.decrypt(ciphertext)
    assert decrypted.data == b"return"
    assert decrypted.signature.present and not decrypted.signature.bad and decrypted.signer == signer


def test_a_file_without_integrity_protection_is_refused(ring, other):
    ciphertext = _encrypt_to(other, ring, b"return", "--rfc2440")
    with pytest.raises(KeyringError, match="integrity"):
        ring.decrypt(ciphertext)


def test_a_file_for_another_key_is_refused_with_that_reason(ring, other):
    fingerprint = make_key(other, "Someone", "someone@example.org")
    ciphertext = gnupg.GPG(gnupghome=str(other)).encrypt(b"x", [fingerprint], always_trust=True, armor=False).data
    with pytest.raises(KeyringError, match="not the gateway's"):
        ring.decrypt(ciphertext)


def test_a_passphrase_encrypted_file_is_refused(ring, tmp_path):
    result = subprocess.run(
        ["gpg", "--batch", "--homedir", str(ring.home), "--passphrase", "shared", "--pinentry-mode", "loopback", "-c", "-o", "-"],
        input=b"return", capture_output=True, check=True,
    )
    with pytest.raises(KeyringError):
        ring.decrypt(result.stdout)


def test_bytes_that_are_not_openpgp_are_refused(ring):
    with pytest.raises(KeyringError, match="not OpenPGP"):
        ring.decrypt(b"PK\x03\x04 this is a zip, not a PGP file")


def test_a_damaged_file_is_refused(ring, other):
    ciphertext = bytearray(_encrypt_to(other, ring, b"x" * 2000))
    ciphertext[-40] ^= 0xFF
    with pytest.raises(KeyringError):
        ring.decrypt(bytes(ciphertext))
