"""Writing an installation's files (config.toml and rules/) for servers on this machine: the demo's and the tests'."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path


def write_installation(
    root: Path,
    *,
    imap: tuple[str, int, str, str],  # host, port, user, name of the password's environment variable
    smtp: tuple[str, int],
    sender: str,
    admin: str,
    boroughs: dict[str, tuple[str, str, str]],  # code: (name, recipient, format)
    providers: Iterable[tuple[str, str, str, str]],  # (ukprn, name, sender, host_la)
    timeout: float = 60,
    imap_security: str = "none",
    smtp_security: str = "none",
    ca_file: Path | None = None,
    deliveries: dict[str, str] | None = None,  # code: "daily" or "weekly", for boroughs that take a digest
) -> Path:
    """Write root/config.toml and root/rules/*.toml; return the config's path."""
    rules = root / "rules"
    rules.mkdir(parents=True, exist_ok=True)
    deliveries = deliveries or {}
    (rules / "boroughs.toml").write_text("\n".join(
        f'[{code}]\nname = "{name}"\nrecipients = ["{address}"]\nformat = "{fmt}"\n'
        + (f'delivery = "{deliveries[code]}"\n' if code in deliveries else "")
        for code, (name, address, fmt) in boroughs.items()
    ))
    (rules / "providers.toml").write_text("\n".join(
        f'[{ukprn}]\nname = "{name}"\nsenders = ["{address}"]\nhost_la = "{host_la}"\n'
        for ukprn, name, address, host_la in providers
    ))
    host, port, user, password_env = imap
    config = root / "config.toml"
    config.write_text(config_text(
        "Written for servers on this machine.", mailbox=(host, port, imap_security, user, password_env),
        smtp=(smtp[0], smtp[1], smtp_security), sender=sender, admin=admin, timeout=timeout, ca_file=ca_file))
    return config


def config_text(header: str, *, mailbox: tuple[str, int, str, str, str], smtp: tuple[str, int, str], sender: str,
                admin: str, timeout: float | None = None, ca_file: Path | None = None, passphrase_env: str = "") -> str:
    """config.toml as the shipped one is laid out. `mailbox`: host, port, security, user, name of the
    password's variable; `smtp`: host, port, security."""
    host, port, security, user, password_env = mailbox
    extra = (f"timeout = {timeout}\n" if timeout is not None else "") + (f'ca_file = "{ca_file}"\n' if ca_file else "")
    passphrase = (f'passphrase_env = "{passphrase_env}"   # the variable holding the key\'s passphrase\n' if passphrase_env
                  else '# passphrase_env = "GATEWAY_GPG_PASSPHRASE"\n')
    return f"""# {header}
# Paths are relative to this file. Secrets are never written here: each *_env key names the
# environment variable that holds the secret.

[mailbox]
host = "{host}"
port = {port}
security = "{security}"            # "ssl" | "starttls" | "none" (none only for servers on this machine)
user = "{user}"
password_env = "{password_env}"
folder = "INBOX"
processed_folder = "Processed"
quarantine_folder = "Quarantine"
{extra}
[smtp]
host = "{smtp[0]}"
port = {smtp[1]}
security = "{smtp[2]}"
from_address = "{sender}"
# user = "{sender}"
# password_env = "GATEWAY_SMTP_PASSWORD"
{extra}
[gnupg]
home = "var/gnupg"           # the gateway's own keyring, holding its secret key
{passphrase}
[paths]
rules = "rules"
keys = "keys"
outbox = "outbox"
database = "var/gateway.db"

[admin]
email = "{admin}"
"""
