"""config.toml: a good file loads, and each mistake is named with its file, line and a suggestion."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from gateway import config
from gateway.errors import ConfigError, GatewayError

GOOD = textwrap.dedent("""\
    # comment line 1
    [mailbox]
    host = "imap.example.org"
    port = 993
    security = "ssl"
    user = "ldor@example.org"
    password_env = "GATEWAY_IMAP_PASSWORD"

    [smtp]
    host = "smtp.example.org"
    port = 587
    security = "starttls"
    from_address = "ldor@example.org"
    timeout = 30

    [gnupg]
    home = "var/gnupg"

    [paths]
    rules = "rules"
    keys = "../shared/keys"
    outbox = "/srv/ldor/outbox"
    database = "var/gateway.db"

    [admin]
    email = "admin@example.org"
    """)


def write(tmp_path: Path, text: str) -> Path:
    folder = tmp_path / "etc" / "ldor"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.toml"
    path.write_text(text)
    return path


def line_of(text: str, fragment: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), start=1) if fragment in line)


def test_good_file(tmp_path):
    path = write(tmp_path, GOOD)
    loaded = config.load(path)
    assert loaded.path == path
    assert loaded.mailbox.host == "imap.example.org"
    assert loaded.mailbox.port == 993
    assert loaded.mailbox.security == "ssl"
    assert loaded.mailbox.folder == "INBOX"  # a default
    assert loaded.mailbox.quarantine_folder == "Quarantine"
    assert loaded.smtp.port == 587 and loaded.smtp.timeout == 30
    assert loaded.smtp.from_address == "ldor@example.org"
    assert loaded.admin.email == "admin@example.org"
    assert config.check(path) == (loaded, [])


def test_paths_are_relative_to_the_config_file_not_the_working_folder(tmp_path, monkeypatch):
    path = write(tmp_path, GOOD)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    loaded = config.load(path)
    base = path.parent.resolve()
    assert loaded.paths.rules == base / "rules"
    assert loaded.paths.keys == (base / ".." / "shared" / "keys").resolve() == tmp_path.resolve() / "etc" / "shared" / "keys"
    assert loaded.paths.outbox == Path("/srv/ldor/outbox")
    assert loaded.paths.database == base / "var" / "gateway.db"
    assert loaded.gnupg.home == base / "var" / "gnupg"


def test_a_relative_config_path_is_made_absolute(tmp_path, monkeypatch):
    path = write(tmp_path, GOOD)
    monkeypatch.chdir(path.parent)
    loaded = config.load(Path("config.toml"))
    assert loaded.path.is_absolute()
    assert loaded.paths.rules == path.parent.resolve() / "rules"


def test_paths_and_gnupg_sections_have_defaults(tmp_path):
    text = GOOD[: GOOD.index("[gnupg]")] + GOOD[GOOD.index("[admin]"):]
    loaded = config.load(write(tmp_path, text))
    base = tmp_path.resolve() / "etc" / "ldor"
    assert loaded.paths.rules == base / "rules"
    assert loaded.paths.outbox == base / "outbox"
    assert loaded.paths.database == base / "var" / "gateway.db"
    assert loaded.gnupg.home == base / "var" / "gnupg"


def test_the_shipped_example_loads():
    shipped = Path(__file__).resolve().parent.parent / "config.toml"
    loaded = config.load(shipped)
    assert loaded.paths.rules == shipped.parent / "rules"


@pytest.mark.parametrize(
    "typo, fixed, section",
    [("securty", "security", "smtp"), ("pasword_env", "password_env", "mailbox"), ("emial", "email", "admin")],
)
def test_unknown_key_says_did_you_mean_with_its_line(tmp_path, typo, fixed, section):
    start = GOOD.index(f"[{section}]")
    original = next(line for line in GOOD[start:].splitlines() if line.startswith(f"{fixed} "))
    text = GOOD[:start] + GOOD[start:].replace(original, original.replace(fixed, typo, 1), 1)
    path = write(tmp_path, text)
    loaded, problems = config.check(path)
    assert loaded is None
    unknown = [p for p in problems if typo in p.message]
    assert len(unknown) == 1
    assert f"did you mean '{fixed}'" in unknown[0].message
    assert unknown[0].file == path
    assert unknown[0].line == line_of(text, f"{typo} =")
    with pytest.raises(ConfigError) as caught:
        config.load(path)
    assert f"{path}:{unknown[0].line}:" in str(caught.value)


def test_misspelt_section_says_did_you_mean_with_its_line(tmp_path):
    text = GOOD.replace("[smtp]", "[smpt]")
    path = write(tmp_path, text)
    _, problems = config.check(path)
    [unknown] = [p for p in problems if "'smpt'" in p.message]
    assert "did you mean 'smtp'" in unknown.message
    assert unknown.line == line_of(text, "[smpt]")


@pytest.mark.parametrize("section", ["mailbox", "smtp", "admin"])
def test_missing_section(tmp_path, section):
    start = GOOD.index(f"[{section}]")
    end = GOOD.find("\n[", start + 1)
    text = GOOD[:start] + (GOOD[end + 1:] if end != -1 else "")
    path = write(tmp_path, text)
    loaded, problems = config.check(path)
    assert loaded is None
    assert any(f"[{section}]" in p.message and "missing" in p.message for p in problems)
    assert all(p.file == path for p in problems)
    with pytest.raises(ConfigError):
        config.load(path)


@pytest.mark.parametrize("section", ["mailbox", "smtp"])
def test_bad_security_value(tmp_path, section):
    start = GOOD.index(f"[{section}]")
    line = next(l for l in GOOD[start:].splitlines() if l.startswith("security"))
    text = GOOD[:start] + GOOD[start:].replace(line, 'security = "tls"', 1)
    path = write(tmp_path, text)
    loaded, problems = config.check(path)
    assert loaded is None
    assert len(problems) == 1
    assert "ssl, starttls, none" in problems[0].message
    assert problems[0].line == GOOD[:start].count("\n") + 1 + GOOD[start:].splitlines().index(line)


@pytest.mark.parametrize(
    "old, new, words",
    [
        ("port = 993", 'port = "993"', "whole number"),
        ("port = 993", "port = true", "whole number"),
        ("timeout = 30", 'timeout = "soon"', "number of seconds"),
        ('host = "imap.example.org"', "host = 42", "text in quotes"),
        ('rules = "rules"', "rules = 5", "path in quotes"),
        ('email = "admin@example.org"', 'email = "admin"', "email address"),
        ('from_address = "ldor@example.org"\n', "", "from_address"),
        ('host = "imap.example.org"\n', "", "needs 'host'"),
    ],
)
def test_wrong_values_are_named(tmp_path, old, new, words):
    text = GOOD.replace(old, new, 1)
    assert text != GOOD
    loaded, problems = config.check(write(tmp_path, text))
    assert loaded is None
    assert any(words in p.message for p in problems), problems


def test_every_problem_is_reported_at_once(tmp_path):
    text = GOOD.replace('security = "ssl"', 'security = "tls"').replace("timeout = 30", "timeot = 30")
    text = text.replace('email = "admin@example.org"', 'email = "admin@example.org"\ncolour = "blue"')
    _, problems = config.check(write(tmp_path, text))
    assert len(problems) == 3
    assert sorted(p.line for p in problems) == sorted(
        [line_of(text, 'security = "tls"'), line_of(text, "timeot"), line_of(text, "colour")])


def test_not_toml(tmp_path):
    text = GOOD.replace('port = 993', 'port = = 993')
    path = write(tmp_path, text)
    loaded, problems = config.check(path)
    assert loaded is None
    assert problems[0].line == line_of(text, "port = = 993")
    with pytest.raises(GatewayError):
        config.load(path)


def test_missing_file(tmp_path):
    loaded, problems = config.check(tmp_path / "nowhere.toml")
    assert loaded is None
    assert "not found" in problems[0].message


def test_secret_comes_from_the_named_variable(monkeypatch):
    monkeypatch.setenv("LDOR_TEST_SECRET", "s3cret")
    monkeypatch.delenv("LDOR_TEST_UNSET", raising=False)
    assert config.secret("LDOR_TEST_SECRET") == "s3cret"
    assert config.secret("LDOR_TEST_UNSET") is None
    assert config.secret("") is None
    assert "LDOR_TEST_SECRET" in os.environ
