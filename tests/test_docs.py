"""Every command has help and is in the README; every config.toml key is documented."""

from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path

from gateway import config
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
