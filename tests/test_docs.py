"""Every command has help and is in the README; every config.toml key is documented; the package layout
the README describes is the one the code writes."""

from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path

from gateway import config
from gateway.pack import HEADINGS, LAYOUT_VERSION
from gateway.cli import _parser

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
    assert tuple(listed) == HEADINGS, "README's package columns differ from gateway/pack.py HEADINGS"
    assert f"Layout: {LAYOUT_VERSION}" in section
    sample = [line for line in section.splitlines() if line.startswith("| Gateway Reference | Source Row |")]
    assert sample and tuple(c.strip() for c in sample[0].strip("|").split("|")) == HEADINGS
