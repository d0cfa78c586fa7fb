"""`gateway init`, `gateway keys import / list`, and `gateway check` proving the gateway's own key and
providers' password variables. Real gpg, real files in tmp_path."""

from __future__ import annotations

import re
import stat
import subprocess
from pathlib import Path

import pytest
from helpers import BOROUGHS, GATEWAY_ADDRESS
from servers import export_public, gnupg_home, kill_agents, make_key

from gateway.cli import main
from gateway.keys import Keyring

ISLINGTON = "ldor@islington.example"
BOROUGH = f'[E09000019]\nname = "Islington"\nrecipients = ["{ISLINGTON}"]\nformat = "xlsx"\n'
PROVIDER = ('[10001234]\nname = "Example College"\nsenders = ["mis@example-college.example"]\nhost_la = "E09000019"\n'
            'password_env = "LDOR_PW_10001234"\n')


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("GATEWAY_IMAP_PASSWORD", "imap-secret")
    monkeypatch.delenv("GATEWAY_GPG_PASSPHRASE", raising=False)
    root = tmp_path / "ldor"
    yield root
    kill_agents(root / "var" / "gnupg")


def init(root: Path, capsys, *options: str) -> tuple[int, str, str]:
    code = main(["init", str(root), "--address", GATEWAY_ADDRESS, *options])
    out, err = capsys.readouterr()
    return code, out, err


def check(root: Path, capsys) -> tuple[int, str]:
    code = main(["--config", str(root / "config.toml"), "check"])
    out, _ = capsys.readouterr()
    return code, out


def passphrase_of(out: str) -> str:
    return re.search(r"export GATEWAY_GPG_PASSPHRASE=(\S+)", out).group(1)


def test_init_then_check_has_only_the_advisories_of_an_empty_installation(root, capsys, monkeypatch):
    code, out, _ = init(root, capsys)
    assert code == 0
    for made in ("config.toml", "rules/boroughs.toml", "rules/providers.toml", "rules/routing.toml", "keys",
                 "keys-for-providers/ldor-gateway.asc"):
        assert (root / made).exists(), made
    passphrase = passphrase_of(out)
    assert passphrase not in (root / "config.toml").read_text()
    assert 'passphrase_env = "GATEWAY_GPG_PASSPHRASE"' in (root / "config.toml").read_text()
    assert not [p for p in root.rglob("*") if p.is_file() and passphrase.encode() in p.read_bytes()]
    assert "gateway --config" in out and "keys import" in out and "check" in out  # the next steps
    public = (root / "keys-for-providers" / "ldor-gateway.asc").read_text()
    assert "BEGIN PGP PUBLIC KEY BLOCK" in public and "PRIVATE" not in public
    monkeypatch.setenv("GATEWAY_GPG_PASSPHRASE", passphrase)
    code, report = check(root, capsys)
    assert code == 0, report
    assert all("warning:" in line for line in report.splitlines()[:-1]), report
    assert "no borough yet" in report and "no provider yet" in report


def test_the_key_has_a_passphrase_and_check_names_it_missing_or_wrong(root, capsys, monkeypatch):
    _, out, _ = init(root, capsys)
    code, report = check(root, capsys)  # GATEWAY_GPG_PASSPHRASE unset
    assert code == 1
    assert "needs a passphrase and the variable GATEWAY_GPG_PASSPHRASE ([gnupg] passphrase_env) is not set" in report
    monkeypatch.setenv("GATEWAY_GPG_PASSPHRASE", passphrase_of(out) + "x")
    code, report = check(root, capsys)
    assert code == 1
    assert "cannot be unlocked with the passphrase in GATEWAY_GPG_PASSPHRASE: it is wrong" in report
    config = root / "config.toml"
    config.write_text(config.read_text().replace('passphrase_env = "GATEWAY_GPG_PASSPHRASE"', "# no passphrase_env"))
    code, report = check(root, capsys)
    assert code == 1
    assert 'needs a passphrase: set [gnupg] passphrase_env = "GATEWAY_GPG_PASSPHRASE" in config.toml' in report


def test_no_passphrase_makes_an_open_key_and_says_what_that_costs(root, capsys):
    code, out, _ = init(root, capsys, "--no-passphrase")
    assert code == 0
    assert "NO passphrase" in out and "anyone who can read var/gnupg can decrypt" in out
    assert "export GATEWAY_GPG_PASSPHRASE" not in out
    assert "# passphrase_env" in (root / "config.toml").read_text()
    code, report = check(root, capsys)
    assert code == 0, report


def test_passphrase_file_holds_the_passphrase_alone(root, capsys, monkeypatch, tmp_path):
    secrets_file = tmp_path / "secrets.env"
    code, out, _ = init(root, capsys, "--passphrase-file", str(secrets_file))
    assert code == 0
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
    line = secrets_file.read_text().strip()
    assert line.startswith("GATEWAY_GPG_PASSPHRASE=")
    passphrase = line.partition("=")[2]
    assert passphrase not in out and "export GATEWAY_GPG_PASSPHRASE" not in out
    assert str(secrets_file) in out
    monkeypatch.setenv("GATEWAY_GPG_PASSPHRASE", passphrase)
    assert check(root, capsys)[0] == 0


