"""Issue 12 (3): no traceback reaches a person for a mistake in using a command. Every subcommand is run as
`python -m gateway ...` (a real process, so a real traceback would show) with bad arguments: each answer is
one line saying what happened and what to do, and the exit code is not 0."""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from gateway.admin.scaffold import write_installation
from gateway.cli import _parser, main
from gateway.demo.sample import people, workbook
from gateway.errors import unreachable

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "data" / "one_of_each.xlsx"  # header: Example College, 10001234


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _install(root: Path, host: str = "127.0.0.1", port: int | None = None) -> Path:
    return write_installation(
        root, imap=(host, port or _closed_port(), "ldor@example.org", "USAGE_TEST_IMAP_PASSWORD"),
        smtp=("127.0.0.1", _closed_port()), sender="ldor@example.org", admin="admin@example.org",
        boroughs={"E09000019": ("Islington", "ldor@islington.example", "xlsx")},
        providers=[("10001234", "Example College", "mis@example-college.example", "E09000019")], timeout=5)


def _gateway(*argv: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    environment = {k: v for k, v in environment.items() if v is not None}
    return subprocess.run([sys.executable, "-m", "gateway", *argv], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env=environment, stdin=subprocess.DEVNULL)


@pytest.fixture
def site(tmp_path) -> Path:
    """An installation with no servers behind it; its config's path."""
    return _install(tmp_path / "site")


class _Fresh:
    """`--config PATH` of a new installation at each use: the cases run at once, each on its own ledger."""

    def __init__(self, root: Path) -> None:
        self.root, self.made = root, 0

    def __iter__(self):
        self.made += 1
        return iter(["--config", str(_install(self.root / f"site-{self.made}"))])


def _cases(tmp_path: Path) -> list[tuple[str, list[str], dict, tuple[str, ...]]]:
    """(what, argv, environment, words the answer must hold)."""
    config = _Fresh(tmp_path)
    site = _install(tmp_path / "installed")
    nowhere = ["--config", str(tmp_path / "nowhere" / "config.toml")]
    broken = tmp_path / "broken.toml"
    broken.write_text("[mailbox\nhost = 1\n")
    folder = tmp_path / "a-folder"
    folder.mkdir()
    no_imap = {"USAGE_TEST_IMAP_PASSWORD": "x"}
    dns = _install(tmp_path / "dns", host="no-such-host.invalid")
    return [
        # a missing config: where it looked, and how to make or name one
        *[(f"{name} without a config", [*nowhere, *argv], {}, ("nowhere/config.toml", "gateway init", "--config"))
          for name, argv in (("run", ["run", "--once"]), ("run (daemon)", ["run"]), ("status", ["status"]),
                             ("outbox", ["outbox"]), ("audit", ["audit", "verify"]), ("route", ["route", str(GOLDEN)]),
                             ("report", ["report", "--month", "2026-11"]), ("check", ["check"]))],
        ("a folder as config", ["--config", str(folder), "status"], {}, ("is a folder",)),
        ("broken config TOML", ["--config", str(broken), "status"], {}, ("broken.toml:1", "not valid TOML")),
        ("broken config TOML, check", ["--config", str(broken), "check"], {}, ("broken.toml:1", "not valid TOML")),
        # paths given to commands
        ("validate a missing file", [*config, "validate", "/nonexistent.xlsx"], {}, ("/nonexistent.xlsx", "no such file")),
        ("validate a folder", [*config, "validate", str(folder)], {}, ("is a folder",)),
        ("route a missing file", [*config, "route", str(tmp_path / "absent.xlsx")], {}, ("no such file",)),
        ("route a folder", [*config, "route", str(folder)], {}, ("is a folder",)),
        ("template into a missing folder", [*config, "template", "/nonexistent/dir/t.xlsx"], {},
         ("/nonexistent/dir", "does not exist", "create it")),
        ("template onto a folder", [*config, "template", str(folder)], {}, ("is a folder",)),
        ("template where nothing may be written", [*config, "template", "/proc/t.xlsx"], {}, ("cannot write /proc/t.xlsx",)),
        ("report into a missing folder", [*config, "report", "--month", "2026-11", "--out", "/nonexistent/r.xlsx"], {},
         ("/nonexistent", "does not exist")),
        ("report onto a folder", [*config, "report", "--month", "2026-11", "--out", str(folder)], {}, ("is a folder",)),
        ("a password file that is not there", [*config, "validate", str(GOLDEN), "--password-file", "/nonexistent.pw"], {},
         ("--password-file", "/nonexistent.pw")),
        ("demo in a folder that cannot be", ["demo", "--dir", "/proc/ldor-demo"], {}, ("/proc/ldor-demo",)),
        # bad arguments
        ("report with a bad month", [*config, "report", "--month", "2026-13"], {}, ("YYYY-MM",)),
        ("report with no month", [*config, "report"], {}, ("--month",)),
        ("report with a word for a month", [*config, "report", "--month", "November"], {}, ("YYYY-MM",)),
        ("validate --provider abc", [*config, "validate", str(GOLDEN), "--provider", "abc"], {}, ("8-digit UKPRN",)),
        ("route --provider 123", [*config, "route", str(GOLDEN), "--provider", "123"], {}, ("8-digit UKPRN",)),
        ("validate an unregistered --provider", [*config, "validate", str(GOLDEN), "--provider", "99999999"], {},
         ("99999999", "providers.toml")),
        ("route an unregistered --provider", [*config, "route", str(GOLDEN), "--provider", "99999999"], {},
         ("99999999", "providers.toml")),
        ("an unknown command", [*config, "frobnicate"], {}, ("frobnicate", "--help")),
        ("audit with an unknown action", [*config, "audit", "mend"], {}, ("mend",)),
        ("no command", [], {}, ("COMMAND",)),
        ("outbox --retry of nothing", [*config, "outbox", "--retry", "nothing-such"], {}, ("nothing-such",)),
        ("init where no folder can be made", ["init", "/proc/ldor", "--no-passphrase"], {}, ("/proc/ldor",)),
        ("init with an address that is none", ["init", str(tmp_path / "new"), "--address", "ldor"], {}, ("--address",)),
        ("init over an installation", ["init", str(site.parent), "--no-passphrase"], {}, ("never overwrites",)),
        ("keys with no action", [*config, "keys"], {}, ("ACTION",)),
        ("keys list without a config", [*nowhere, "keys", "list"], {}, ("gateway init", "--config")),
        ("keys import of a missing file", [*config, "keys", "import", "/nonexistent.asc"], {}, ("/nonexistent.asc",)),
        ("keys import of a folder", [*config, "keys", "import", str(folder)], {}, ("a-folder",)),
        # missing variables and unreachable servers
        ("run with the password variable unset", [*config, "run", "--once"], {"USAGE_TEST_IMAP_PASSWORD": None},
         ("USAGE_TEST_IMAP_PASSWORD",)),
        ("run with nothing listening", [*config, "run", "--once"], no_imap, ("127.0.0.1:", "refused", "[mailbox] host and port")),
        ("run with a host that has no name", ["--config", str(dns), "run", "--once"], no_imap,
         ("no-such-host.invalid", "[mailbox] host")),
    ]


def test_every_subcommand_given_bad_arguments_answers_in_one_line_without_a_traceback(tmp_path):
    cases = _cases(tmp_path)
    commands = {a.dest for a in _parser()._subparsers._group_actions[0]._choices_actions}  # type: ignore[union-attr]
    walked = {word for _, argv, _, _ in cases for word in argv if word in commands}
    assert walked == commands, f"commands never given bad arguments: {commands - walked}"
    empty = tmp_path / "empty"
    empty.mkdir()
    with ThreadPoolExecutor(8) as pool:
        done = list(pool.map(lambda case: _gateway(*case[1], cwd=empty, env=case[2]), cases))
    failures = []
    for (what, argv, _, words), result in zip(cases, done, strict=False):
        said = (result.stderr.strip() or result.stdout.strip()).splitlines()
        problems = []
        if result.returncode == 0:
            problems.append("exit 0")
        if "Traceback" in result.stderr + result.stdout or "Exception ignored" in result.stderr:
            problems.append("a traceback")
        if result.stderr.strip() and len(result.stderr.strip().splitlines()) != 1:
            problems.append(f"{len(result.stderr.strip().splitlines())} lines on stderr")
        missing = [w for w in words if w not in " ".join(said)]
        if missing:
            problems.append(f"does not say {missing}")
        if problems:
            failures.append(f"{what} ({' '.join(argv)}): {', '.join(problems)}:\n    {result.stderr[-600:] or result.stdout[-600:]}")
    assert not failures, "\n".join(failures)


def test_validate_without_any_config_says_it_uses_the_london_boroughs(tmp_path):
    done = _gateway("validate", str(GOLDEN), cwd=tmp_path)
    assert done.returncode == 1  # the golden file has rows held back
    [note] = done.stderr.strip().splitlines()
    assert "no config.toml" in note and "33 London boroughs" in note and "gateway init" in note
    assert "Rows read:       40" in done.stdout


def test_broken_rules_stop_validate_as_they_stop_route_and_run(site, tmp_path):
    boroughs = site.parent / "rules" / "boroughs.toml"
    boroughs.write_text(boroughs.read_text() + "\n[E09000007\nname = 'Camden'\n")
    answers = {}
    for argv in (["validate", str(GOLDEN)], ["route", str(GOLDEN)], ["run", "--once"], ["status"]):
        done = _gateway("--config", str(site), *argv, cwd=tmp_path, env={"USAGE_TEST_IMAP_PASSWORD": "x"})
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        answers[argv[0]] = done.stderr.strip()
    [line] = set(answers.values())  # the same one line from every command, no falling back to London
    assert "boroughs.toml:" in line and "not valid TOML" in line


def test_provider_given_is_the_registered_one_and_a_different_header_is_provider_03(site, tmp_path):
    rules = site.parent / "rules" / "providers.toml"
    rules.write_text(rules.read_text() + '\n[99999999]\nname = "Other College"\nsenders = ["mis@other.example"]\n'
                                         'host_la = "E09000019"\n')
    done = _gateway("--config", str(site), "validate", str(GOLDEN), "--provider", "99999999", cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    assert "Provider: Other College (UKPRN 99999999)" in done.stdout
    assert "Provider_03" in done.stdout
    assert "Example College" not in done.stdout


def test_an_unreachable_relay_names_host_and_port_and_what_to_check():
    from gateway.config import Smtp
    from gateway.delivery.send import RelayDown, send

    raw = b"From: ldor@example.org\r\nTo: a@example.org\r\nSubject: x\r\n\r\nx\r\n"
    port = _closed_port()
    with pytest.raises(RelayDown) as refused:
        send(raw, Smtp("127.0.0.1", port, "none", "ldor@example.org", timeout=5))
    assert str(refused.value).startswith(f"cannot reach the relay at 127.0.0.1:{port}: the connection was refused")
    assert "[smtp] host and port" in str(refused.value) and "Error" not in str(refused.value)
    with pytest.raises(RelayDown) as unnamed:
        send(raw, Smtp("no-such-host.invalid", 25, "none", "ldor@example.org", timeout=5))
    assert "no-such-host.invalid:25" in str(unnamed.value) and "[smtp] host" in str(unnamed.value)
    assert "timeout" in unreachable("the relay", "smtp", "relay.example", 587, TimeoutError())


def test_report_piped_into_head_writes_the_workbook_and_stops_quietly(site, tmp_path):
    out = tmp_path / "report.xlsx"
    child = subprocess.Popen([sys.executable, "-m", "gateway", "--config", str(site), "report", "--month", "2026-11",
                              "--out", str(out)], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
    child.stdout.close()  # as `| head -0` would: the reader is gone before anything is printed
    error = child.stderr.read().decode()
    child.wait(timeout=120)
    assert out.is_file() and out.stat().st_size > 0
    assert "Traceback" not in error and "Exception ignored" not in error, error
    assert child.returncode != 0  # stopped by the closed pipe, as with SIGPIPE


def test_version_comes_from_the_package_metadata(tmp_path):
    from importlib import metadata

    done = _gateway("--version", cwd=tmp_path)
    assert done.returncode == 0
    assert done.stdout.strip() == f"gateway (ldor-gateway) {metadata.version('ldor-gateway')}"


def test_every_command_help_opens_with_a_description(capsys):
    commands = _parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for name in commands:
        with pytest.raises(SystemExit):
            main([name, "--help"])
        text = capsys.readouterr().out
        body = text.split("\n\n")[1]  # usage, then the description, then the options
        assert len(body) > 20 and not body.startswith(("positional", "options")), name


def _protected(tmp_path: Path, directory, password: str) -> Path:
    import msoffcrypto.format.ooxml as ooxml

    plain = io.BytesIO(workbook("Example College", "10001234", [p.cells() for p in people(directory, {"E09000019": 2})]))
    protected = tmp_path / "protected.xlsx"
    with open(protected, "wb") as target:
        ooxml.OOXMLFile(plain).encrypt(password, target)
    return protected


@pytest.mark.parametrize("command", ["validate", "route"])
def test_a_protected_file_opens_with_the_providers_password_env_or_a_password_file(site, tmp_path, directory,
                                                                                   monkeypatch, capsys, command):
    protected = _protected(tmp_path, directory, "Agreed-7")
    rules = site.parent / "rules" / "providers.toml"
    rules.write_text(rules.read_text() + 'password_env = "USAGE_TEST_PROVIDER_PW"\n')
    monkeypatch.delenv("GATEWAY_FILE_PASSWORD", raising=False)
    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # no terminal to ask at
    monkeypatch.setattr("getpass.getpass", lambda prompt: pytest.fail("asked although a password was at hand"))
    if command == "route":  # route encrypts to the recipients' keys: give it one folder to look in
        (site.parent / "keys").mkdir(exist_ok=True)
        shutil.rmtree(site.parent / "var", ignore_errors=True)
    argv = ["--config", str(site), command, str(protected), "--provider", "10001234"]
    # The provider's password_env, as the mailbox opens its files.
    monkeypatch.setenv("USAGE_TEST_PROVIDER_PW", "Agreed-7")
    assert main(argv) in (0, 1)
    assert "Rows read:" in capsys.readouterr().out
    # --password-file comes first; a script's way when there is no variable.
    monkeypatch.delenv("USAGE_TEST_PROVIDER_PW")
    secret = tmp_path / "pw.txt"
    secret.write_text("Agreed-7\n")
    assert main([*argv, "--password-file", str(secret)]) in (0, 1)
    assert "Rows read:" in capsys.readouterr().out
    # Neither, and no terminal: one line saying how to give it, not an EOFError.
    assert main(argv) == 2
    captured = capsys.readouterr()
    [line] = captured.err.strip().splitlines()
    assert "--password-file" in line and "no terminal" in line
