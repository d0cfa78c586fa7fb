"""Every command has help and is in the README; every config.toml key is documented; the package layout
the README describes is the one the code writes."""

from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path

from gateway import config
from gateway.cli import _parser
from gateway.delivery.pack import HEADINGS, LAYOUT_VERSION

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def _commands() -> dict[str, str]:
    parser = _parser()
    [sub] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return {choice.dest: choice.help for choice in sub._choices_actions}


def test_every_command_has_help_and_is_in_the_readme():
    commands = _commands()
    assert {"run", "check", "validate", "template", "demo"} <= set(commands)  # the contract's names
    for name, text in commands.items():
        assert text and len(text) > 20, name
        assert re.search(rf"gateway {name}\b", README), f"`gateway {name}` is not in the README"


def test_every_config_key_is_in_the_readme():
    section = README[README.index("## config.toml"):]
    for name, cls in (("mailbox", config.Mailbox), ("smtp", config.Smtp), ("gnupg", config.Gnupg),
                      ("paths", config.Paths), ("admin", config.Admin), ("schedule", config.Schedule)):
        for field in dataclasses.fields(cls):
            assert re.search(rf"\b{field.name}\b", section), f"[{name}] {field.name} is not documented"


def _section(title: str) -> str:
    start = README.index(f"## {title}")
    end = README.find("\n## ", start + 1)
    return README[start:end if end != -1 else None]


def test_the_readme_lists_the_package_columns_the_code_writes():
    section = _section("What a borough receives")
    listed = []
    for line in section.splitlines():
        if not line.startswith("| "):
            if listed:
                break  # the end of the first table
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0] != "Column":
            listed.append(cells[0])
    assert tuple(listed) == HEADINGS, "README's package columns differ from gateway/delivery/pack.py HEADINGS"
    assert f"Layout: {LAYOUT_VERSION}" in section
    sample = [line for line in section.splitlines() if line.startswith("| Gateway Reference | Source Row |")]
    assert sample and tuple(c.strip() for c in sample[0].strip("|").split("|")) == HEADINGS


def _exit_codes() -> set[tuple[str, int]]:
    """(command, exit code) for each row of README's "Exit codes" table."""
    rows = set()
    for line in _section("Exit codes").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 3 and cells[1].isdigit():
            rows.add((cells[0].strip("`"), int(cells[1])))
    return rows


def test_the_readme_exit_codes_are_the_commands_exit_codes(deployment, directory, tmp_path, monkeypatch, capsys):
    """Issue 12 (5): every exit code README states is the one the command gives, in the situation it names."""
    from servers import export_public, gnupg_home, make_key

    from gateway import cli
    from gateway.demo.sample import people, workbook

    config = ["--config", str(deployment.config)]
    clean = tmp_path / "clean.xlsx"
    clean.write_bytes(workbook("Example College", "10001234", [p.cells() for p in people(directory, {"E09000019": 2})]))
    held = Path(__file__).resolve().parent / "data" / "one_of_each.xlsx"  # rows held back, one to Manchester (no table)
    keys = deployment.root / "keys"
    boroughs = deployment.root / "rules" / "boroughs.toml"

    def check_warns() -> int:  # only a warning: Camden's key expires within 30 days
        (keys / "ldor@camden.example.asc").unlink()
        with gnupg_home(tmp_path / "camden") as home:
            (keys / "camden-soon.asc").write_text(export_public(home, make_key(home, "Camden", "ldor@camden.example", "20d")))
        code = cli.main([*config, "check"])
        assert "expires on" in capsys.readouterr().out
        return code

    def check_fails() -> int:
        boroughs.write_text(boroughs.read_text().replace("ldor@hackney.example", "nobody@hackney.example"))
        return cli.main([*config, "check"])

    def raising(error: BaseException):
        def scenario() -> int:
            monkeypatch.setattr(cli, "_status", lambda args: (_ for _ in ()).throw(error))
            return cli.main([*config, "status"])
        return scenario

    scenarios = {
        ("gateway check", 0): check_warns,
        ("gateway check", 1): check_fails,
        ("gateway validate FILE", 0): lambda: cli.main([*config, "validate", str(clean)]),
        ("gateway validate FILE", 1): lambda: cli.main([*config, "validate", str(held)]),
        ("gateway route FILE", 0): lambda: cli.main([*config, "route", str(clean)]),
        ("gateway route FILE", 1): lambda: cli.main([*config, "route", str(held)]),
        ("gateway run --once", 0): lambda: cli.main([*config, "run", "--once"]),
        ("gateway outbox --retry ID", 1): lambda: cli.main([*config, "outbox", "--retry", "no-such-id"]),
        ("any command", 2): lambda: cli.main([*config, "validate", str(tmp_path / "absent.xlsx")]),
        ("any command", 3): raising(ValueError("a fault")),
        ("any command", 130): raising(KeyboardInterrupt()),
    }
    stated = _exit_codes()
    assert stated == set(scenarios), "README's exit-code table and this test's scenarios differ"
    for (command, code), scenario in scenarios.items():
        assert scenario() == code, f"README says `{command}` exits {code} here"
        capsys.readouterr()
    assert "exits 1 if there is any. Warnings (a key expiring within 30 days" in " ".join(README.split())


def test_the_licence_pyproject_names_is_the_licence_file_shipped():
    import tomllib

    root = Path(__file__).resolve().parent.parent
    declared = tomllib.loads((root / "pyproject.toml").read_text())["project"]["license"]["text"]
    assert (root / "LICENSE").read_text().startswith(f"{declared} License\n")
