"""The composition root: builds the `Gateway` (config, rules, keyring, ledger, outbox, clock) once per process."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from . import config as config_module
from . import rules as rules_module
from .config import Config
from .delivery.outbox import Outbox
from .keys import Keyring
from .ledger import Ledger
from .reference.postcodes import Directory
from .rules import Rules
from .signin import Tokens

log = logging.getLogger(__name__)


def utc_now() -> datetime:
    """The real clock: an aware UTC datetime."""
    return datetime.now(UTC)


@dataclass(frozen=True)
class Gateway:
    """Everything one run needs, built once (`build`) and passed in."""

    config: Config
    rules: Rules
    keyring: Keyring
    ledger: Ledger
    outbox: Outbox
    directory: Directory
    tokens: Tokens = field(default_factory=Tokens)  # OAuth2 tokens in memory, for the mailbox and the relay
    clock: Callable[[], datetime] = utc_now  # "now" for every dated decision; tests pass their own


def build(path: Path) -> Gateway:
    """Config, rules, keyring, ledger, outbox and postcode directory for one process."""
    settings = config_module.load(path)
    directory = Directory(cache_root=settings.paths.database.parent / "cache")
    rules = rules_module.load(settings.paths.rules, rules_module.known_authorities(directory))
    keyring = Keyring(settings.gnupg.home, config_module.secret(settings.gnupg.passphrase_env), pins=rules.pins(),
                      passphrase_env=settings.gnupg.passphrase_env)
    for problem in keyring.import_folder(settings.paths.keys):
        log.warning("key file problem: %s", problem)
    return Gateway(settings, rules, keyring, Ledger(settings.paths.database), Outbox(settings.paths.outbox), directory)
