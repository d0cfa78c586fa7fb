"""`gateway check` after config.toml: every problem in rules/, routing.toml and keys/ on its own line,
with its file, its line and what to do; pinned keys honoured. Real gpg keys, real files."""

from __future__ import annotations

import re
import shutil
import subprocess
import textwrap
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import gnupg
import pytest
from helpers import GATEWAY_ADDRESS, PROVIDER_SENDER, install
from servers import export_public, gnupg_home, kill_agents, make_key

from gateway import config as config_module
from gateway.admin.check import Advisory, check_installation
from gateway.errors import Problem
from gateway.keys import Keyring

DAY = 86400


@dataclass
class Installation:
    root: Path
    settings: config_module.Config
    tmp: Path

    @property
    def boroughs(self) -> Path:
        return self.root / "rules" / "boroughs.toml"

    @property
    def providers(self) -> Path:
        return self.root / "rules" / "providers.toml"

    @property
    def routing(self) -> Path:
        return self.root / "rules" / "routing.toml"

    def key(self, address: str, expire: str = "0", name: str = "Officer", publish: bool = True) -> str:
        """A new key for `address` (put in keys/ unless told not to); its fingerprint."""
        with gnupg_home(self.tmp / f"key-{len(list(self.tmp.glob('key-*')))}") as home:
            fingerprint = make_key(home, name, address, expire=expire)
            if publish:
                (self.root / "keys" / f"{fingerprint}.asc").write_text(export_public(home, fingerprint))
        return fingerprint

    def edit(self, path: Path, old: str, new: str) -> str:
        text = path.read_text()
        assert old in text
        path.write_text(text.replace(old, new, 1))
        return path.read_text()


@pytest.fixture
def installation(tmp_path, keys, monkeypatch) -> Installation:
    """An installation as `gateway check` sees it: config, rules, keys/ and the gateway's keyring; no servers."""
    root = tmp_path / "gateway"
    config = install(root, keys, ("127.0.0.1", 993, GATEWAY_ADDRESS, "TEST_IMAP_PASSWORD"), ("127.0.0.1", 587))
    monkeypatch.setenv("TEST_IMAP_PASSWORD", "secret")
    yield Installation(root, config_module.load(config), tmp_path)
    kill_agents(root / "var" / "gnupg")


def line_of(path: Path, fragment: str, after: str | None = None) -> int:
    """The line of the first `fragment` (after the line holding `after`, when given)."""
    lines = path.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if after in line) if after else 0
    return next(i for i, line in enumerate(lines[start:], start=start + 1) if fragment in line)


def only(problems: list[Problem]) -> Problem:
    assert len(problems) == 1, "\n".join(map(str, problems))
    return problems[0]


def check(installation: Installation, directory, now: float | None = None) -> list[Problem]:
    return check_installation(installation.settings, directory, now)


def day(seconds: float):
    return datetime.fromtimestamp(seconds, UTC).date()


def test_a_complete_installation_has_no_problems(installation, directory):
    assert check(installation, directory) == []


def test_each_problem_is_one_line_with_file_line_and_message(installation, directory):
    installation.edit(installation.boroughs, "[E09000012]", "[E09000099]")
    problem = only(check(installation, directory))
    assert str(problem) == f"{installation.boroughs}:{line_of(installation.boroughs, '[E09000099]')}: {problem.message}"
    assert "[E09000099] is not a known local authority code (London boroughs are E09000001 to E09000033)" in problem.message


def test_counties_and_metropolitan_districts_can_be_configured(installation, directory):
    """Essex (E10000012) and Leeds (E08000035) beside the London boroughs, served by a recipient already known."""
    text = installation.boroughs.read_text()
    installation.boroughs.write_text(text + '\n[E10000012]\nrecipients = ["ldor@camden.example"]\n\n[E08000035]\nname = "Leeds"\nrecipients = ["ldor@camden.example"]\n')
    assert check(installation, directory) == []


def test_a_mistyped_authority_code_is_answered_with_a_suggestion(installation, directory):
    installation.boroughs.write_text(installation.boroughs.read_text() + '\n[E10000061]\nrecipients = ["ldor@camden.example"]\n'
                                     '\n[E07000070]\nname = "Essex"\nrecipients = ["ldor@camden.example"]\n')
    typo, district = check(installation, directory)
    assert typo.line == line_of(installation.boroughs, "[E10000061]")
    assert typo.message == "[E10000061] is not a known local authority code; did you mean Kent (E10000016)?"
    assert district.line == line_of(installation.boroughs, "[E07000070]")
    assert district.message.startswith("[E07000070] is Chelmsford, a district: the duty to track its young people sits with Essex (E10000012)")


