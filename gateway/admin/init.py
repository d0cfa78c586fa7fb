"""`gateway init`: a new installation (config.toml, rules/, keys/, the gateway's own key), never over an old one."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ..errors import InitError
from ..keys import AGENT_CONF, Keyring
from .scaffold import config_text

PASSPHRASE_ENV = "GATEWAY_GPG_PASSPHRASE"
KEY_NAME = "LDOR gateway"
KEY_LIFETIME = "2y"  # `gateway check` warns 30 days before; extending it keeps the fingerprint
PUBLIC_KEY = Path("keys-for-providers") / "ldor-gateway.asc"
_MADE_HERE = ("config.toml", "rules", "keys", "var", "outbox", "keys-for-providers")


@dataclass(frozen=True)
class Installed:
    root: Path
    address: str
    fingerprint: str
    expires: str
    passphrase: str | None  # shown once, when no file was named for it
    passphrase_file: Path | None
    protected: bool

    def text(self) -> str:
        """What the administrator reads after `gateway init`: what was made, where the passphrase is, what next."""
        root, config = self.root, self.root / "config.toml"
        lines = [
            f"A new installation in {root}:",
            "  config.toml          the mailbox, the relay and the administrator: check each value",
            "  rules/               boroughs.toml and providers.toml (no tables yet), routing.toml",
            "  keys/                empty: boroughs' recipients' public keys go here (gateway keys import)",
            f"  var/gnupg/           the gateway's own key {self.fingerprint}, <{self.address}>, expires {self.expires}",
            f"  {PUBLIC_KEY}   its public key, for providers",
            "",
        ]
        if not self.protected:
            lines += [
                "The gateway's key has NO passphrase (--no-passphrase): anyone who can read var/gnupg can decrypt "
                "every return sent to the gateway. Keep var/gnupg readable by the gateway's user alone (it is 0700) "
                "and out of backups others can read. Without --no-passphrase the key is locked by a passphrase kept "
                "only in the service's environment.", ""]
        elif self.passphrase_file is not None:
            lines += [
                f"The gateway's key has a passphrase, written only to {self.passphrase_file} (mode 0600) as "
                f"{PASSPHRASE_ENV}=...; config.toml names the variable: passphrase_env = \"{PASSPHRASE_ENV}\".",
                f"Give the service that file (systemd: EnvironmentFile={self.passphrase_file}), or in a shell: "
                f"set -a; . {self.passphrase_file}; set +a", ""]
        else:
            lines += [
                "The gateway's key has a passphrase, written nowhere. config.toml names its variable:",
                f"    passphrase_env = \"{PASSPHRASE_ENV}\"",
                "Put it in the service's environment (systemd: a root-only EnvironmentFile, chmod 600), and keep a "
                "copy somewhere safe: without it no return can be decrypted.",
                f"    export {PASSPHRASE_ENV}={self.passphrase}", ""]
        options = f"--config {config}"
        lines += [
            "Next steps:",
            f"  1. Edit {config}: [mailbox] host and port, [smtp] host and port, [admin] email; put the mailbox "
            "password in the variable GATEWAY_IMAP_PASSWORD (password_env).",
            f"  2. Add each borough to {root / 'rules' / 'boroughs.toml'}: one table, copied from the README "
            "(\"Adding a borough or a provider\").",
            f"  3. Import each recipient's public key: gateway {options} keys import FILE.asc",
            f"  4. Add each provider to {root / 'rules' / 'providers.toml'}: one table (its UKPRN, name, senders, host_la).",
            f"  5. Check: gateway {options} check",
            f"  6. Send providers {root / PUBLIC_KEY} (fingerprint {self.fingerprint}); the same as "
            f"gpg --homedir {root / 'var' / 'gnupg'} --armor --export {self.fingerprint}",
            f"  7. Start it: gateway {options} run",
        ]
        return "\n".join(lines)


def init_installation(root: Path, address: str, admin: str, imap_host: str, smtp_host: str,
                      protect: bool = True, passphrase_file: Path | None = None) -> Installed:
    """Write config.toml, rules/, keys/ and the gateway's key into `root`; refuse if an installation is there."""
    root = Path(root).absolute()
    there = [name for name in _MADE_HERE if (root / name).exists()]
    if there:
        raise InitError(f"{root} already holds an installation ({', '.join(there)}): gateway init never overwrites one; "
                        "choose an empty folder, or run `gateway check` on this one")
    if passphrase_file is not None and not protect:
        raise InitError("--passphrase-file and --no-passphrase contradict each other: choose one")
    if passphrase_file is not None and passphrase_file.exists():
        raise InitError(f"{passphrase_file} exists already: name a new file for the passphrase (it is never overwritten)")
    root.mkdir(parents=True, exist_ok=True)
    rules = root / "rules"
    rules.mkdir()
    skeleton = resources.files("gateway") / "skeleton"
    for name in ("boroughs.toml", "providers.toml", "routing.toml"):
        (rules / name).write_text(skeleton.joinpath(name).read_text())
    (root / "keys").mkdir()
    passphrase = secrets.token_urlsafe(24) if protect else None
    fingerprint, expires, public = _make_key(root / "var" / "gnupg", address, passphrase)
    (root / PUBLIC_KEY).parent.mkdir()
    (root / PUBLIC_KEY).write_text(public)
    domain = address.rpartition("@")[2]
    (root / "config.toml").write_text(config_text(
        f"ldor-gateway configuration, written by gateway init for {domain}.",
        mailbox=(imap_host, 993, "ssl", address, "GATEWAY_IMAP_PASSWORD"), smtp=(smtp_host, 587, "starttls"),
        sender=address, admin=admin, passphrase_env=PASSPHRASE_ENV if protect else ""))
    if passphrase_file is not None:
        descriptor = os.open(passphrase_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(f"{PASSPHRASE_ENV}={passphrase}\n")
    shown = passphrase if passphrase_file is None else None
    return Installed(root, address, fingerprint, expires, shown, passphrase_file, protect)


def _make_key(home: Path, address: str, passphrase: str | None) -> tuple[str, str, str]:
    """The gateway's own key in a new keyring: its fingerprint, its expiry day, its armoured public key."""
    keyring = Keyring(home)
    (home / "gpg-agent.conf").write_text(AGENT_CONF)
    try:
        fingerprint = keyring.generate(KEY_NAME, address, passphrase, expire=KEY_LIFETIME)
        key = keyring.own_key()
        return fingerprint, f"{key.expires_on:%Y-%m-%d}" if key.expires_on else "never", keyring.export_public(fingerprint)
    finally:
        keyring.stop_agent()