def test_init_refuses_an_existing_installation(root, capsys):
    assert init(root, capsys, "--no-passphrase")[0] == 0
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    code, out, err = init(root, capsys)
    assert code == 2 and not out
    assert "already holds an installation" in err and "Traceback" not in err
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before


def test_a_provider_password_env_unset_is_a_check_problem(root, capsys, monkeypatch):
    init(root, capsys, "--no-passphrase")
    (root / "rules" / "providers.toml").write_text(PROVIDER)
    monkeypatch.delenv("LDOR_PW_10001234", raising=False)
    code, report = check(root, capsys)
    assert code == 1
    line = next(line for line in report.splitlines() if "LDOR_PW_10001234" in line)
    assert line.startswith(f"{root / 'rules' / 'providers.toml'}:1: provider 10001234 (Example College)")
    assert "its password-protected workbooks and zips cannot be opened" in line
    monkeypatch.setenv("LDOR_PW_10001234", "agreed")
    assert "LDOR_PW_10001234" not in check(root, capsys)[1]


def keys_cli(root: Path, capsys, *args: str) -> tuple[int, str, str]:
    code = main(["--config", str(root / "config.toml"), "keys", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_keys_import_files_a_key_under_its_address_and_says_whom_it_serves(root, capsys, keys, tmp_path):
    init(root, capsys, "--no-passphrase")
    (root / "rules" / "boroughs.toml").write_text(BOROUGH)
    given = tmp_path / "from-islington.asc"
    given.write_text(keys.borough_public[ISLINGTON])
    code, out, _ = keys_cli(root, capsys, "import", str(given))
    assert code == 0, out
    assert (root / "keys" / f"{ISLINGTON}.asc").exists()
    assert f"keys/{ISLINGTON}.asc" in out
    assert f"[E09000019] Islington: recipient {ISLINGTON}" in out
    assert "never expires" in out
    # The same key again: same file, no complaint; a different key for the address: refused without --replace.
    assert keys_cli(root, capsys, "import", str(given))[0] == 0
    with gnupg_home(tmp_path / "other") as home:
        other = tmp_path / "other.asc"
        other.write_text(export_public(home, make_key(home, "Officer", ISLINGTON, expire="10d")))
    code, _, err = keys_cli(root, capsys, "import", str(other))
    assert code == 2 and "already holds another key" in err and "--replace" in err
    code, out, _ = keys_cli(root, capsys, "import", str(other), "--replace")
    assert code == 0 and "EXPIRES SOON" in out


def test_keys_import_refuses_a_secret_key_and_a_file_that_is_no_key(root, capsys, tmp_path):
    init(root, capsys, "--no-passphrase")
    with gnupg_home(tmp_path / "owner") as home:
        make_key(home, "Officer", ISLINGTON)
        secret = subprocess.run(["gpg", "--homedir", str(home), "--batch", "--pinentry-mode", "loopback", "--passphrase", "",
                                 "--armor", "--export-secret-keys", ISLINGTON], capture_output=True, check=True).stdout
    leaked = tmp_path / "secret.asc"
    leaked.write_bytes(secret)
    code, out, err = keys_cli(root, capsys, "import", str(leaked))
    assert code == 2 and "holds a secret (private) key: nothing was copied" in err
    nothing = tmp_path / "notes.asc"
    nothing.write_text("not a key at all\n")
    code, out, err = keys_cli(root, capsys, "import", str(nothing))
    assert code == 2 and "holds no OpenPGP public key" in err
    assert not list((root / "keys").glob("*.asc"))
    assert Keyring(root / "var" / "gnupg").own_fingerprint()  # still exactly one secret key: the gateway's


def test_keys_list_shows_each_key_its_uses_and_flags_the_unused(root, capsys, keys, tmp_path):
    init(root, capsys, "--no-passphrase")
    (root / "rules" / "boroughs.toml").write_text(BOROUGH)
    for address in (ISLINGTON, BOROUGHS["E09000007"][1]):  # Camden's key: no table names it here
        (root / "keys" / f"{address}.asc").write_text(keys.borough_public[address])
    code, out, _ = keys_cli(root, capsys, "list")
    assert code == 0
    camden, islington = out.split("\n\n")  # in the order of their files' names
    assert f"keys/{ISLINGTON}.asc" in islington and "[E09000019] Islington: recipient" in islington
    assert "fingerprint" in islington and "user IDs" in islington and "never expires" in islington
    assert "camden" in camden and "UNUSED" in camden


def test_init_writes_the_shipped_rule_files_headers():
    """gateway/skeleton/ is what init writes; the repo's rules/ must begin with the same text."""
    repo = Path(__file__).resolve().parent.parent
    for name in ("boroughs.toml", "providers.toml", "routing.toml"):
        skeleton = (repo / "gateway" / "skeleton" / name).read_text()
        assert (repo / "rules" / name).read_text().startswith(skeleton), name