def test_an_override_to_a_mistyped_code_is_answered_with_a_suggestion(installation, directory):
    installation.routing.write_text('[overrides]\nME14 = "E10000061"\n')
    problem = only(check(installation, directory))
    assert problem.message == "override \"ME14\": 'E10000061' is not a known local authority code; did you mean Kent (E10000016)?"


def test_a_typo_in_routing_toml(installation, directory):
    installation.routing.write_text('outside = "reject"\noutisde_recipient = "x@y.example"\n')
    problem = only(check(installation, directory))
    assert (problem.file, problem.line) == (installation.routing, 2)
    assert problem.message == "unknown key 'outisde_recipient' in the top level (a [section] name?); did you mean 'outside_recipient'?"


def test_a_provider_without_a_host_authority_here_is_a_warning(installation, directory):
    """Rows whose postcode cannot be placed go to the provider's host_la: without one they would be held back."""
    installation.providers.write_text(installation.providers.read_text()
                                      + '\n[10005678]\nname = "Northbank College"\nsenders = ["mis@northbank.example"]\n'
                                      + '\n[10005679]\nname = "Eastway School"\nsenders = ["mis@eastway.example"]\nhost_la = "E07000070"\n')
    missing, unserved = check(installation, directory)
    assert isinstance(missing, Advisory) and isinstance(unserved, Advisory)
    assert (missing.file, missing.line) == (installation.providers, line_of(installation.providers, "[10005678]"))
    assert missing.message.startswith("warning: provider 10005678 (Northbank College) has no host_la, so rows of its "
                                      "returns whose postcode is missing, malformed or not yet in the postcode directory "
                                      "will be held back")
    assert 'host_la = "E07000070" (Essex (E10000012)), which has no table in boroughs.toml' in unserved.message
    installation.routing.write_text('unplaceable = "reject"\n')  # such rows are held back anyway: nothing to warn of
    assert check(installation, directory) == []


def test_a_sender_claimed_by_two_providers(installation, directory):
    installation.providers.write_text(installation.providers.read_text()
                                      + f'\n[10005678]\nname = "Other"\nsenders = ["{PROVIDER_SENDER.upper()}"]\nhost_la = "E09000007"\n')
    problem = only(check(installation, directory))
    assert (problem.file, problem.line) == (installation.providers, line_of(installation.providers, "[10005678]"))
    assert f"sender {PROVIDER_SENDER} is claimed by providers 10001234 and 10005678" in problem.message


def test_a_recipient_without_a_key(installation, directory):
    (installation.root / "keys" / "ldor@camden.example.asc").unlink()
    problem = only(check(installation, directory))
    assert (problem.file, problem.line) == (installation.boroughs, line_of(installation.boroughs, "ldor@camden.example"))
    assert problem.message == ("[E09000007] Camden: no public key in keys/ has a user ID with ldor@camden.example; "
                               "its packages would be held")
    assert not isinstance(problem, Advisory)


def test_a_recipient_with_two_valid_keys(installation, directory):
    installation.key("ldor@camden.example")
    problem = only(check(installation, directory))
    assert problem.line == line_of(installation.boroughs, "ldor@camden.example")
    assert "2 valid keys in keys/ are for ldor@camden.example; keep exactly one, or pin one in rules/boroughs.toml" in problem.message


def test_a_sub_regional_unit_without_a_key_is_one_line_naming_each_borough(installation, directory):
    installation.edit(installation.boroughs, '["ldor@camden.example"]', '["unit@north.example"]')
    installation.edit(installation.boroughs, '["ldor@hackney.example"]', '["ldor@hackney.example", "unit@north.example"]')
    problem = only(check(installation, directory))
    assert problem.line == line_of(installation.boroughs, "unit@north.example")
    assert problem.message.startswith("[E09000007] Camden, [E09000012] Hackney: no public key in keys/ has a user ID with unit@north.example")


def test_a_key_expiring_within_30_days_is_a_warning(installation, directory):
    (installation.root / "keys" / "ldor@camden.example.asc").unlink()
    fingerprint = installation.key("ldor@camden.example", expire="40d")
    assert check(installation, directory) == []  # 40 days ahead: nothing to say yet
    fifteen_days_on = time.time() + 15 * DAY  # 25 days before it expires
    problem = only(check(installation, directory, now=fifteen_days_on))
    assert isinstance(problem, Advisory)
    assert (problem.file, problem.line) == (installation.boroughs, line_of(installation.boroughs, "ldor@camden.example"))
    expires = day(time.time() + 40 * DAY)
    assert re.fullmatch(
        rf"\[E09000007\] Camden: warning: the key for ldor@camden\.example \({fingerprint}\) expires on "
        rf"({expires:%Y-%m-%d}|{day(time.time() + 41 * DAY):%Y-%m-%d}); ask ldor@camden\.example for a renewed key",
        problem.message,
    )


