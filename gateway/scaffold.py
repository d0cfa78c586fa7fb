"""Writing an installation's files (config.toml and rules/) for servers on this machine: the demo's and the tests'."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable


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
    trust = f'ca_file = "{ca_file}"\n' if ca_file else ""
    config = root / "config.toml"
    config.write_text(f"""# Written for servers on this machine.
[mailbox]
host = "{host}"
port = {port}
security = "{imap_security}"
user = "{user}"
password_env = "{password_env}"
timeout = {timeout}
{trust}
[smtp]
host = "{smtp[0]}"
port = {smtp[1]}
security = "{smtp_security}"
from_address = "{sender}"
timeout = {timeout}
{trust}
[gnupg]
home = "var/gnupg"

[paths]
rules = "rules"
keys = "keys"
outbox = "outbox"
database = "var/gateway.db"

[admin]
email = "{admin}"
""")
    return config