def test_an_expired_key_holds_the_packages(installation, directory):
    (installation.root / "keys" / "ldor@camden.example.asc").unlink()
    installation.key("ldor@camden.example", expire="seconds=1")
    time.sleep(2)
    problem = only(check(installation, directory))
    assert not isinstance(problem, Advisory)
    assert problem.line == line_of(installation.boroughs, "ldor@camden.example")
    assert re.search(rf"\[E09000007\] Camden: the key for ldor@camden\.example \([0-9A-F]{{40}}\) expired on {day(time.time()):%Y-%m-%d}; "
                     r"ask ldor@camden\.example for a renewed key; its packages would be held", problem.message)


def test_the_encryption_subkey_expiring_first_is_the_date_that_counts(installation, directory):
    with gnupg_home(installation.tmp / "subkey") as home:
        fingerprint = make_key(home, "Officer", "ldor@islington.example", expire="0")
        subkey = gnupg.GPG(gnupghome=str(home)).list_keys()[0]["subkeys"][0][2]
        subprocess.run(["gpg", "--batch", "--homedir", str(home), "--quick-set-expire", fingerprint, "10d", subkey],
                       check=True, capture_output=True)
        (installation.root / "keys" / "ldor@islington.example.asc").write_text(export_public(home, fingerprint))
    problem = only(check(installation, directory))
    assert isinstance(problem, Advisory) and "[E09000019] Islington: warning:" in problem.message
    assert f"expires on {day(time.time() + 10 * DAY):%Y-%m-%d}" in problem.message or \
        f"expires on {day(time.time() + 11 * DAY):%Y-%m-%d}" in problem.message


# -- pinned keys --------------------------------------------------------------------------------------------

def pin(installation: Installation, code_line: str, address: str, fingerprint: str) -> int:
    installation.edit(installation.boroughs, code_line, f'{code_line}\nkeys = {{ "{address}" = "{fingerprint}" }}')
    return line_of(installation.boroughs, "keys =")


def test_a_pinned_key_is_used_though_other_keys_carry_the_address(installation, directory, keys):
    islington = "ldor@islington.example"
    chosen = Keyring(installation.tmp / "probe")
    chosen.import_folder(installation.root / "keys")
    pinned = chosen.key_for(islington)  # the session's Islington key, whose secret the test holds
    chosen.stop_agent()
    installation.key(islington)  # a second valid key for the same address
    assert "2 valid keys" in only(check(installation, directory)).message
    pin(installation, '["ldor@islington.example"]', islington, pinned)
    assert check(installation, directory) == []

    ring = Keyring(installation.tmp / "ring", pins={islington: pinned})
    try:
        ring.import_folder(installation.root / "keys")
        assert ring.key_for("LDOR@Islington.example") == pinned
        ciphertext = ring.encrypt(b"rows for Islington", ring.key_for(islington))
    finally:
        ring.stop_agent()
    opened = gnupg.GPG(gnupghome=str(keys.borough_homes[islington])).decrypt(ciphertext)
    assert opened.ok and opened.data == b"rows for Islington"


def test_a_pinned_fingerprint_not_in_keys(installation, directory):
    absent = installation.key("ldor@islington.example", publish=False)
    line = pin(installation, '["ldor@islington.example"]', "ldor@islington.example", absent)
    problem = only(check(installation, directory))
    assert (problem.file, problem.line) == (installation.boroughs, line)
    assert problem.message == (f"[E09000019] Islington: the key pinned for ldor@islington.example ({absent}) is not in keys/; "
                               "its packages would be held")


def test_a_pinned_key_for_another_address(installation, directory):
    camden = installation.key("ldor@camden.example")
    (installation.root / "keys" / "ldor@camden.example.asc").unlink()
    line = pin(installation, '["ldor@islington.example"]', "ldor@islington.example", camden)
    problem = only(check(installation, directory))
    assert (problem.file, problem.line) == (installation.boroughs, line)
    assert (f"the key pinned for ldor@islington.example ({camden}) has a user ID with ldor@camden.example, "
            "not ldor@islington.example: pin ldor@islington.example's own key") in problem.message


def test_a_pinned_key_expiring_soon(installation, directory):
    soon = installation.key("ldor@hackney.example", expire="20d")
    line = pin(installation, '["ldor@hackney.example"]', "ldor@hackney.example", soon)
    problem = only(check(installation, directory))
    assert isinstance(problem, Advisory) and problem.line == line
    assert f"[E09000012] Hackney: warning: the key for ldor@hackney.example ({soon}) expires on" in problem.message


# -- routing.toml and providers.toml ---------------------------------------------------------------------------

@pytest.mark.parametrize(
    "routing, at, words",
    [
        ('[overrides]\nN1C = "E09000077"\n', "N1C", "override \"N1C\": 'E09000077' is not a known local authority code"),
        ('[overrides]\nN1C = "E99999999"\n', "N1C", "override \"N1C\": 'E99999999' is not a known local authority code"),
        ('[overrides]\nN1CX = "E09000007"\n', "N1CX", 'override "N1CX": not a full postcode (such as "N1C 4AA") or a postcode district'),
        ('outside = "recipient"\n', "outside", 'outside = "recipient" needs outside_recipient = "address@..."'),
        ('outside = "recipient"\noutside_recipient = "the unit"\n', "outside_recipient", "'the unit' is not an email address"),
    ],
)
def test_routing_problems(installation, directory, routing, at, words):
    installation.routing.write_text(routing)
    problem = only(check(installation, directory))
    assert (problem.file, problem.line) == (installation.routing, line_of(installation.routing, at))
    assert words in problem.message


def test_an_override_to_an_authority_outside_london_is_known_from_the_directory(installation, directory):
    installation.routing.write_text('[overrides]\nM1 = "E08000003"\n')
    assert check(installation, directory) == []


def test_the_outside_recipient_needs_a_key_like_any_borough(installation, directory):
    installation.routing.write_text('# rows from elsewhere\noutside = "recipient"\noutside_recipient = "unit@london.example"\n')
    problem = only(check(installation, directory))
    assert (problem.file, problem.line) == (installation.routing, 3)
    assert problem.message == "outside_recipient: no public key in keys/ has a user ID with unit@london.example; its packages would be held"
    installation.key("unit@london.example")
    assert check(installation, directory) == []


def test_receipts_to_that_is_not_an_address(installation, directory):
    installation.edit(installation.providers, 'host_la = "E09000019"', 'host_la = "E09000019"\nreceipts_to = "MIS team"')
    problem = only(check(installation, directory))
    assert (problem.file, problem.line) == (installation.providers, line_of(installation.providers, "receipts_to"))
    assert "provider 10001234: receipts_to must be one email address" in problem.message and "'MIS team'" in problem.message


def test_signing_keys_missing_or_expiring(installation, directory):
    soon = installation.key(PROVIDER_SENDER, expire="20d")
    installation.edit(installation.providers, 'host_la = "E09000019"', f'host_la = "E09000019"\nsigning_keys = ["{soon}", "{"A" * 40}"]')
    problems = check(installation, directory)
    assert [(p.file, p.line) for p in problems] == [(installation.providers, line_of(installation.providers, "[10001234]"))] * 2
    expiring, missing = sorted(problems, key=lambda p: "A" * 40 in p.message)
    assert isinstance(expiring, Advisory) and f"warning: provider 10001234: signing key {soon} expires on" in expiring.message
    assert "ask Example College for its renewed key" in expiring.message
    assert missing.message == f"provider 10001234: signing key {'A' * 40} is not in keys/"


# -- the gateway's own key and its secrets ---------------------------------------------------------------------

def test_the_gateways_own_key_expiring(installation, directory):
    home = installation.settings.gnupg.home
    kill_agents(home)
    shutil.rmtree(home)
    fingerprint = make_key(home, "LDOR gateway", GATEWAY_ADDRESS, expire="20d")
    problem = only(check(installation, directory))
    assert isinstance(problem, Advisory) and (problem.file, problem.line) == (home, None)
    assert f"warning: the gateway's own key {fingerprint} expires on" in problem.message
    assert "send providers the new public key" in problem.message


def test_no_gateway_key_at_all(installation, directory):
    home = installation.settings.gnupg.home
    kill_agents(home)
    shutil.rmtree(home)
    problem = only(check(installation, directory))
    assert (problem.file, problem.line) == (home, None)
    assert "must hold exactly one secret key, it holds 0: create it with gpg --homedir" in problem.message


def test_the_mailbox_password_variable_not_set(installation, directory, monkeypatch):
    monkeypatch.delenv("TEST_IMAP_PASSWORD")
    problem = only(check(installation, directory))
    assert (problem.file, problem.line) == (installation.settings.path, None)
    assert problem.message == "the mailbox password variable TEST_IMAP_PASSWORD is not set in this environment (the daemon will need it)"


def test_every_problem_at_once(installation, directory):
    (installation.root / "keys" / "ldor@hackney.example.asc").unlink()
    installation.routing.write_text(textwrap.dedent("""\
        unplaceable = "host"
        [overrides]
        E20 = "E09000125"
        """))
    installation.edit(installation.providers, 'host_la = "E09000019"', 'host_la = "E09000019"\nreceipts_to = "nobody"')
    found = sorted((p.file.name, p.line) for p in check(installation, directory))
    assert found == sorted([
        ("boroughs.toml", line_of(installation.boroughs, "ldor@hackney.example")),
        ("providers.toml", line_of(installation.providers, "receipts_to")),
        ("routing.toml", 1),
        ("routing.toml", 3),
    ])
